"""Guided-OPD: the teacher writes some turns of the student's rollouts, less and less over training.

Paper: "On-Policy Distillation with Curriculum Turn-level Guidance for Multi-turn Agents"
(Guided-OPD, arXiv 2606.15912). No public code; only the abstract is read.

Relative to vanilla OPD:
  1. each turn of a training rollout is written by the teacher with probability ``p(step)``;
  2. ``p`` follows a curriculum that decays to 0 (linear, cosine or exponential);
  3. teacher-written turns stay in the context but are masked out of the loss; evaluation is always
     the pure student (the trainer's eval never uses a plan).

Provenance of each choice:
- teacher-written turns during training, a curriculum that removes the guidance: paper text
  (abstract);
- an independent coin per turn (not per episode), coins seeded by (run seed, step, episode, turn):
  ours;
- the default schedule, linear from ``p_start=0.5`` to 0 at ``decay_steps`` (``None``: the run's
  total steps), and the cosine / exponential alternatives (``p_start * gamma**step``, 0 below
  ``floor``): ours;
- teacher turns masked from the loss: ours (OPD trains only on student-sampled tokens).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from madopd_distill.methods.base import Method, MethodConfig, MethodContext
from madopd_distill.rollout import Episode, RolloutCollector, RolloutPlan, Trajectory
from madopd_distill.schedules import Schedule, make_schedule

SCHEDULES = ("linear", "cosine", "exponential", "constant")


def teacher_writes(p: float, seed: str, turn: int) -> bool:
    """The coin of turn ``turn``: ``True`` with probability ``p`` (deterministic given ``seed``)."""
    return random.Random(f"{seed}/{turn}").random() < p


@dataclass
class GuidedConfig(MethodConfig):
    """Guided-OPD's knobs (plus :class:`MethodConfig`'s).

    Attributes:
        schedule: how ``p`` decays: ``linear``, ``cosine``, ``exponential`` or ``constant``.
        p_start: teacher-turn probability at step 0, in [0, 1].
        p_end: probability reached at ``decay_steps`` (linear/cosine), in [0, 1]; 0 in the paper.
        decay_steps: steps to reach ``p_end`` (``None``: the run's total steps).
        gamma: exponential decay factor per step, in (0, 1).
        floor: exponential: a probability below this is 0 (so guidance really ends).
    """

    schedule: str = "linear"
    p_start: float = 0.5
    p_end: float = 0.0
    decay_steps: int | None = None
    gamma: float = 0.9
    floor: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not (0.0 <= self.p_start <= 1.0 and 0.0 <= self.p_end <= 1.0):
            raise ValueError(f"p_start and p_end must be in [0, 1], got {self.p_start}, {self.p_end}")
        if self.decay_steps is not None and self.decay_steps < 1:
            raise ValueError(f"decay_steps must be >= 1 or None, got {self.decay_steps}")
        if not 0.0 < self.gamma < 1.0 or self.floor < 0:
            raise ValueError(f"gamma must be in (0, 1) and floor >= 0, got {self.gamma}, {self.floor}")

    def make(self, total_steps: int) -> Schedule:
        n = self.decay_steps or max(1, total_steps)
        if self.schedule == "constant":
            return make_schedule(self.p_start)
        if self.schedule == "exponential":
            return make_schedule({"kind": "exponential", "start": self.p_start, "gamma": self.gamma, "floor": self.floor})
        return make_schedule({"kind": self.schedule, "start": self.p_start, "end": self.p_end, "total_steps": n})


class GuidedOPD(Method):
    """Per-turn teacher guidance with a decaying probability; teacher turns masked."""

    name = "guided"
    Config = GuidedConfig
    needs_teacher_agents = True

    def __init__(self, cfg: GuidedConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        self.p = cfg.make(ctx.total_steps)
        self._episode = 0
        self._step = -1

    def rollout_plan(self, step: int, episode: Episode) -> RolloutPlan:
        if step != self._step:
            self._step, self._episode = step, 0
        p = min(1.0, max(0.0, float(self.p(step))))
        seed = f"{self.ctx.seed}/{step}/{self._episode}/{episode.task_id}"
        self._episode += 1
        return RolloutPlan(writer=lambda t, info: "teacher" if teacher_writes(p, seed, t) else "student",
                           max_env_steps=self.cfg.max_env_steps, meta={"guided_p": p})

    def collect(self, collector: RolloutCollector, episodes: Sequence[Episode], step: int) -> list[Trajectory]:
        if collector.teacher_agent is None:
            raise ValueError("Guided-OPD needs a teacher that writes turns (a local hf teacher)")
        return super().collect(collector, episodes, step)

    def log_metrics(self, trajectories: Sequence[Trajectory], step: int) -> dict[str, float]:
        turns = [t for tr in trajectories for t in tr.turns if t.role in ("student", "teacher")]
        teacher = sum(1 for t in turns if t.role == "teacher")
        return {"guided/p": float(self.p(step)), "guided/teacher_turn_frac": teacher / max(len(turns), 1)}
