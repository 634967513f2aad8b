"""Samples -> padded tensors and the packed rows the loss is computed on.

The loss lives on *rows*: one row per trained (student-sampled) token, packed over the step's
samples in order. Student logits, teacher scores, per-token weights and divergences are all
``[N]`` or ``[N, V]`` over the same rows, so nothing is computed for prompt or observation tokens.

**Reduction as a per-row coefficient.** How per-token losses become one number (mean over tokens,
mean over samples of their token mean...) is fixed for the whole optimizer step *before*
micro-batching: each row gets ``reduce_weight`` and a micro-batch's loss is
``sum(reduce_weight * weight * loss_row)``. Summing micro-batch losses then gives exactly the
full step's reduction, whatever the micro-batch size.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields, replace
from typing import Iterator, Literal, Sequence

import torch

from madopd_distill.rollout import Sample
from madopd_distill.teachers import ScoreRequest

Reduction = Literal["token_mean", "sample_mean", "trajectory_mean", "sample_sum"]
REDUCTIONS: tuple[str, ...] = ("token_mean", "sample_mean", "trajectory_mean", "sample_sum")


def reduction_coefficients(samples: Sequence[Sample], reduction: Reduction) -> list[float]:
    """The per-token coefficient of each sample's rows under ``reduction`` (over all ``samples``).

    - ``token_mean``: every trained token counts the same (sum / total tokens).
    - ``sample_mean``: mean over samples of each sample's token mean ("seq-mean-token-mean",
      TCOD's choice against length collapse).
    - ``trajectory_mean``: mean over trajectories of each trajectory's token mean (equals
      ``sample_mean`` in trajectory sample mode; groups a trajectory's turns in turn mode).
    - ``sample_sum``: mean over samples of each sample's token *sum* (TRL's ``batchmean``
      without labels: a sequence-level divergence).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; known: {', '.join(REDUCTIONS)}")
    if not samples:
        return []
    n_tok = [s.num_tokens for s in samples]
    if reduction == "token_mean":
        total = sum(n_tok)
        return [1.0 / total] * len(samples)
    if reduction == "sample_mean":
        return [1.0 / (n * len(samples)) for n in n_tok]
    if reduction == "sample_sum":
        return [1.0 / len(samples)] * len(samples)
    per_traj = Counter()
    for s in samples:
        per_traj[s.traj_index] += s.num_tokens
    return [1.0 / (per_traj[s.traj_index] * len(per_traj)) for s in samples]


@dataclass
class StepBatch:
    """Padded student inputs plus the packed rows (one per trained token).

    Attributes:
        samples: the samples, in order.
        input_ids / attention_mask: ``[B, L]``, right-padded.
        rows / cols: ``[N]``: row ``n`` trains token ``input_ids[rows[n], cols[n]]``.
        targets: ``[N]`` those token ids.
        sampler_logprobs: ``[N]`` the rollout sampler's log-prob of each target.
        row_traj: ``[N]`` the trajectory index of each row.
        reduce_weight: ``[N]`` the reduction coefficient (see module docstring).
    """

    samples: list[Sample]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    targets: torch.Tensor
    sampler_logprobs: torch.Tensor
    row_traj: torch.Tensor
    reduce_weight: torch.Tensor

    @property
    def num_rows(self) -> int:
        return int(self.rows.shape[0])

    def to(self, device: torch.device | str) -> StepBatch:
        """The same batch with every tensor on ``device`` (the student's; collate builds on the CPU)."""
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})

    def teacher_requests(self) -> list[ScoreRequest]:
        """What the teacher scores: each sample's own sequence, or its privileged teacher sequence."""
        out = []
        for s in self.samples:
            if s.teacher_input_ids is None:
                out.append(ScoreRequest(s.input_ids, [t for t, m in enumerate(s.loss_mask) if m]))
            else:
                out.append(ScoreRequest(s.teacher_input_ids, [t for t, m in enumerate(s.teacher_loss_mask) if m]))
        return out

    def sample_rows(self) -> list[torch.Tensor]:
        """For each sample, the indices of its rows."""
        return [torch.nonzero(self.rows == b, as_tuple=True)[0] for b in range(len(self.samples))]


def collate(samples: Sequence[Sample], coefficients: Sequence[float], pad_id: int) -> StepBatch:
    """Pad ``samples`` into one :class:`StepBatch`; ``coefficients[i]`` is sample ``i``'s per-token reduce weight."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    width = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(samples), width), dtype=torch.long)
    rows, cols, lps, traj, red = [], [], [], [], []
    for b, (s, c) in enumerate(zip(samples, coefficients)):
        ids[b, : len(s.input_ids)] = torch.as_tensor(s.input_ids, dtype=torch.long)
        att[b, : len(s.input_ids)] = 1
        for t, m in enumerate(s.loss_mask):
            if m:
                rows.append(b)
                cols.append(t)
                lps.append(s.sampler_logprobs[t])
                traj.append(s.traj_index)
                red.append(c)
    rows_t, cols_t = torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)
    return StepBatch(list(samples), ids, att, rows_t, cols_t, ids[rows_t, cols_t],
                     torch.as_tensor(lps, dtype=torch.float32), torch.as_tensor(traj, dtype=torch.long),
                     torch.as_tensor(red, dtype=torch.float32))


def micro_batches(samples: Sequence[Sample], reduction: Reduction, pad_id: int,
                  max_tokens: int) -> Iterator[StepBatch]:
    """Collated micro-batches of at most ``max_tokens`` padded tokens (one sample at least), with the
    reduction fixed over all ``samples``."""
    coefs = reduction_coefficients(samples, reduction)
    start = 0
    while start < len(samples):
        end, width = start, 0
        while end < len(samples):
            w = max(width, len(samples[end].input_ids))
            if end > start and w * (end - start + 1) > max_tokens:
                break
            width, end = w, end + 1
        yield collate(samples[start:end], coefs[start:end], pad_id)
        start = end
