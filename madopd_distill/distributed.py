"""Several training processes (``accelerate launch --num_processes N``): who plays what, and one step
computed as if by one process with the whole global batch.

Data-parallel OPD differs from data-parallel SFT in two ways that DDP's defaults get wrong:

- **Uneven work.** Each process plays its own episodes, so it trains on a different number of tokens,
  hence a different number of micro-batches. DDP all-reduces inside every ``backward`` and
  broadcasts buffers in every ``forward``: with unequal counts the processes wait on each other
  forever. So the micro-batches run under ``no_sync`` (buffers are not broadcast: see
  :func:`ddp_kwargs`) and the gradients are averaged once, after the last one
  (:func:`average_gradients`); a process with nothing to train still joins that average.
- **The reduction is global.** A token mean per process, averaged over processes, weighs a token of
  a short-rollout process more than one of a long-rollout process. :func:`global_scale` all-reduces
  the count the reduction divides by (tokens, samples or trajectories) and rescales each process's
  reduction coefficients so that the average of the processes' gradients is exactly the gradient of
  the global mean.

Episodes are sharded by *group* (:func:`shard_episodes`): a GRPO/OPD group never straddles processes,
and the global batch is the one a single process would draw, so runs with 1 and N processes see the
same tasks (tests/distill/test_multiprocess.py compares them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def data_parallel(accelerator: Any) -> bool:
    """True under DDP with several processes (CPU/gloo or GPU/NCCL). FSDP and DeepSpeed shard the
    model and synchronise through their own engines; they need equal micro-batch counts (see README)."""
    from accelerate.utils import DistributedType

    return accelerator.num_processes > 1 and accelerator.distributed_type in (
        DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)


def ddp_kwargs() -> list[Any]:
    """Accelerator ``kwargs_handlers``: no buffer broadcast in ``forward`` (the buffers here are rotary
    tables, identical everywhere; a broadcast per forward deadlocks uneven micro-batch counts)."""
    from accelerate.utils import DistributedDataParallelKwargs

    return [DistributedDataParallelKwargs(broadcast_buffers=False)]


def shard_episodes(episodes: Sequence[T], rank: int, world: int) -> list[T]:
    """This process's share: whole groups (by ``group_id``), dealt round-robin in order of appearance."""
    if world == 1:
        return list(episodes)
    order: dict[Any, int] = {}
    for e in episodes:
        order.setdefault(e.group_id, len(order))
    return [e for e in episodes if order[e.group_id] % world == rank]


def reduction_count(samples: Sequence[Any], reduction: str) -> float:
    """What the step's reduction divides by, on this process (see ``batch.reduction_coefficients``)."""
    if reduction == "token_mean":
        return float(sum(s.num_tokens for s in samples))
    if reduction == "trajectory_mean":
        return float(len({s.traj_index for s in samples}))
    return float(len(samples))  # sample_mean, sample_sum


def all_sum(values: Sequence[float], accelerator: Any) -> list[float]:
    """Element-wise sum of ``values`` over all processes (one all-reduce)."""
    t = torch.tensor(list(values), dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        torch.distributed.all_reduce(t)
    return t.tolist()


def global_scale(local: float, total: float, world: int) -> float:
    """Factor on this process's reduction coefficients (``1 / local``) that turns the mean over
    processes of their gradients into the gradient of the global mean (``1 / total``):
    ``local * world / total``; 0 where nothing is trained anywhere."""
    return local * world / total if total > 0 else 0.0


def average_gradients(model: Any, accelerator: Any) -> None:
    """Average ``.grad`` over processes; a parameter without a gradient here counts as zero."""
    world = accelerator.num_processes
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
        p.grad.div_(world)
