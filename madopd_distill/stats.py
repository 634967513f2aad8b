"""Confidence intervals for comparative studies: a hierarchical (two-level) bootstrap.

A study's outcome for one method is a matrix ``y[seed, task]`` (success or score of the final student
of seed ``s`` on held-out task ``t``). Both levels vary: a rerun draws new seeds (the distillation's
and the builds' randomness) and the benchmark is a sample of tasks. The bootstrap here resamples
seeds with replacement, then, within each drawn seed, tasks with replacement, and takes the mean
(Davison & Hinkley 1997, sec. 3.8: resampling at both stages of a two-stage design). The 95%
interval is the 2.5/97.5 percentile of those means.

A *paired* difference (method minus baseline) uses the same draws of seeds and tasks for both,
since seed ``s`` of every method starts from the same initial student and plays the same tasks:
the interval of ``y_m - y_b`` is much narrower than the two separate intervals suggest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_DRAWS = 4000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% interval."""

    mean: float
    lo: float
    hi: float

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (for a difference)."""
        return self.lo > 0 or self.hi < 0

    def fmt(self, digits: int = 2) -> str:
        return f"{self.mean:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi}


def hierarchical_bootstrap(y: np.ndarray, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> Interval:
    """Mean of ``y[seed, task]`` (NaN = missing, ignored) with a 95% seeds-then-tasks bootstrap interval.

    One seed: only tasks are resampled. One task (or a per-seed scalar, ``y[:, None]``): only seeds.
    """
    y = np.asarray(y, dtype=float)
    if y.ndim == 1:
        y = y[:, None]
    if y.size == 0 or np.all(np.isnan(y)):
        return Interval(float("nan"), float("nan"), float("nan"))
    n_s, n_t = y.shape
    rng = np.random.default_rng(seed)
    si = rng.integers(0, n_s, size=(draws, n_s))
    ti = rng.integers(0, n_t, size=(draws, n_s, n_t))
    means = np.nanmean(y[si[:, :, None], ti].reshape(draws, -1), axis=1)
    lo, hi = np.nanpercentile(means, [2.5, 97.5])
    return Interval(float(np.nanmean(y)), float(lo), float(hi))


def paired_difference(a: np.ndarray, b: np.ndarray, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> Interval:
    """``mean(a - b)`` for matrices over the same seeds and tasks, with the paired hierarchical interval."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired difference needs the same seeds and tasks: {a.shape} vs {b.shape}")
    return hierarchical_bootstrap(a - b, draws, seed)


def seed_band(curves: np.ndarray, draws: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column mean of ``curves[seed, x]`` and its 95% bootstrap band over seeds (NaN ignored)."""
    c = np.asarray(curves, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, c.shape[0], size=(draws, c.shape[0]))
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means = np.nanmean(c[idx], axis=1)
            lo, hi = np.nanpercentile(means, [2.5, 97.5], axis=0)
            return np.nanmean(c, axis=0), lo, hi


def verdict(diff: Interval, direction: str, tolerance: float = 0.0) -> str:
    """``replicated`` when the interval of (method - baseline) lies wholly on the claimed side of 0,
    ``not replicated`` when it lies wholly on the other side, else ``inconclusive``. ``at_least`` (a
    match): ``replicated`` when the interval lies above ``-tolerance``, ``not replicated`` when wholly below 0."""
    if direction not in ("greater", "less", "at_least"):
        raise ValueError(f"direction must be greater, less or at_least, got {direction!r}")
    if np.isnan(diff.mean):
        return "inconclusive"
    if direction == "at_least":
        return "not replicated" if diff.hi < 0 else "replicated" if diff.lo > -tolerance else "inconclusive"
    up, down = diff.lo > 0, diff.hi < 0
    if (up and direction == "greater") or (down and direction == "less"):
        return "replicated"
    if up or down:
        return "not replicated"
    return "inconclusive"
