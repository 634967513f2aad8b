"""The environment registry: ids ``madopd/<Name>-v<N>`` -> lazy ``"module:Class"`` entry points.

``register`` also registers with gymnasium, so ``gymnasium.make("madopd/ALFWorld-v0")`` works.
Heavy engines are imported only when an env is made; a missing engine fails with the exact
install command, an unknown id with close-match suggestions.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import gymnasium

from madopd_envs.core import TextEnv

ID_PATTERN = re.compile(r"^madopd/[A-Za-z0-9][A-Za-z0-9_.+-]*-v\d+$")


@dataclass(frozen=True)
class EnvCard:
    """What a user needs to know about an environment before running it.

    Attributes:
        family: the engine family (``alfworld``, ``scienceworld``...), also the prompt family.
        splits: split name -> number of tasks (``None`` when it depends on user data).
        metrics: what ``score``/``won`` mean for this env.
        extra: the pip extra that installs its engine (``pip install 'madopd[<extra>]'``).
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


@dataclass(frozen=True)
class EnvSpec:
    id: str
    entry_point: str | Callable[..., TextEnv]
    kwargs: dict[str, Any]
    max_episode_steps: int | None
    card: EnvCard


class UnknownEnvError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; users should read plain words
        return str(self.args[0])


class MissingEngineError(ImportError):
    pass


_REGISTRY: dict[str, EnvSpec] = {}


def register(
    id: str,
    entry_point: str | Callable[..., TextEnv],
    *,
    max_episode_steps: int | None = None,
    kwargs: dict[str, Any] | None = None,
    card: EnvCard | None = None,
) -> EnvSpec:
    """Register an environment under ``id`` (``madopd/<Name>-v<N>``)."""
    if not ID_PATTERN.match(id):
        raise ValueError(f"environment ids look like 'madopd/<Name>-v<N>'; got {id!r}")
    spec = EnvSpec(id, entry_point, dict(kwargs or {}), max_episode_steps, card or EnvCard(family="text"))
    _REGISTRY[id] = spec
    # gymnasium.make goes through our make so the engine check and max_episode_steps apply.
    gymnasium.register(id, entry_point=_gymnasium_entry_point(id), disable_env_checker=True)
    return spec


def _gymnasium_entry_point(env_id: str) -> Callable[..., TextEnv]:
    def make_registered(**kwargs: Any) -> TextEnv:
        return make(env_id, **kwargs)

    return make_registered


def spec(id: str) -> EnvSpec:
    """The spec of ``id``; an unknown id fails with the closest registered ids."""
    _load_builtin()
    if id in _REGISTRY:
        return _REGISTRY[id]
    close = difflib.get_close_matches(id, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownEnvError(f"No environment {id!r} is registered.{hint} `python -m madopd_envs list` shows them all.")


def registered() -> list[EnvSpec]:
    _load_builtin()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def make(id: str, **kwargs: Any) -> TextEnv:
    """Build the environment ``id``; keyword arguments override the registered ones."""
    s = spec(id)
    missing = s.card.missing_modules()
    if missing:
        extra = s.card.extra or s.card.family
        raise MissingEngineError(
            f"{id} needs {', '.join(missing)}, which is not installed. Install it with: pip install 'madopd[{extra}]' "
            f"(or `make setup`, which installs every engine)."
        )
    cls = _resolve(s.entry_point)
    merged = {**s.kwargs, **kwargs}
    if s.max_episode_steps is not None:
        merged.setdefault("max_episode_steps", s.max_episode_steps)
    env = cls(**merged)
    env.spec = gymnasium.envs.registration.EnvSpec(id=id, entry_point=_gymnasium_entry_point(id), kwargs=merged,
                                                   max_episode_steps=merged.get("max_episode_steps"),
                                                   disable_env_checker=True)
    return env


def _resolve(entry_point: str | Callable[..., TextEnv]) -> Callable[..., TextEnv]:
    if callable(entry_point):
        return entry_point
    module, _, attr = entry_point.partition(":")
    return getattr(importlib.import_module(module), attr)


_builtin_loaded = False


def _load_builtin() -> None:
    """Import the built-in families' ``register`` lines (cheap: no engine is imported)."""
    global _builtin_loaded
    if not _builtin_loaded:
        _builtin_loaded = True
        importlib.import_module("madopd_envs.builtin")
