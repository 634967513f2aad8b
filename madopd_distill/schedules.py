"""Schedules: training step -> value, and the trajectory-depth curricula of TCOD.

Methods vary one number with the training step: Guided-OPD's teacher-intervention probability,
TCOD's rollout depth, a KL coefficient. Each is a :class:`Schedule`, a small frozen dataclass that
is called with the step. ``make_schedule`` builds one from a config mapping (Hydra YAML), e.g.
``{kind: cosine, start: 1.0, end: 0.0, total_steps: 100}``; a bare number is a constant.

Depth curricula (TCOD, arXiv 2604.24005, code kokolerk/TCOD):

- F2B (front to back): the student rolls out only the first ``W = 1 + step // k`` env steps;
- B2F (back to front): an expert prefix of ``c = max(0, L - 1 - step // k)`` actions is replayed
  without gradient and the student continues from there (``L`` = the expert trajectory's length);
- the general form from the authors' RFCs: ``min(k_start + floor(step / eta), k_max)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, runtime_checkable


@runtime_checkable
class Schedule(Protocol):
    """A value that depends on the training step (0-based)."""

    def __call__(self, step: int) -> float: ...


def _check_step(step: int) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"a schedule's step is an int >= 0, got {step!r}")
    return step


@dataclass(frozen=True)
class Constant:
    """The same value at every step."""

    value: float

    def __call__(self, step: int) -> float:
        _check_step(step)
        return float(self.value)


@dataclass(frozen=True)
class _Ramp:
    """From ``start`` at step 0 to ``end`` at ``total_steps`` (held after); subclasses give the shape."""

    start: float
    end: float
    total_steps: int

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")

    def progress(self, step: int) -> float:
        """The fraction of the ramp done at ``step``, in [0, 1]."""
        return min(_check_step(step) / self.total_steps, 1.0)


@dataclass(frozen=True)
class Linear(_Ramp):
    """``start`` at step 0, straight to ``end`` at ``total_steps``, then ``end``."""

    def __call__(self, step: int) -> float:
        return self.start + (self.end - self.start) * self.progress(step)


@dataclass(frozen=True)
class Cosine(_Ramp):
    """Half a cosine from ``start`` (step 0) to ``end`` (``total_steps`` and after)."""

    def __call__(self, step: int) -> float:
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * self.progress(step)))


@dataclass(frozen=True)
class Exponential:
    """``start * gamma**step``: decays towards 0 and never reaches it.

    ``floor`` cuts the tail: a value below it is returned as exactly 0, so a probability schedule
    really ends (Guided-OPD's "decays to 0"). ``floor=0`` keeps the pure exponential.
    """

    start: float
    gamma: float
    floor: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1) for a decay, got {self.gamma}")
        if self.floor < 0:
            raise ValueError(f"floor must be >= 0, got {self.floor}")

    def __call__(self, step: int) -> float:
        value = self.start * self.gamma ** _check_step(step)
        return 0.0 if abs(value) < self.floor else value


@dataclass(frozen=True)
class Step:
    """TCOD's general depth curriculum: ``min(k_start + floor(step / eta), k_max)``."""

    k_start: int
    eta: int
    k_max: int

    def __post_init__(self) -> None:
        if self.eta < 1:
            raise ValueError(f"eta (steps per increment) must be >= 1, got {self.eta}")
        if self.k_max < self.k_start:
            raise ValueError(f"k_max ({self.k_max}) must be >= k_start ({self.k_start})")

    def __call__(self, step: int) -> float:
        return float(min(self.k_start + _check_step(step) // self.eta, self.k_max))


def _check_k(k: int) -> int:
    if k < 1:
        raise ValueError(f"k (training steps per extra env step) must be >= 1, got {k}")
    return k


def f2b_window(step: int, k: int) -> int:
    """TCOD F2B: how many env steps the student may take at training step ``step``: ``1 + step // k``."""
    return 1 + _check_step(step) // _check_k(k)


def b2f_replay_point(step: int, k: int, expert_length: int) -> int:
    """TCOD B2F: how many expert actions are replayed before the student takes over.

    ``max(0, L - 1 - step // k)`` for an expert trajectory of ``L`` actions: at step 0 the student
    writes only the last action; every ``k`` steps it takes over one more.
    """
    if expert_length < 0:
        raise ValueError(f"expert_length must be >= 0, got {expert_length}")
    return max(0, expert_length - 1 - _check_step(step) // _check_k(k))


_KINDS: dict[str, type] = {"constant": Constant, "linear": Linear, "cosine": Cosine,
                           "exponential": Exponential, "step": Step}


def make_schedule(spec: Schedule | float | int | Mapping[str, Any]) -> Schedule:
    """A schedule from a number (constant), a schedule, or ``{kind: <name>, **fields}``."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Constant(float(spec))
    if isinstance(spec, Mapping):
        fields = dict(spec)
        kind = fields.pop("kind", None)
        if kind not in _KINDS:
            raise ValueError(f"unknown schedule kind {kind!r}; known: {', '.join(_KINDS)}")
        try:
            return _KINDS[kind](**fields)
        except TypeError as err:
            raise ValueError(f"bad fields for a {kind} schedule: {err}") from None
    if callable(spec):
        return spec  # type: ignore[return-value]
    raise TypeError(f"a schedule is a number, a mapping with 'kind', or a callable; got {type(spec).__name__}")
