"""Where the time goes: wall seconds per phase of an eval or a training step (``--profile``).

Phases are named by the caller (``env``, ``prefill``, ``decode``, ``teacher``, ``loss``, ``optimizer``,
``I/O``...), so users see what to scale: more env workers, a faster sampler, a cheaper teacher. An
agent that keeps cumulative ``timings`` (``HFAgent``: ``{"prefill": s, "decode": s}``) has its time
split into those phases; the rest of its time is ``agent (other)``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator


class Profile:
    """Accumulates wall seconds per phase, in the order phases first appear."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    @contextmanager
    def agent(self, agent: Any, name: str = "agent") -> Iterator[None]:
        """Time an ``act`` call; split it by the agent's own ``timings`` where it keeps them."""
        before = dict(getattr(agent, "timings", None) or {})
        t0 = time.perf_counter()
        try:
            yield
        finally:
            total = time.perf_counter() - t0
            after = dict(getattr(agent, "timings", None) or {})
            split = {k: after[k] - before.get(k, 0.0) for k in after}
            for k, v in split.items():
                self.add(k, v)
            self.add(f"{name} (other)" if split else name, max(0.0, total - sum(split.values())))

    def table(self, total: float | None = None) -> str:
        """A markdown table: phase, seconds, share of ``total`` (default: since creation); the time
        no phase covered is ``other``."""
        total = time.perf_counter() - self.started if total is None else total
        rows = dict(self.seconds)
        rest = total - sum(rows.values())
        if rest > 0.0005 * max(total, 1e-9):
            rows["other"] = rest
        lines = ["| phase | seconds | share |", "|---|---|---|"]
        lines += [f"| {k} | {v:.2f} | {v / total:.1%} |" for k, v in rows.items()] if total > 0 else []
        lines.append(f"| **total** | {total:.2f} | 100% |")
        return "\n".join(lines)
