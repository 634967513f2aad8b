"""GRPO: the RL baseline a user would pick instead of distillation -- no teacher, the env's reward only.

Paper: "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models"
(Shao et al., arXiv 2402.03300), Group Relative Policy Optimization; for multi-turn agents as in
verl-agent (arXiv 2505.10978, its GRPO baseline): a group is ``rollout.group_size`` episodes of the
same task and seed, and every student token of an episode gets the episode's advantage.

Relative to vanilla OPD: no teacher is scored; the per-token signal is the group-normalised episode
return ``A_i = (R_i - mean_group R) / (std_group R + eps)`` in the policy-gradient surrogate the
sampled-token OPD loss already uses (importance ratio to the sampler, PPO clip), plus an optional
KL to the initial student.

Provenance of each choice:
- group-normalised outcome advantage, same advantage on every token of the response: paper text
  (2402.03300 section 4.1.2, "outcome supervision");
- ``clip_ratio`` 0.2: PPO's and verl's default (``actor.clip_ratio``);
- KL to the frozen initial student with the ``k3`` estimator ``exp(r) - r - 1``, ``r = log p_ref - log p_S``:
  paper text (2402.03300 eq. 4), verl's ``low_var_kl``; off by default (verl-agent's ALFWorld example
  runs ``low_var_kl`` 0.01: set ``ref_kl_coef``);
- ``reward = return`` (the sum of the env's step rewards): ours; ``won`` and ``score`` are the other choices;
- a group of one gets advantage 0 (see :mod:`madopd_distill.methods.rl_core`): ours.

Logged: ``kl_token_mean`` is KL to the *initial student* here (0 without a reference): RL has no
teacher; the study's ``ref/kl_*`` still measure the distance to the reference teacher.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar, Literal, Sequence

import torch

from madopd_distill.batch import StepBatch
from madopd_distill.methods.base import (LossOutput, Method, MethodConfig, MethodContext, StudentOutput,
                                         policy_gradient_rows, reduce_rows)
from madopd_distill.methods.rl_core import group_normalise
from madopd_distill.rollout import Sample, Trajectory, to_samples
from madopd_distill.teachers import TokenScores

REWARDS = ("return", "won", "score")


@dataclass
class GRPOConfig(MethodConfig):
    """GRPO's knobs; the divergence fields of :class:`MethodConfig` are unused (no teacher).

    Attributes:
        reward: the episode's scalar: ``return`` (sum of step rewards), ``won`` (1/0) or ``score``
            (the env's final normalised score).
        normalise_std: divide by the group's standard deviation (GRPO); ``False``: subtract the mean only.
        ref_kl_coef: weight of the k3 KL to the frozen initial student (0: none, no reference copy kept).
    """

    clip_ratio: float | None = 0.2
    reward: Literal["return", "won", "score"] = "return"
    normalise_std: bool = True
    ref_kl_coef: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        if self.ref_kl_coef < 0:
            raise ValueError(f"ref_kl_coef must be >= 0, got {self.ref_kl_coef}")


def episode_reward(traj: Trajectory, kind: str) -> float:
    """The episode's scalar reward of kind ``return`` | ``won`` | ``score``."""
    if kind == "won":
        return float(traj.won)
    return float(traj.score) if kind == "score" else float(sum(traj.rewards))


class GRPO(Method):
    name = "grpo"
    Config = GRPOConfig
    needs_teacher = False
    min_group_size = 2
    per_turn_samples: ClassVar[bool] = False  # True: one sample per turn, whatever sample_mode says

    def __init__(self, cfg: GRPOConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        self.reference = None
        if cfg.ref_kl_coef > 0:
            if ctx.student is None:
                raise ValueError(f"{self.name}: ref_kl_coef > 0 needs the initial student (MethodContext.student)")
            self.reference = copy.deepcopy(ctx.student).eval().requires_grad_(False)

    def advantages(self, trajectories: Sequence[Trajectory], samples: Sequence[Sample]) -> list[float]:
        """One advantage per sample: its episode's group-normalised reward."""
        ok = [k for k, t in enumerate(trajectories) if t.error is None]
        adv = group_normalise([episode_reward(trajectories[k], self.cfg.reward) for k in ok],
                              [trajectories[k].group_id for k in ok], self.cfg.normalise_std)
        by_traj = dict(zip(ok, adv))
        return [by_traj[s.traj_index] for s in samples]

    def make_samples(self, trajectories: Sequence[Trajectory], step: int) -> list[Sample]:
        samples = to_samples(trajectories, "turn" if self.per_turn_samples else self.cfg.sample_mode)
        for s, a in zip(samples, self.advantages(trajectories, samples)):
            s.meta["advantage"] = a
        return samples

    def score(self, batch: StepBatch, step: int) -> list[TokenScores]:
        return []  # no teacher: the env's reward is the only signal

    def rl_rows(self, student: StudentOutput, batch: StepBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N]`` the policy-gradient loss of each row (+ the KL-to-reference penalty) and ``[N]`` the
        logged log-ratio to the initial student (zeros without a reference)."""
        adv = torch.tensor([s.meta["advantage"] for s in batch.samples], dtype=student.token_logprobs.dtype,
                           device=student.token_logprobs.device)[batch.rows]
        per_row = policy_gradient_rows(student, adv, batch, self.cfg.clip_ratio)
        if self.reference is None:
            return per_row, torch.zeros_like(per_row).detach()
        from madopd_distill.trainer import student_forward

        with torch.no_grad():
            ref = student_forward(self.reference, batch, self.cfg.temperature).token_logprobs
        log_ratio = ref - student.token_logprobs
        per_row = per_row + self.cfg.ref_kl_coef * (torch.exp(log_ratio) - log_ratio - 1)
        return per_row, -log_ratio.detach()

    def loss(self, student: StudentOutput, scores: Sequence[TokenScores], weights: torch.Tensor,
             batch: StepBatch, step: int) -> LossOutput:
        per_row, kl = self.rl_rows(student, batch)
        return LossOutput(reduce_rows(per_row, weights, batch), kl)

    def log_metrics(self, trajectories: Sequence[Trajectory], step: int) -> dict[str, float]:
        """``rl/flat_groups``: the share of groups whose episodes all got the same reward (no signal)."""
        groups: dict[int, set[float]] = {}
        for t in trajectories:
            if t.error is None:
                groups.setdefault(t.group_id, set()).add(episode_reward(t, self.cfg.reward))
        flat = sum(len(v) == 1 for v in groups.values())
        return {"rl/flat_groups": flat / len(groups)} if groups else {}
