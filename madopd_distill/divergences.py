"""Token-level divergences between student and teacher, defined once, direction in the name.

Every function takes the **student first, teacher second** and returns one value per row (token
position); reductions and weights are the caller's (see :mod:`madopd_distill.batch`).

- ``forward_kl``  = KL(T || S) = sum_v p_T(v) (log p_T(v) - log p_S(v))   (mode-covering)
- ``reverse_kl``  = KL(S || T) = sum_v p_S(v) (log p_S(v) - log p_T(v))   (mode-seeking; OPD's default)
- ``generalized_jsd(beta)`` with the mixture ``M = (1 - beta) P_S + beta P_T``:
  ``JSD_beta = beta KL(T || M) + (1 - beta) KL(S || M)``; at the endpoints it *is* the KL --
  ``beta = 0`` -> forward KL, ``beta = 1`` -> reverse KL -- the convention of TRL's
  ``generalized_jsd_loss`` and of the MAD-OPD code. (The bare formula vanishes at both ends;
  ``JSD_beta / beta -> KL(T||S)`` as beta -> 0 and ``JSD_beta / (1 - beta) -> KL(S||T)`` as beta -> 1,
  which the tests check.) Other frameworks drifted on exactly this (TRL #6780 / PR #3043,
  ms-swift #10078, verl-recipe #151): the tests pin it against float64 references.
- top-k variants (:func:`topk_logprobs`): the same divergences on the teacher's top-k tokens plus
  a remainder bucket (or renormalised over the top-k), for teachers that only return top-k.
- ``sampled_token_advantage`` = ``coef * (log p_T(y) - log p_S(y))`` on the sampled token only:
  the per-token advantage of tinker-cookbook's OPD and TCOD, a one-sample estimate of -KL(S||T).

**Temperature.** ``temperature`` divides the logits of *both* models before the softmax, so an exact
copy of the student as teacher gives zero divergence and zero gradient at any temperature. A sparse
teacher's top-k log-probs are at temperature 1: dividing them by ``tau`` and renormalising over the k
tokens is exact (``renorm``); the remainder mass at ``tau != 1`` is unknown, so ``remainder`` refuses it.

**-inf entries** (padded top-k slots, a token both models rule out) count as absent: the terms are
masked *before* any arithmetic that would give ``-inf - -inf``, since ``torch.where`` still sends
gradient through the branch it did not pick (0 x NaN = NaN).

**Memory.** :class:`ChunkedDivergence` computes the full-vocabulary divergence chunk by chunk
and its analytic gradient in the same pass, so no more than one chunk of softmax is alive at a time
and backward is one in-place multiply: peak = the two input logit tensors + one gradient buffer
(1.5x the inputs; ``benchmarks/bench_divergence.py`` measures it).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Kind = Literal["forward_kl", "reverse_kl", "jsd"]
KINDS: tuple[str, ...] = ("forward_kl", "reverse_kl", "jsd")


def _kl(p_logp: torch.Tensor, q_logp: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) over the last dim from log-probs; 0 log 0 = 0 (padded -inf entries are fine)."""
    p = p_logp.exp()
    present = p > 0
    # Zero both logs where P has no mass, so -inf - -inf never happens (not even in the unused branch).
    diff = torch.where(present, p_logp, 0.0) - torch.where(present, q_logp, 0.0)
    return (p * diff).sum(-1)


def forward_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """KL(T || S) per row, from normalised log-probs ``[..., V]``."""
    return _kl(teacher_logp, student_logp)


def reverse_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """KL(S || T) per row, from normalised log-probs ``[..., V]``."""
    return _kl(student_logp, teacher_logp)


