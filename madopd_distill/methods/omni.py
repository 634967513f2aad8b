"""OmniOPD: logit-free OPD -- a black-box teacher's Monte-Carlo continuations judge the student's chunks.

Paper: "OmniOPD: Logit-Free On-Policy Distillation via Speculative Verification" (Zhou et al.,
arXiv 2606.01476v1, Meta AI, 2026). No public code; only the abstract is read. Mechanics and the
details the abstract leaves open: ``omni_core.py``.

Relative to vanilla OPD:
  1. no teacher log-probs: at the student's highest-entropy "forks", a teacher that only writes text
     continues the student's prefix M times, and the student's next chunk is rewarded by its expected
     semantic similarity to the teacher's outcome under a Dirichlet-Multinomial posterior;
  2. the update is reward-weighted (REINFORCE on the chunk's tokens, advantage = reward minus the
     step's mean) instead of a divergence;
  3. a KL anchor to the *initial* student (k3 estimate on every trained token) controls collapse.

Provenance of each choice:
- black-box (text-only) teacher, MC continuations, chunk-level semantic similarity, peak-entropy
  scheduling, Dirichlet-Multinomial prior, base-model KL anchor: paper text (abstract);
- entropy = the current student's full next-token entropy at each sampled position, from one extra
  no-grad forward pass (``scheduler=entropy``, the default); ``scheduler=surprisal`` uses the
  sampled token's ``-log p_S(y_t)`` recorded at sampling time (no extra pass): ours;
- fork selection (local peaks, quantile, gap, count), the clusters-plus-unseen Dirichlet-Multinomial
  and its reward, the embedder, the REINFORCE form, k3, ``chunk_tokens=8``, ``num_continuations=4``:
  ours (see ``omni_core.py``);
- the teacher is asked, in words, to continue the partial reply; any chat teacher works -- a local
  one, or an OpenAI-compatible endpoint that gives text only (``teachers=[{..., backend: openai,
  text_only: true}]``): ours;
- the anchor is a teacher entry named ``anchor_teacher`` whose path is the student's initial
  weights (a frozen copy); the continuation writer is the teacher agent named ``teacher`` (default:
  the first one that is not the anchor): ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from madopd_agents.base import SamplingParams
from madopd_distill.batch import StepBatch
from madopd_distill.methods.base import LossOutput, Method, MethodConfig, MethodContext, StudentOutput, reduce_rows
from madopd_distill.methods.debate import with_instruction
from madopd_distill.methods.omni_core import dm_chunk_reward, omni_row_loss, peak_entropy_forks, shared_embedder
from madopd_distill.rollout import Sample, Trajectory, to_samples
from madopd_distill.teachers import HFTeacher, ScoreRequest, TokenScores

CONTINUE_INSTRUCTION = ("Here is the beginning of a reply to the conversation above:\n\n{prefix}\n\n"
                        "Continue that reply from exactly where it stops. Write only the continuation.")


@dataclass
class OmniConfig(MethodConfig):
    """OmniOPD's knobs (plus :class:`MethodConfig`'s; divergence settings are unused).

    Attributes:
        anchor_teacher: the teacher entry holding the student's initial weights (KL anchor).
        teacher: the teacher agent that writes continuations (``None``: first non-anchor agent).
        chunk_tokens: length C of the student chunk after a fork (and of each continuation).
        num_continuations: Monte-Carlo continuations M per fork.
        scheduler: what locates forks: ``entropy`` (the student's next-token entropy; needs the
            student model in the method context) or ``surprisal`` (``-log p_S`` of the sampled token).
        max_forks / fork_quantile / min_gap: fork selection per turn (see ``peak_entropy_forks``).
        prior_alpha: symmetric Dirichlet concentration per semantic outcome (0: plain MC mean when
            every continuation is its own outcome).
        cluster_threshold: cosine at which a continuation joins an outcome cluster (> 1: never).
        unseen_similarity: the similarity credited to the prior's "unseen" outcome.
        kl_coef: weight of the KL anchor.
        baseline: subtract the step's mean reward (advantages sum to 0).
        continuation_temperature: the teacher's sampling temperature for continuations.
    """

    sample_mode: str = "turn"
    anchor_teacher: str = "anchor"
    teacher: str | None = None
    chunk_tokens: int = 8
    num_continuations: int = 4
    scheduler: str = "entropy"
    max_forks: int = 2
    fork_quantile: float = 0.8
    min_gap: int = 4
    prior_alpha: float = 1.0
    cluster_threshold: float = 0.9
    unseen_similarity: float = 0.0
    kl_coef: float = 0.1
    baseline: bool = True
    continuation_temperature: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sample_mode != "turn":
            raise ValueError("OmniOPD scores chunks of single turns: sample_mode must be 'turn'")
        if min(self.chunk_tokens, self.num_continuations, self.max_forks, self.min_gap) < 1:
            raise ValueError("chunk_tokens, num_continuations, max_forks and min_gap must be >= 1")
        if not 0.0 <= self.fork_quantile <= 1.0:
            raise ValueError(f"fork_quantile must be in [0, 1], got {self.fork_quantile}")
        if self.scheduler not in ("entropy", "surprisal"):
            raise ValueError(f"scheduler must be 'entropy' or 'surprisal', got {self.scheduler!r}")
        if self.prior_alpha < 0 or self.kl_coef < 0 or self.continuation_temperature < 0:
            raise ValueError("prior_alpha, kl_coef and continuation_temperature must be >= 0")


class OmniOPD(Method):
    """Chunk-level similarity rewards from a black-box teacher + a KL anchor to the initial student."""

    name = "omni"
    Config = OmniConfig
    needs_teacher_agents = True

    def __init__(self, cfg: OmniConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        if cfg.anchor_teacher not in ctx.teachers:
            raise ValueError(f"OmniOPD needs a teacher entry {cfg.anchor_teacher!r} holding the student's initial "
                             f"weights (its KL anchor); teachers: {list(ctx.teachers)}")
        writers = {n: a for n, a in ctx.teacher_agents.items() if n != cfg.anchor_teacher}
        if cfg.teacher is not None:
            if cfg.teacher not in ctx.teacher_agents:
                raise ValueError(f"no teacher agent {cfg.teacher!r}; agents: {list(ctx.teacher_agents)}")
            self.writer = ctx.teacher_agents[cfg.teacher]
        elif writers:
            self.writer = next(iter(writers.values()))
        else:
            raise ValueError("OmniOPD needs a teacher that writes text besides the anchor")
        self.sampling = SamplingParams(temperature=cfg.continuation_temperature, max_new_tokens=cfg.chunk_tokens,
                                       n=cfg.num_continuations, seed=ctx.seed)
        if cfg.scheduler == "entropy" and ctx.student is None:
            raise ValueError("OmniOPD's entropy scheduler needs the student model (MethodContext.student); "
                             "use method.scheduler=surprisal without it")
        self._last: dict[str, float] = {}

    def forks(self, uncertainty: Sequence[float], mask: Sequence[bool]) -> list[int]:
        """Fork positions of a turn from a per-token uncertainty (entropy or surprisal; trained tokens only)."""
        values = [u if m else -1.0 for u, m in zip(uncertainty, mask)]
        return peak_entropy_forks(values, max_forks=self.cfg.max_forks, fork_quantile=self.cfg.fork_quantile,
                                  min_gap=self.cfg.min_gap, min_entropy=0.0)

    def turn_uncertainty(self, samples: Sequence[Sample], trajectories: Sequence[Trajectory]) -> list[list[float]]:
        """Per sample, the uncertainty of each of its turn's tokens (0 where not trained)."""
        turns = [trajectories[s.traj_index].turns[s.turn_indices[0]] for s in samples]
        if self.cfg.scheduler == "surprisal":
            return [[-lp for lp in (t.logprobs or [0.0] * len(t.token_ids))] for t in turns]
        ent = student_entropies(self.ctx.student, self.ctx.tokenizer, samples, self.cfg.temperature)
        out = []
        for t, e in zip(turns, ent):
            it = iter(e.tolist())
            out.append([next(it) if m else 0.0 for m in t.loss_mask])
        return out

    def make_samples(self, trajectories: Sequence[Trajectory], step: int) -> list[Sample]:
        samples = to_samples(trajectories, "turn")
        tok = self.ctx.tokenizer
        forks: list[tuple[int, int, int]] = []  # (sample, start, end) in turn-token positions
        prompts, chunks = [], []
        uncertainty = self.turn_uncertainty(samples, trajectories) if samples else []
        for si, s in enumerate(samples):
            turn = trajectories[s.traj_index].turns[s.turn_indices[0]]
            for j in self.forks(uncertainty[si], turn.loss_mask):
                end = min(j + self.cfg.chunk_tokens, len(turn.token_ids))
                prefix = tok.decode(turn.token_ids[:j], skip_special_tokens=True)
                forks.append((si, j, end))
                chunks.append(tok.decode(turn.token_ids[j:end], skip_special_tokens=True))
                prompts.append(with_instruction(turn.context or [], CONTINUE_INSTRUCTION.format(prefix=prefix)))
        rewards, stds, clusters, outs = torch.zeros(0), [], [], []
        if forks:
            outs = self.writer.act(prompts, self.sampling)
            m = self.cfg.num_continuations
            conts = [[o.text for o in outs[i * m:(i + 1) * m]] for i in range(len(forks))]
            chunk_emb, cont_emb = shared_embedder().embed_groups(chunks, conts)
            scored = [dm_chunk_reward(c, e, self.cfg.prior_alpha, self.cfg.cluster_threshold,
                                      self.cfg.unseen_similarity) for c, e in zip(chunk_emb, cont_emb)]
            rewards = torch.tensor([r for r, _, _ in scored], dtype=torch.float32)
            stds, clusters = [sd for _, sd, _ in scored], [k for _, _, k in scored]
        adv = rewards - rewards.mean() if self.cfg.baseline and rewards.numel() > 1 else rewards
        for si, s in enumerate(samples):
            turn = trajectories[s.traj_index].turns[s.turn_indices[0]]
            per_token = [0.0] * len(turn.token_ids)
            for f, (fs, j, end) in enumerate(forks):
                if fs == si:
                    for t in range(j, end):
                        per_token[t] = float(adv[f])
            s.meta["row_advantage"] = [a for a, m in zip(per_token, turn.loss_mask) if m]
        self._last = {"omni/forks": float(len(forks)), "omni/continuations": float(len(outs)),
                      "omni/continuation_chars": sum(len(o.text) for o in outs) / max(len(outs), 1),
                      "omni/reward_mean": float(rewards.mean()) if rewards.numel() else 0.0,
                      "omni/reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
                      "omni/posterior_std": sum(stds) / len(stds) if stds else 0.0,
                      "omni/outcomes": sum(clusters) / len(clusters) if clusters else 0.0}
        return samples

    def score(self, batch: StepBatch, step: int) -> list[TokenScores]:
        # Only the anchor (initial student) is scored; the black-box teacher gives no log-probs.
        return [self.ctx.teachers[self.cfg.anchor_teacher].score(batch.teacher_requests(), top_k=1)]

    def loss(self, student: StudentOutput, scores: Sequence[TokenScores], weights: torch.Tensor,
             batch: StepBatch, step: int) -> LossOutput:
        logp = student.token_logprobs
        ref = scores[0].token_logprobs.to(logp.device, logp.dtype).detach()
        adv = torch.tensor([a for s in batch.samples for a in s.meta["row_advantage"]], dtype=logp.dtype,
                           device=logp.device)
        per_row, kl = omni_row_loss(logp, ref, adv, self.cfg.kl_coef)
        metrics = {"omni/kl_anchor": float((kl * batch.reduce_weight.to(kl.device)).sum())}
        return LossOutput(reduce_rows(per_row, weights, batch), (logp - ref).detach(), metrics)

    def log_metrics(self, trajectories: Sequence[Trajectory], step: int) -> dict[str, Any]:
        return dict(self._last)


@torch.no_grad()
def student_entropies(model: Any, tokenizer: Any, samples: Sequence[Sample], temperature: float = 1.0,
                      batch_size: int = 8) -> list[torch.Tensor]:
    """Per sample, ``[n_trained]`` entropies (nats) of the student's next-token distribution at its
    trained positions, from one no-grad forward pass (the model's train/eval mode is restored)."""
    was_training = model.training
    scorer = HFTeacher(model, tokenizer, name="student-entropy", batch_size=batch_size)  # puts it in eval mode
    try:
        out = []
        for i in range(0, len(samples), batch_size):
            chunk = samples[i:i + batch_size]
            reqs = [ScoreRequest(s.input_ids, [t for t, m in enumerate(s.loss_mask) if m]) for s in chunk]
            lp = torch.log_softmax(scorer.score(reqs).logits.float() / temperature, -1)
            ent = -(lp.exp() * lp).sum(-1)
            j = 0
            for r in reqs:
                out.append(ent[j:j + len(r.positions)])
                j += len(r.positions)
        return out
    finally:
        model.train(was_training)
