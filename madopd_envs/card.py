"""``EnvCard``: what a user needs to know about an environment, kept apart from the registry.

The card is plain data, so ``builtin.py`` (and any plugin) can describe its envs without importing the
registry that consumes the descriptions; results (``run.json``) and reports carry it as a dict.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EnvCard:
    """What a user needs to know about an environment before running it.

    Attributes:
        family: the engine family (``alfworld``, ``scienceworld``...), also the prompt family.
        splits: split name -> number of tasks (``None`` when it depends on user data).
        metrics: what ``score``/``won`` mean for this env.
        extra: the pip extra that installs its engine (``pip install 'madopd[<extra>]'``); a plugin
            may give a full requirement instead (``"my-bench[engine]"``).
        requires: importable modules the engine needs.
        license: licence and provenance of engine and data.
        description: one line for tables.
    """

    family: str
    splits: dict[str, int | None] = field(default_factory=dict)
    metrics: str = "won: task solved; score: normalised progress in [0, 1]"
    extra: str | None = None
    requires: tuple[str, ...] = ()
    license: str = ""
    description: str = ""

    def missing_modules(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    @property
    def available(self) -> bool:
        return not self.missing_modules()

    def install_hint(self) -> str:
        """The pip command that installs the engine (``madopd[<extra>]`` unless a requirement is given)."""
        extra = self.extra or self.family
        target = extra if ("[" in extra or "-" in extra or "=" in extra) else f"madopd[{extra}]"
        return f"pip install '{target}'"