def generalized_jsd(student_logp: torch.Tensor, teacher_logp: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """``beta KL(T||M) + (1-beta) KL(S||M)``, ``M = (1-beta) P_S + beta P_T``; beta=0 -> KL(T||S), beta=1 -> KL(S||T)."""
    _check_beta(beta)
    if beta == 0.0:
        return forward_kl(student_logp, teacher_logp)
    if beta == 1.0:
        return reverse_kl(student_logp, teacher_logp)
    # Where both are -inf, M is -inf too; logaddexp(-inf, -inf)'s gradient is NaN, so compute it on zeros there.
    none = torch.isneginf(student_logp) & torch.isneginf(teacher_logp)
    log_m = torch.logaddexp(student_logp.masked_fill(none, 0.0) + math.log1p(-beta),
                            teacher_logp.masked_fill(none, 0.0) + math.log(beta)).masked_fill(none, -math.inf)
    return beta * _kl(teacher_logp, log_m) + (1.0 - beta) * _kl(student_logp, log_m)


def divergence(student_logp: torch.Tensor, teacher_logp: torch.Tensor, kind: Kind, beta: float = 0.5) -> torch.Tensor:
    """Dispatch by name (``beta`` is used by ``jsd`` only)."""
    if kind == "forward_kl":
        return forward_kl(student_logp, teacher_logp)
    if kind == "reverse_kl":
        return reverse_kl(student_logp, teacher_logp)
    if kind == "jsd":
        return generalized_jsd(student_logp, teacher_logp, beta)
    raise ValueError(f"unknown divergence {kind!r}; known: {', '.join(KINDS)}")


def kind_beta(kind: Kind, beta: float = 0.5) -> float:
    """The generalized-JSD beta that equals ``kind`` (forward KL = 0, reverse KL = 1)."""
    if kind not in KINDS:
        raise ValueError(f"unknown divergence {kind!r}; known: {', '.join(KINDS)}")
    return {"forward_kl": 0.0, "reverse_kl": 1.0}.get(kind, beta)


def _check_beta(beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")


# -- top-k (sparse teachers) -----------------------------------------------------------------------
TopKMode = Literal["remainder", "renorm"]


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, stable at both ends; clamps so a full top-k mass gives a finite value."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def topk_logprobs(student_logits: torch.Tensor, topk_ids: torch.Tensor, teacher_topk_logp: torch.Tensor,
                  mode: TopKMode = "remainder", temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher log-probs on the teacher's top-k tokens, ready for any divergence above.

    ``remainder``: ``K + 1`` outcomes -- the k tokens and "any other token" with mass
    ``1 - sum(top-k)`` for each model (a lower bound of the full divergence; exact when the top-k
    holds all the mass). ``renorm``: both renormalised over the k tokens (MAD-OPD's ``jsd_top_k``).
    Padded top-k entries (teacher log-prob ``-inf``) count as absent.

    ``temperature`` applies to both models: the teacher's (temperature-1) top-k log-probs are divided
    by it too, which is exact after ``renorm``; ``remainder`` needs temperature 1 (see the module docstring).
    Teacher tensors are moved to the student's device.

    Only a gather and a logsumexp touch the full-vocabulary student logits, so memory stays ``[N, K]``
    beyond the input.
    """
    if mode not in ("remainder", "renorm"):
        raise ValueError(f"top-k mode is 'remainder' or 'renorm', got {mode!r}")
    if mode == "remainder" and temperature != 1.0:
        raise ValueError(f"a top-k teacher's log-probs are at temperature 1 and the mass outside its top-k at "
                         f"temperature {temperature} is unknown: use topk_mode='renorm' or temperature=1")
    topk_ids = topk_ids.to(student_logits.device)
    teacher_topk_logp = teacher_topk_logp.to(student_logits.device)
    z = student_logits / temperature if temperature != 1.0 else student_logits
    s_top = z.gather(-1, topk_ids) - torch.logsumexp(z, -1, keepdim=True)
    absent = torch.isneginf(teacher_topk_logp)
    s_top = s_top.masked_fill(absent, -math.inf)
    t_top = teacher_topk_logp / temperature if temperature != 1.0 else teacher_topk_logp
    if mode == "renorm":
        return (s_top - torch.logsumexp(s_top, -1, keepdim=True), t_top - torch.logsumexp(t_top, -1, keepdim=True))
    s_rest = _log1mexp(torch.logsumexp(s_top, -1, keepdim=True))
    t_rest = _log1mexp(torch.logsumexp(t_top, -1, keepdim=True))
    return torch.cat([s_top, s_rest], -1), torch.cat([t_top, t_rest], -1)


def sampled_token_advantage(teacher_logp: torch.Tensor, student_logp: torch.Tensor, coef: float = 1.0) -> torch.Tensor:
    """``coef * (log p_T(y_t) - log p_S(y_t))`` per sampled token (tinker-cookbook / TCOD advantage).

    Both log-probs must describe the same kind of distribution -- the same temperature, no top-p
    truncation on one side only -- or an exact copy of the student gets a non-zero advantage."""
    return coef * (teacher_logp.to(student_logp.device) - student_logp)


def tempered_token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``[N]`` ``log softmax(logits / temperature)[targets]``: a full-distribution model's log-prob of each
    sampled token at the loss temperature (no ``[N, V]`` log-softmax is kept)."""
    z = logits.float() / temperature if temperature != 1.0 else logits.float()
    targets = targets.to(z.device)
    return z.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(z, -1)


# -- full vocabulary, chunked, analytic gradient ---------------------------------------------------
class ChunkedDivergence(torch.autograd.Function):
    """Per-row generalized JSD(beta) of ``[N, V]`` logits in row chunks, with its gradient.

    Gradient w.r.t. the student logits ``z`` (``tau`` the temperature, ``s = log_softmax(z / tau)``):

    - beta = 0 (forward KL):  ``(p_S - p_T) / tau``
    - beta = 1 (reverse KL):  ``p_S * (r - <p_S, r>) / tau``, ``r = log p_S - log p_T``
    - otherwise:              ``p_S * (g - <p_S, g>) / tau``, ``g = (1 - beta)(log p_S - log M)``

    (the last is dL/d log p_S through the softmax Jacobian; its terms from dM/dp_S cancel). The
    gradient is written into one preallocated buffer during forward; backward scales it in place,
    so the graph holds nothing else. Backward may run once (no ``retain_graph``).
    """

    @staticmethod
    def forward(ctx, student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float, temperature: float,
                chunk_size: int) -> torch.Tensor:
        n = student_logits.shape[0]
        acc = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
        out = torch.empty(n, dtype=acc, device=student_logits.device)
        want_grad = ctx.needs_input_grad[0]
        grad = torch.empty_like(student_logits) if want_grad else None
        lb = math.log(beta) if beta > 0 else 0.0
        l1b = math.log1p(-beta) if beta < 1 else 0.0
        for i in range(0, n, chunk_size):
            j = min(i + chunk_size, n)
            ls = torch.log_softmax(student_logits[i:j].to(acc) / temperature, -1)
            lt = torch.log_softmax(teacher_logits[i:j].to(acc) / temperature, -1)
            ps = ls.exp()
            if beta == 0.0:
                pt = lt.exp()
                out[i:j] = torch.where(pt > 0, pt * (lt - ls), 0.0).sum(-1)
                if want_grad:
                    grad[i:j] = (ps - pt).div_(temperature)
                continue
            if beta == 1.0:
                r = torch.where(ps > 0, ls - lt, 0.0)  # a token both models rule out: -inf - -inf
                out[i:j] = torch.where(ps > 0, ps * r, 0.0).sum(-1)
            else:
                log_m = torch.logaddexp(ls + l1b, lt + lb)
                pt = lt.exp()
                out[i:j] = (beta * torch.where(pt > 0, pt * (lt - log_m), 0.0).sum(-1)
                            + (1 - beta) * torch.where(ps > 0, ps * (ls - log_m), 0.0).sum(-1))
                r = torch.where(ps > 0, ls - log_m, 0.0).mul_(1 - beta)
                del log_m, pt
            if want_grad:
                mean = (ps * r).sum(-1, keepdim=True)
                grad[i:j] = r.sub_(mean).mul_(ps).div_(temperature)
        if want_grad:
            ctx.save_for_backward(grad)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        grad.mul_(grad_out.to(grad.dtype)[:, None])
        return grad, None, None, None, None


def chunked_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: Kind = "reverse_kl",
                       beta: float = 0.5, temperature: float = 1.0, chunk_size: int = 64) -> torch.Tensor:
    """Per-row divergence of ``[N, V]`` (or ``[..., V]``) logits, memory-lean; see :class:`ChunkedDivergence`."""
    beta = kind_beta(kind, beta)
    _check_beta(beta)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} vs teacher {tuple(teacher_logits.shape)}: "
                         "the vocabularies must match (same tokenizer)")
    if temperature <= 0 or chunk_size < 1:
        raise ValueError("temperature must be > 0 and chunk_size >= 1")
    lead = student_logits.shape[:-1]
    s = student_logits.reshape(-1, student_logits.shape[-1])
    t = teacher_logits.detach().to(student_logits.device).reshape(-1, teacher_logits.shape[-1])
    return ChunkedDivergence.apply(s, t, float(beta), float(temperature), int(chunk_size)).reshape(lead)


def logits_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: Kind = "reverse_kl",
                      beta: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """The plain (autograd) path: ``log_softmax`` both, then :func:`divergence`. Reference for the chunked one."""
    s = torch.log_softmax(student_logits / temperature, -1)
    t = torch.log_softmax(teacher_logits.detach().to(student_logits.device) / temperature, -1)
    return divergence(s, t, kind, beta)
