"""MT-OPD: on-policy distillation from several teachers, their supervision averaged.

Paper: the multi-teacher OPD baseline of MAD-OPD (arXiv 2605.01347, Table: "MT-OPD"; code
chiefovoavicii/MAD-OPD ``scripts/run_mt_opd.sh`` / ``multi_teacher_jsd_loss``, read for semantics).

Relative to vanilla OPD:
  1. every teacher in the config scores the student's tokens (one ``TokenScores`` each);
  2. the loss is ``sum_k w_k D(student || teacher_k)`` with fixed weights (uniform by default);
  3. each teacher's divergence is averaged over the rows *it* scored (its own valid length).

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
    """

    teacher_weights: list[float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
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
