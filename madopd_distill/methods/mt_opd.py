"""MT-OPD: on-policy distillation from several teachers, their supervision averaged.

Paper: the multi-teacher OPD baseline of MAD-OPD (arXiv 2605.01347, "MT-OPD" rows); code
chiefovoavicii/MAD-OPD@6c7a66a, read for semantics only, not copied.

Relative to vanilla OPD:
  1. every teacher in the config scores the student's tokens (one ``TokenScores`` each);
  2. the loss is ``sum_k w_k D(student || teacher_k)`` with fixed weights (uniform by default);
  3. each teacher's divergence is averaged over the rows *it* scored (its own valid length).

Provenance of each choice:
- fixed weights, uniform by default: paper code ``scripts/run_mt_opd.sh:48`` (``--teacher_weights
  0.5 0.5``) and ``mad_opd/trainers/mad_opd_trainer.py:1211``;
- each teacher averaged over its own valid rows: paper code ``mad_opd/trainers/mad_opd_core.py:381-386``
  (per-teacher alignment against the "shortest-teacher-wins" collapse);
- the loop filter (drop a student reply whose word 3-gram repetition ratio exceeds 0.6 before the
  teachers see it; on by default): paper code ``mad_opd/trainers/mad_opd_trainer.py:1072,1172,1270-1330``;
- ``history=expert`` (OPAD's teacher-forced per-turn states): paper code
  ``mad_opd/_mad_opd_args.py:70``; the default ``student`` is ours;
- K >= 2 teachers (the code has exactly two), ``token_mean``, trajectory samples: ours (defaults);
  the published configuration is ``method=mt_opd_paper``.

The weighting helpers here (:func:`teacher_row_coefficients`, :func:`mix_teachers`) are shared by
MAD-OPD (per-sample debate weights) and token routing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from madopd_distill.batch import StepBatch
from madopd_distill.methods.base import (LossOutput, Method, MethodConfig, StudentOutput, reduce_rows,
                                         row_divergence, sampled_kl)
from madopd_distill.methods.opad import HISTORIES, expert_forced_collect
from madopd_distill.rollout import Episode, RolloutCollector, Sample, Trajectory, to_samples
from madopd_distill.teachers import TokenScores


def teacher_row_coefficients(row_sample: torch.Tensor, valid: torch.Tensor, sample_weights: torch.Tensor) -> torch.Tensor:
    """``[K, N]`` coefficient of teacher ``k``'s divergence on row ``n``.

    Sample ``i`` (rows ``row_sample == i``) gets ``sum_k w'_ik * mean_{rows valid for k} d_k``, where
    ``w'`` renormalises ``sample_weights[i]`` over the teachers valid on at least one of its rows.
    Written per row: ``w'_ik * N_i / N_ik`` on teacher ``k``'s valid rows, 0 elsewhere; multiplied by
    the step's reduction weight this keeps every sample's scale while each teacher is averaged
    over its *own* valid rows -- a teacher that scored fewer rows does not cut the other teachers'
    supervision short (the "shortest-teacher-wins" length collapse the MAD-OPD code guards against).

    Args:
        row_sample: ``[N]`` long, the sample index of each row.
        valid: ``[K, N]`` bool, teacher ``k`` scored row ``n``.
        sample_weights: ``[S, K]`` non-negative teacher weights per sample.
    """
    valid = valid.bool()
    k, n = valid.shape
    s = sample_weights.shape[0]
    if sample_weights.shape[1] != k:
        raise ValueError(f"{sample_weights.shape[1]} weights per sample for {k} teachers")
    if (sample_weights < 0).any():
        raise ValueError("teacher weights must be >= 0")
    onehot = torch.zeros(s, n, dtype=torch.float32)
    onehot[row_sample, torch.arange(n)] = 1.0
    rows_per_sample = onehot.sum(1)  # [S]
    valid_rows = valid.float() @ onehot.T  # [K, S]: N_ik
    w = sample_weights.float().T * (valid_rows > 0)  # [K, S]
    total = w.sum(0, keepdim=True)
    w = torch.where(total > 0, w / total.clamp(min=1e-12), torch.zeros_like(w))
    per_sample = torch.where(valid_rows > 0, w * rows_per_sample / valid_rows.clamp(min=1), torch.zeros_like(w))
    return per_sample[:, row_sample] * valid.float()


def repetition_ratio(text: str, ngram: int = 3) -> float:
    """``1 - unique / total`` word ``ngram``s of ``text`` (lower-cased, split on whitespace); 0 when
    it has fewer than ``ngram`` words. The looping-reply statistic of the MAD-OPD code
    (``mad_opd/trainers/mad_opd_trainer.py:1270-1330``, ``_filter_repetitive_responses``)."""
    words = (text or "").lower().split()
    grams = list(zip(*[words[j:] for j in range(ngram)]))
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def drop_looping(samples: Sequence[Sample], trajectories: Sequence[Trajectory], ngram: int,
                 max_ratio: float) -> list[Sample]:
    """The samples whose student text (the sample's student turns, joined) repeats at most
    ``max_ratio`` of its word n-grams; the others are dropped before any teacher sees them."""
    kept = []
    for s in samples:
        turns = trajectories[s.traj_index].turns
        text = "\n".join(turns[i].text for i in s.turn_indices if turns[i].role == "student")
        if repetition_ratio(text, ngram) <= max_ratio:
            kept.append(s)
    return kept


def mix_teachers(per_teacher: Sequence[torch.Tensor], coefficients: torch.Tensor) -> torch.Tensor:
    """``[N]`` = ``sum_k coefficients[k] * per_teacher[k]`` (rows a teacher did not score are ignored,
    even if its loss there is NaN)."""
    out = torch.zeros_like(per_teacher[0])
    for k, d in enumerate(per_teacher):
        c = coefficients[k].to(d.dtype)
        out = out + torch.where(c > 0, c * torch.nan_to_num(d), torch.zeros_like(d))
    return out


@dataclass
class MTOPDConfig(MethodConfig):
    """MT-OPD's knobs (plus the shared ones of :class:`MethodConfig`).

    Attributes:
        teacher_weights: one non-negative weight per teacher, in config order (renormalised);
            ``None``: uniform.
        loop_filter: drop a sample whose student reply loops (word n-gram repetition ratio above
            ``loop_max_ratio``) before the teachers score it, as the MAD-OPD code does for MT-OPD and
            MAD-OPD alike.
        loop_ngram: n of the word n-grams (the code: 3).
        loop_max_ratio: the largest repetition ratio kept, in [0, 1] (the code: 0.6).
        history: ``student`` (the student's own episodes) or ``expert`` (OPAD's teacher-forced
            per-turn states, see ``opad.py``: the env's expert plays, the student writes one turn per
            sub-episode; the env must offer ``info["expert_action"]``).
        max_turns: ``history=expert``: turn positions (sub-episodes) per episode.
    """

    teacher_weights: list[float] | None = None
    loop_filter: bool = True
    loop_ngram: int = 3
    loop_max_ratio: float = 0.6
    history: str = "student"
    max_turns: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loop_ngram < 1 or not 0.0 <= self.loop_max_ratio <= 1.0:
            raise ValueError(f"loop_ngram must be >= 1 and loop_max_ratio in [0, 1], got {self.loop_ngram}, "
                             f"{self.loop_max_ratio}")
        if self.history not in HISTORIES:
            raise ValueError(f"history must be one of {HISTORIES}, got {self.history!r}")
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.teacher_weights is not None:
            self.teacher_weights = [float(w) for w in self.teacher_weights]
            if not self.teacher_weights or any(w < 0 for w in self.teacher_weights) or sum(self.teacher_weights) <= 0:
                raise ValueError(f"teacher_weights must be non-negative with a positive sum, got {self.teacher_weights}")


class MTOPD(Method):
    """Several teachers, fixed weights, each teacher averaged over its own scored rows."""

    name = "mt_opd"
    Config = MTOPDConfig

    def __init__(self, cfg: MTOPDConfig, ctx):
        super().__init__(cfg, ctx)
        k = len(ctx.teachers)
        if cfg.teacher_weights is not None and len(cfg.teacher_weights) != k:
            raise ValueError(f"teacher_weights has {len(cfg.teacher_weights)} entries for {k} teachers "
                             f"({', '.join(ctx.teachers)})")
        w = torch.tensor(cfg.teacher_weights if cfg.teacher_weights is not None else [1.0] * k)
        self.weights = w / w.sum()
        self.kind, self.beta = cfg.divergence, cfg.beta  # MAD-OPD resolves these per env family
        self._loops: dict[str, float] = {}
        self.needs_expert = cfg.history == "expert"  # instance override: the trainer reads it after construction

    def collect(self, collector: RolloutCollector, episodes: Sequence[Episode], step: int) -> list[Trajectory]:
        """The student's own episodes, or OPAD's teacher-forced per-turn states (``history=expert``)."""
        if self.cfg.history == "expert":
            return expert_forced_collect(collector, episodes, self.cfg.max_turns)
        return super().collect(collector, episodes, step)

    def drop_loops(self, samples: list[Sample], trajectories: Sequence[Trajectory]) -> list[Sample]:
        """Apply the loop filter (when on); logs ``loop/dropped``."""
        if not self.cfg.loop_filter:
            return samples
        kept = drop_looping(samples, trajectories, self.cfg.loop_ngram, self.cfg.loop_max_ratio)
        self._loops = {"loop/dropped": float(len(samples) - len(kept)),
                       "loop/dropped_frac": (len(samples) - len(kept)) / max(len(samples), 1)}
        return kept

    def make_samples(self, trajectories: Sequence[Trajectory], step: int) -> list[Sample]:
        return self.drop_loops(to_samples(trajectories, self.cfg.sample_mode), trajectories)

    def log_metrics(self, trajectories: Sequence[Trajectory], step: int) -> dict[str, float]:
        return dict(self._loops)

    def score(self, batch: StepBatch, step: int) -> list[TokenScores]:
        requests = batch.teacher_requests()
        return [t.score(requests, top_k=self.cfg.top_k) for t in self.ctx.teachers.values()]

    def sample_weights(self, batch: StepBatch) -> torch.Tensor:
        """``[S, K]`` teacher weights per sample (fixed here; MAD-OPD's come from the debate)."""
        return self.weights.expand(len(batch.samples), -1)

    def teacher_valid(self, batch: StepBatch, scores: Sequence[TokenScores]) -> torch.Tensor:
        """``[K, N]`` which rows each teacher scored: finite token log-prob."""
        return torch.stack([torch.isfinite(s.token_logprobs) for s in scores])

    def loss(self, student: StudentOutput, scores: Sequence[TokenScores], weights: torch.Tensor,
             batch: StepBatch, step: int) -> LossOutput:
        per_teacher = [row_divergence(student, s, batch, self.cfg, kind=self.kind, beta=self.beta) for s in scores]
        coef = teacher_row_coefficients(batch.rows, self.teacher_valid(batch, scores), self.sample_weights(batch))
        mixed = mix_teachers(per_teacher, coef)
        metrics = {f"teacher/{name}/div": float((d.detach() * batch.reduce_weight).sum())
                   for name, d in zip(self.ctx.teachers, per_teacher)}
        return LossOutput(reduce_rows(mixed, weights, batch), sampled_kl(student, scores[0]), metrics)
