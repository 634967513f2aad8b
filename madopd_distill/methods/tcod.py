"""TCOD: a temporal curriculum on trajectory depth for multi-turn on-policy distillation.

Paper: "TCOD" (arXiv 2604.24005, Tongyi Lab, COLM 2026); code kokolerk/TCOD@465eef4, a
Trinity-RFT fork, read for semantics only, not copied.

Relative to vanilla OPD:
  1. F2B: the student plays only the first ``W = 1 + step // k`` env steps of each episode;
     B2F: an expert prefix of ``c = max(0, L - 1 - step // k)`` actions is replayed (masked, no
     gradient) and the student continues from there (``L`` = the expert trajectory's length);
  2. the loss is TCOD's: sampled-token advantage ``kl_coef * (log p_T - log p_S)`` with a PPO
     surrogate (the defaults here -- trajectory samples, no clip -- are ours; the presets set the
     code's one row per turn and clip 0.2);
  3. the trainer logs ``kl_trajectory_mean`` (TCOD's ``kl/trajectory_mean``) to check its claim.

Provenance of each choice (code paths in kokolerk/TCOD@465eef4):
- F2B depth ``1 + step // k``: ``trinity/common/workflows/envs/TCOD/alfworld/TCOD_f2b_workflow.py:79-81``;
- B2F replay ``max(0, L - 1 - step // k)``: ``.../TCOD/alfworld/TCOD_b2f_workflow.py:86-94``;
- advantage ``kl_coef * (teacher - old)``, ``kl_coef=1``: ``trinity/algorithm/advantage_fn/
  on_policy_distill_advantage.py:35`` and ``TCOD_examples/alfworld/tcod_f2b.yaml:14``;
- PPO clip 0.2 (``ppo`` is the algorithm's policy loss): ``trinity/algorithm/algorithm.py:511`` and
  ``trinity/algorithm/policy_loss_fn/ppo_policy_loss.py:121`` (the dual-clip ``clip_ratio_c=3`` of
  line 122 is not reproduced);
- one row per turn: ``on_policy_distill_advantage.py:9-11,119-123``;
- reduction: F2B ``seq-mean-token-mean`` (``sample_mean``, ``TCOD_examples/alfworld/tcod_f2b.yaml:17``),
  B2F Trinity's default ``token-mean`` (``ppo_policy_loss.py:123``; ``tcod_b2f.yaml`` sets none);
- ``k``: 6 for F2B (``tcod_f2b.yaml:53``), 5 for B2F (``tcod_b2f.yaml:50``); the default ``eta=6``
  here is F2B's; ``method=tcod_f2b_paper`` / ``tcod_b2f_paper`` are the published configurations;
- the general form ``W(step) = min(k_start + floor(step / eta), k_max)``: ours (``k_start=1``,
  ``k_max=None`` is the code's linear schedule);
- ``L`` measured once per task by replaying the env's expert to the end (cached), the replay done
  live instead of from a stored action list: ours. Episodes whose replay already finishes the task
  produce no samples (as in the code).

Caveat: the live replay reproduces the measured trajectory only when the expert is deterministic.
TextWorldExpress Coin's generated gold path for a task depends on the games its engine played
before (train-0 gave 7 and 3 gold actions over three resets interleaved with other tasks;
Arithmetic and SimonSays were stable), so there ``c`` is relative to one sampled expert run and
the replay may win before the student's turn (no sample, as above).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from madopd_distill.methods.base import Method, MethodConfig, MethodContext
from madopd_distill.rollout import Episode, RolloutCollector, RolloutPlan, Trajectory
from madopd_distill.schedules import Step


class ExpertLengths:
    """``L`` per task: the number of expert actions that finish it, measured once by replay."""

    def __init__(self, max_steps: int = 200):
        self.max_steps = max_steps
        self.cache: dict[tuple[str, str], int] = {}

    def measure(self, collector: RolloutCollector, episodes: Sequence[Episode]) -> dict[tuple[str, str], int]:
        todo = sorted({(e.split, e.task_id) for e in episodes} - set(self.cache))
        if todo:
            probe = [Episode(task, i, split) for i, (split, task) in enumerate(todo)]
            plans = [RolloutPlan(writer=lambda t, info: "expert", max_env_steps=self.max_steps) for _ in probe]
            for (split, task), traj in zip(todo, collector.collect(probe, plans)):
                if traj.error is not None:
                    raise RuntimeError(f"expert replay of {task} failed: {traj.error}")
                if traj.student_turns:  # the expert left its path: the collector let the student write
                    raise RuntimeError(f"the env's expert has no action for every step of {task}; "
                                       "TCOD-B2F and teacher-forced OPAD need a complete expert trajectory")
                if traj.truncated:
                    raise RuntimeError(f"the expert did not finish {task} within {traj.num_steps} env steps "
                                       f"(capped by rollout.max_env_steps, the env or expert_max_steps={self.max_steps}); "
                                       "raise the cap so the expert trajectory's length L can be measured")
                self.cache[(split, task)] = traj.num_steps
        return {(e.split, e.task_id): self.cache[(e.split, e.task_id)] for e in episodes}


@dataclass
class TCODConfig(MethodConfig):
    """TCOD's knobs (plus :class:`MethodConfig`'s).

    Attributes:
        variant: ``f2b`` (front to back: cap the student's env steps) or ``b2f`` (back to front:
            replay an expert prefix, the student finishes).
        k_start: depth at step 0 (>= 1).
        eta: training steps per extra env step (the code's ``checkpoint_steps``, >= 1).
        k_max: the deepest curriculum depth (``None``: unbounded).
        student_max_turns: B2F: at most this many student turns after the replay (``None``: play on
            until the episode ends, as in the paper).
        expert_max_steps: cap on the expert replay that measures ``L``.
    """

    divergence: str = "sampled_token"
    reduction: str = "sample_mean"
    variant: str = "f2b"
    k_start: int = 1
    eta: int = 6
    k_max: int | None = None
    student_max_turns: int | None = None
    expert_max_steps: int = 200

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in ("f2b", "b2f"):
            raise ValueError(f"variant must be 'f2b' or 'b2f', got {self.variant!r}")
        if self.k_start < 1 or self.eta < 1:
            raise ValueError(f"k_start and eta must be >= 1, got {self.k_start}, {self.eta}")
        if self.k_max is not None and self.k_max < self.k_start:
            raise ValueError(f"k_max ({self.k_max}) must be >= k_start ({self.k_start})")
        if self.expert_max_steps < 1:
            raise ValueError("expert_max_steps must be >= 1")
        if self.student_max_turns is not None and self.student_max_turns < 1:
            raise ValueError("student_max_turns must be >= 1 or None")


class TCOD(Method):
    """Curriculum on how deep into each episode the student plays (F2B) or from where (B2F)."""

    name = "tcod"
    Config = TCODConfig

    def __init__(self, cfg: TCODConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        self.depth_schedule = Step(cfg.k_start, cfg.eta, cfg.k_max if cfg.k_max is not None else 10**9)
        self.needs_expert = cfg.variant == "b2f"  # instance override: the trainer reads it after construction
        self.lengths = ExpertLengths(cfg.expert_max_steps)
        self._last: dict[str, float] = {}

    def depth(self, step: int) -> int:
        """``W(step) = min(k_start + floor(step / eta), k_max)``."""
        return int(self.depth_schedule(step))

    def replay_length(self, step: int, expert_length: int) -> int:
        """B2F: expert actions replayed before the student takes over, ``max(0, L - W)``."""
        return max(0, expert_length - self.depth(step))

    def plan(self, step: int, expert_length: int | None = None) -> RolloutPlan:
        w = self.depth(step)
        if self.cfg.variant == "f2b":
            cap = w if self.cfg.max_env_steps is None else min(w, self.cfg.max_env_steps)
            return RolloutPlan(max_env_steps=cap, meta={"tcod_depth": w})
        if expert_length is None:
            raise ValueError("B2F plans need the task's expert length")
        c = self.replay_length(step, expert_length)
        return RolloutPlan(writer=lambda t, info, c=c: "expert" if t < c else "student",
                           max_env_steps=self.cfg.max_env_steps, max_student_turns=self.cfg.student_max_turns,
                           meta={"tcod_depth": w, "tcod_replay": c, "tcod_expert_length": expert_length})

    def rollout_plan(self, step: int, episode: Episode) -> RolloutPlan:
        if self.cfg.variant == "b2f":
            length = self.lengths.cache.get((episode.split, episode.task_id))
            if length is None:
                raise RuntimeError("B2F expert lengths are measured in collect(); call it first")
            return self.plan(step, length)
        return self.plan(step)

    def collect(self, collector: RolloutCollector, episodes: Sequence[Episode], step: int) -> list[Trajectory]:
        if self.cfg.variant == "b2f":
            self.lengths.measure(collector, episodes)
        trajs = collector.collect(episodes, [self.rollout_plan(step, ep) for ep in episodes])
        ok = [t for t in trajs if t.error is None]
        n = max(len(ok), 1)
        self._last = {"tcod/depth": float(self.depth(step)),
                      "tcod/student_steps": sum(sum(1 for x in t.turns if x.role == "student") for t in ok) / n}
        if self.cfg.variant == "b2f":
            self._last["tcod/replay_mean"] = sum(t.meta.get("tcod_replay", 0) for t in ok) / n
            self._last["tcod/replay_finished"] = float(sum(1 for t in ok if not t.student_turns))
        return trajs

    def log_metrics(self, trajectories: Sequence[Trajectory], step: int) -> dict[str, float]:
        return dict(self._last)
