"""Leaderboard configs: where they live, how they load, and the episodes they plan.

A leaderboard is a YAML file in a ``leaderboard/`` config group (Hydra layout, so training configs can
say ``leaderboard=default``) listing entries ``(env, split, episodes, max_steps, seeds)``; ``include``
pulls in other leaderboards' entries. Config roots are searched in order: ``$MADOPD_CONF``
(``:``-separated), ``./leaderboards/conf``, and the ``leaderboards/conf`` of this checkout.

An eval is planned up front as deterministic *episode units* ``(env, split, task_id, seed)``, so an
interrupted run resumes exactly: the same plan minus the units already on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Config roots and YAML loading live in madopd_envs.conf, which the agent registry shares (re-exported here).
from madopd_envs.conf import REPO_CONF, ConfigError, conf_dirs, find_config, list_configs, load_yaml  # noqa: F401


@dataclass(frozen=True)
class Entry:
    """One env of a leaderboard.

    Attributes:
        env: a registered env id.
        split: the split tasks come from.
        episodes: tasks per seed, chosen from the split's task ids (in the env's order) by ``select``.
        max_steps: actions per episode before truncation (``None``: the env's registered limit).
        seeds: each seed replays the tasks once (the env seed of the episode).
        task_ids: explicit tasks instead of a selection.
        select: ``spread`` takes ``episodes`` evenly spaced tasks (covering task types/games that the
            split lists in blocks), ``first`` the first ``episodes``.
        env_kwargs: passed to ``make`` (e.g. ``data_path`` of official data), as sorted pairs.
    """

    env: str
    split: str = "test"
    episodes: int = 10
    max_steps: int | None = None
    seeds: tuple[int, ...] = (0,)
    task_ids: tuple[str, ...] | None = None
    select: str = "spread"
    env_kwargs: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.episodes < 1 or (self.max_steps is not None and self.max_steps < 1) or not self.seeds:
            raise ConfigError(f"{self.env}: episodes and max_steps must be >= 1 and seeds non-empty")
        if min(self.seeds) < 0:
            raise ConfigError(f"{self.env}: seeds must be >= 0, got {list(self.seeds)}")
        if self.select not in ("spread", "first"):
            raise ConfigError(f"{self.env}: select must be 'spread' or 'first', got {self.select!r}")


@dataclass(frozen=True)
class Leaderboard:
    """``workers``: how its env workers run unless the command line says otherwise (``backend``:
    ``process`` or ``ray``; ``ray_address``: a running cluster's head, ``host:port``)."""

    name: str
    entries: tuple[Entry, ...]
    description: str = ""
    source: str = ""
    workers: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def _entry(raw: dict[str, Any], where: str) -> Entry:
    allowed = set(Entry.__dataclass_fields__)
    unknown = set(raw) - allowed
    if unknown or "env" not in raw:
        raise ConfigError(f"{where}: entries need 'env' and may have {sorted(allowed)}; got {sorted(raw)}")
    raw = dict(raw)
    if "seeds" in raw:
        raw["seeds"] = tuple(int(s) for s in (raw["seeds"] if isinstance(raw["seeds"], list) else [raw["seeds"]]))
    if raw.get("env_kwargs") is not None:
        if not isinstance(raw["env_kwargs"], dict):
            raise ConfigError(f"{where}: env_kwargs must be a mapping")
        raw["env_kwargs"] = tuple(sorted(raw["env_kwargs"].items()))
    if raw.get("task_ids") is not None:
        raw["task_ids"] = tuple(str(t) for t in raw["task_ids"])
        raw.setdefault("episodes", len(raw["task_ids"]))
    return Entry(**raw)


def load_leaderboard(name: str, _seen: tuple[str, ...] = ()) -> Leaderboard:
    """Load ``leaderboard/<name>.yaml`` with its ``include``s (entries concatenated, duplicates dropped)."""
    if name in _seen:
        raise ConfigError(f"leaderboard include cycle: {' -> '.join(_seen + (name,))}")
    path = find_config("leaderboard", name)
    data = load_yaml(path)
    entries: list[Entry] = []
    for inc in data.get("include", []) or []:
        entries += load_leaderboard(str(inc), _seen + (name,)).entries
    for i, raw in enumerate(data.get("entries", []) or []):
        entries.append(_entry(raw, f"{path} entry {i}"))
    unique = list(dict.fromkeys(entries))
    if not unique:
        raise ConfigError(f"{path}: the leaderboard has no entries")
    workers = dict(data.get("workers") or {})
    if set(workers) - {"backend", "ray_address"} or workers.get("backend", "process") not in ("process", "ray"):
        raise ConfigError(f"{path}: workers may have backend (process | ray) and ray_address; got {workers}")
    return Leaderboard(name=str(data.get("name", name)), entries=tuple(unique),
                       description=str(data.get("description", "")), source=str(path), workers=workers)


@dataclass(frozen=True)
class Unit:
    """One episode to play: a deterministic unit of an eval (and of its resume)."""

    env: str
    split: str
    task_id: str
    seed: int
    max_steps: int

    @property
    def key(self) -> str:
        return f"{self.env}|{self.split}|{self.task_id}|{self.seed}"


@dataclass
class Plan:
    units: list[Unit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "asked for 50 episodes, split has 20"
    source: str = ""  # where the tasks come from (generated / official data and its path, catalogue hash)


def plan_entry(entry: Entry, task_ids: list[str]) -> Plan:
    """The units of one entry, given the split's task ids in the env's order."""
    plan = Plan()
    if entry.task_ids is not None:
        missing = [t for t in entry.task_ids if t not in set(task_ids)]
        if missing:
            raise ConfigError(f"{entry.env} split {entry.split!r} has no tasks {missing[:5]}")
        chosen = list(entry.task_ids)[: entry.episodes]
    else:
        chosen = select_tasks(task_ids, entry.episodes, entry.select)
        if len(chosen) < entry.episodes:
            plan.notes.append(f"{entry.env}/{entry.split}: asked for {entry.episodes} episodes, "
                              f"the split has {len(task_ids)} tasks")
    max_steps = entry.max_steps or 50
    for seed in entry.seeds:
        plan.units += [Unit(entry.env, entry.split, t, seed, max_steps) for t in chosen]
    return plan


def select_tasks(task_ids: list[str], n: int, how: str = "spread") -> list[str]:
    """``n`` task ids: the first ``n``, or ``n`` evenly spaced ones (``i * len / n``), in order."""
    if n >= len(task_ids) or how == "first":
        return task_ids[:n]
    return [task_ids[(i * len(task_ids)) // n] for i in range(n)]


def with_env_limits(entry: Entry) -> Entry:
    """``entry`` with ``max_steps`` filled from the env's registered limit when the config left it out."""
    if entry.max_steps is not None:
        return entry
    from dataclasses import replace

    from madopd_envs.registry import spec

    return replace(entry, max_steps=spec(entry.env).max_episode_steps or 50)
