"""OmniOPD: logit-free OPD -- a black-box teacher's Monte-Carlo continuations judge the student's chunks.

Paper: OmniOPD (arXiv 2606.01476v1, Meta AI, 2026). No public code; only the abstract is known
(../shared/reference/anchors-research.md §A.5). Mechanics and their open details: ``omni_core.py``.

Relative to vanilla OPD:
  1. no teacher log-probs: at the student's high-entropy "forks", a teacher that only writes text
     continues the student's prefix M times, and the student's next chunk is scored by its mean
     embedding similarity to those continuations (all-MiniLM-L6-v2, offline), shrunk by a prior;
  2. the update is reward-weighted (REINFORCE on the chunk's tokens, advantage = reward minus the
     step's mean) instead of a divergence;
  3. a KL anchor to the *initial* student (k3 estimate on every trained token) controls collapse.

Open details, chosen here: fork positions are found from the student's surprisal ``-log p_S(y_t)``
recorded at sampling time -- an unbiased one-sample estimate of its entropy that needs no extra
forward pass; the teacher is asked, in words, to continue the partial reply (any chat teacher,
local or served, works: nothing but its text is used). The anchor is a teacher entry named
``anchor_teacher`` whose path is the student's initial weights (a frozen copy); the continuation
writer is the teacher agent named ``teacher`` (default: the first one that is not the anchor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from madopd_agents.base import SamplingParams
from madopd_distill.batch import StepBatch
from madopd_distill.methods.base import LossOutput, Method, MethodConfig, MethodContext, StudentOutput, reduce_rows
from madopd_distill.methods.debate import with_instruction
from madopd_distill.methods.omni_core import omni_row_loss, peak_entropy_forks, shared_embedder, shrunk_rewards
from madopd_distill.rollout import Sample, Trajectory, to_samples
from madopd_distill.teachers import TokenScores

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
        max_forks / fork_quantile / min_gap: fork selection per turn (see ``peak_entropy_forks``).
        prior_strength: pseudo-samples of the shrinkage prior (0: plain MC mean).
        prior_mean: the prior's mean similarity (``None``: the step's mean).
        kl_coef: weight of the KL anchor.
        baseline: subtract the step's mean reward (advantages sum to 0).
        continuation_temperature: the teacher's sampling temperature for continuations.
    """

    sample_mode: str = "turn"
    anchor_teacher: str = "anchor"
    teacher: str | None = None
    chunk_tokens: int = 8
    num_continuations: int = 4
    max_forks: int = 2
    fork_quantile: float = 0.8
    min_gap: int = 4
    prior_strength: float = 1.0
    prior_mean: float | None = None
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
        if self.prior_strength < 0 or self.kl_coef < 0 or self.continuation_temperature < 0:
            raise ValueError("prior_strength, kl_coef and continuation_temperature must be >= 0")


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
        self._last: dict[str, float] = {}

    def forks(self, logprobs: Sequence[float], mask: Sequence[bool]) -> list[int]:
        """Fork positions of a turn from its sampled tokens' surprisal (trained tokens only)."""
        surprisal = [-lp if m else -1.0 for lp, m in zip(logprobs, mask)]
        return peak_entropy_forks(surprisal, max_forks=self.cfg.max_forks, fork_quantile=self.cfg.fork_quantile,
                                  min_gap=self.cfg.min_gap, min_entropy=0.0)

    def make_samples(self, trajectories: Sequence[Trajectory], step: int) -> list[Sample]:
        samples = to_samples(trajectories, "turn")
        tok = self.ctx.tokenizer
        forks: list[tuple[int, int, int]] = []  # (sample, start, end) in turn-token positions
        prompts, chunks = [], []
        for si, s in enumerate(samples):
            turn = trajectories[s.traj_index].turns[s.turn_indices[0]]
            for j in self.forks(turn.logprobs or [0.0] * len(turn.token_ids), turn.loss_mask):
                end = min(j + self.cfg.chunk_tokens, len(turn.token_ids))
                prefix = tok.decode(turn.token_ids[:j], skip_special_tokens=True)
                forks.append((si, j, end))
                chunks.append(tok.decode(turn.token_ids[j:end], skip_special_tokens=True))
                prompts.append(with_instruction(turn.context or [], CONTINUE_INSTRUCTION.format(prefix=prefix)))
        rewards = torch.zeros(0)
        if forks:
            outs = self.writer.act(prompts, self.sampling)
            m = self.cfg.num_continuations
            conts = [[o.text for o in outs[i * m:(i + 1) * m]] for i in range(len(forks))]
            sims = shared_embedder().similarities(chunks, conts)
            rewards = shrunk_rewards(sims, self.cfg.prior_strength, self.cfg.prior_mean)
        adv = rewards - rewards.mean() if self.cfg.baseline and rewards.numel() > 1 else rewards
        for si, s in enumerate(samples):
            turn = trajectories[s.traj_index].turns[s.turn_indices[0]]
            per_token = [0.0] * len(turn.token_ids)
            for f, (fs, j, end) in enumerate(forks):
                if fs == si:
                    for t in range(j, end):
                        per_token[t] = float(adv[f])
            s.meta["row_advantage"] = [a for a, m in zip(per_token, turn.loss_mask) if m]
        self._last = {"omni/forks": float(len(forks)),
                      "omni/reward_mean": float(rewards.mean()) if rewards.numel() else 0.0,
                      "omni/reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0}
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
