"""OPAD: step-level sampling for multi-turn agents -- one training sample per turn, teacher-forced.

Source: the "step-level sampling" of the MAD-OPD code (arXiv 2605.01347; chiefovoavicii/MAD-OPD
@6c7a66a), read for semantics only, not copied.

Relative to vanilla OPD:
  1. a trajectory is split into one sample per student turn (context = the history up to it);
  2. the history is teacher-forced (``history=expert``, the default): the env is driven by its
     expert's actions and at each state the student samples only the current turn (the sub-episode
     ends there); ``history=student`` (the student's own trajectory) is kept as an option -- it is
     not an upstream mode but OPD with per-turn samples;
  3. the turns of one trajectory stay together: contiguous, and never split by ``max_samples``.

Provenance of each choice:
- teacher-forced per-turn states, the default: paper code ``mad_opd/_mad_opd_args.py:70``
  (``toolace_onpolicy_mode = 'teacher_forcing'``) and ``mad_opd/trainers/mad_opd_trainer.py:971-1001``
  (the student generates only the assistant turn of each dataset state);
- grouping a trajectory's turns in one batch: paper code ``data/toolace_dataset.py``
  (``ToolACEGroupedBatchSampler``);
- ``reduction=sample_mean``: paper code ``scripts/run_mad_opd.sh:49`` (one sample per device batch,
  gradient accumulation over 16) with ``mad_opd/trainers/mad_opd_trainer.py:1520`` (token mean per
  sample) -- the mean over samples of each sample's token mean;
- states replayed from the env's expert rather than read from a dataset of conversations: ours (the
  env has no such dataset). Episode ``e`` becomes ``max_turns`` sub-episodes, the ``j``-th replays
  ``j`` expert actions and lets the student write turn ``j`` (none when the expert has already
  finished: no sample). Each sub-episode replays the expert live, so with an env whose expert path
  varies between resets (TextWorldExpress Coin's gold paths depend on the engine's history; see
  ``tcod.py``) the states of one episode's turns come from different expert runs: ours;
- ``max_turns=8``, ``max_samples``: ours (the code's ``toolace_max_turns=10``,
  ``mad_opd/_mad_opd_args.py:71``, caps its *full* on-policy mode, not teacher forcing).

MAD-OPD (and MT-OPD) over these states: ``method=mad_opd method.history=expert``. The published
configuration (JSD 0.5, loss temperature 0.7, per-sample mean): ``method=opad_paper``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from madopd_distill.methods.base import Method, MethodConfig, MethodContext
from madopd_distill.rollout import Episode, RolloutCollector, RolloutPlan, Sample, Trajectory, to_samples


def grouped_batches(group_ids: Sequence[int], batch_size: int) -> list[list[int]]:
    """Pack sample indices into batches of at most ``batch_size`` without splitting a group.

    Groups keep their order and their members stay contiguous; a group larger than
    ``batch_size`` gets a batch of its own (the cap is exceeded rather than the group split).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(group_ids):
        groups.setdefault(g, []).append(i)
    batches: list[list[int]] = []
    for members in groups.values():
        if batches and len(batches[-1]) + len(members) <= batch_size:
            batches[-1].extend(members)
        else:
            batches.append(list(members))
    return batches


HISTORIES: tuple[str, ...] = ("expert", "student")


def expert_forced_collect(collector: RolloutCollector, episodes: Sequence[Episode], max_turns: int) -> list[Trajectory]:
    """Teacher-forced step-level rollouts: per episode, ``max_turns`` sub-episodes; the ``j``-th
    replays ``j`` expert actions, then the student writes turn ``j`` and the sub-episode ends.

    Each trajectory's ``meta`` carries ``opad_source`` (the episode's index) and ``opad_turn`` (j).
    Shared by OPAD and MAD-OPD's ``history=expert``.
    """
    sub, plans = [], []
    for i, ep in enumerate(episodes):
        for j in range(max_turns):
            sub.append(ep)
            # Positions past the expert's end give no student turn and hence no sample.
            plans.append(RolloutPlan(writer=lambda t, info, j=j: "expert" if t < j else "student",
                                     max_student_turns=1, max_env_steps=j + 1,
                                     meta={"opad_source": i, "opad_turn": j}))
    return collector.collect(sub, plans)


@dataclass
class OPADConfig(MethodConfig):
    """OPAD's knobs (plus :class:`MethodConfig`'s; samples are always per turn).

    Attributes:
        history: ``expert`` (teacher-forced expert history, the default; the env must offer
            ``info["expert_action"]``) or ``student`` (the student's own trajectory).
        max_turns: ``history=expert``: turn positions (sub-episodes) per episode.
        max_samples: at most this many samples per step, whole trajectories only (``None``: all).
    """

    sample_mode: str = "turn"
    reduction: str = "sample_mean"
    history: str = "expert"
    max_turns: int = 8
    max_samples: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sample_mode != "turn":
            raise ValueError("OPAD samples each turn: sample_mode must be 'turn'")
        if self.history not in HISTORIES:
            raise ValueError(f"history must be one of {HISTORIES}, got {self.history!r}")
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError("max_samples must be >= 1 or None")


class OPAD(Method):
    """Per-turn samples from the student's or the expert's history, grouped by trajectory."""

    name = "opad"
    Config = OPADConfig

    def __init__(self, cfg: OPADConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        self.needs_expert = cfg.history == "expert"  # instance override: the trainer reads it after construction
        self._last: dict[str, float] = {}

    def collect(self, collector: RolloutCollector, episodes: Sequence[Episode], step: int) -> list[Trajectory]:
        if self.cfg.history == "student":
            trajs = super().collect(collector, episodes, step)
            for i, t in enumerate(trajs):
                t.meta["opad_source"] = i
            return trajs
        return expert_forced_collect(collector, episodes, self.cfg.max_turns)

    def make_samples(self, trajectories: Sequence[Trajectory], step: int) -> list[Sample]:
        samples = to_samples(trajectories, "turn")
        source = [trajectories[s.traj_index].meta.get("opad_source", s.traj_index) for s in samples]
        order = sorted(range(len(samples)), key=lambda i: (source[i], samples[i].traj_index, samples[i].turn_indices))
        samples, source = [samples[i] for i in order], [source[i] for i in order]
        for s, g in zip(samples, source):
            s.meta["opad_group"] = g
        if self.cfg.max_samples is not None and len(samples) > self.cfg.max_samples:
            first = grouped_batches(source, self.cfg.max_samples)[0]
            samples = [samples[i] for i in first]
        self._last = {"opad/samples": float(len(samples)),
                      "opad/groups": float(len({s.meta["opad_group"] for s in samples}))}
        return samples

    def log_metrics(self, trajectories: Sequence[Trajectory], step: int) -> dict[str, float]:
        return dict(self._last)
