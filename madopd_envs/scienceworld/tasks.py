"""ScienceWorld's 30 tasks, their official variation splits, task ids and simplification presets.

The splits are the engine's own (``get_variations_train/dev/test``): for every task the
variations are contiguous -- train first, then dev, then test (50/25/25). The table below was read
from the ``scienceworld==1.2.3`` engine; ``python -m madopd_envs.scienceworld.tasks`` re-reads it
from the engine and fails on any difference, so a new engine version cannot silently change them.
Keeping the table here lets ``tasks(split)`` enumerate all 7207 variations without starting a JVM.

Task ids are ``"<task name>/<variation>"``, e.g. ``"boil/17"``; our split names are ``train``,
``valid`` (the engine's ``dev``) and ``test``.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Iterable

# name -> (paper id, #train, #dev, #test), in the paper's order (topic 1-1 ... 10-2).
TASKS: dict[str, tuple[str, int, int, int]] = {
    "boil": ("1-1", 14, 7, 9),
    "melt": ("1-2", 14, 7, 9),
    "freeze": ("1-3", 14, 7, 9),
    "change-the-state-of-matter-of": ("1-4", 14, 7, 9),
    "use-thermometer": ("2-1", 270, 135, 135),
    "measure-melting-point-known-substance": ("2-2", 218, 109, 109),
    "measure-melting-point-unknown-substance": ("2-3", 150, 75, 75),
    "power-component": ("3-1", 10, 5, 5),
    "power-component-renewable-vs-nonrenewable-energy": ("3-2", 10, 5, 5),
    "test-conductivity": ("3-3", 450, 225, 225),
    "test-conductivity-of-unknown-substances": ("3-4", 300, 150, 150),
    "find-living-thing": ("4-1", 150, 75, 75),
    "find-non-living-thing": ("4-2", 150, 75, 75),
    "find-plant": ("4-3", 150, 75, 75),
    "find-animal": ("4-4", 150, 75, 75),
    "grow-plant": ("5-1", 62, 31, 33),
    "grow-fruit": ("5-2", 62, 31, 33),
    "chemistry-mix": ("6-1", 16, 8, 8),
    "chemistry-mix-paint-secondary-color": ("6-2", 18, 9, 9),
    "chemistry-mix-paint-tertiary-color": ("6-3", 18, 9, 9),
    "lifespan-longest-lived": ("7-1", 62, 31, 32),
    "lifespan-shortest-lived": ("7-2", 62, 31, 32),
    "lifespan-longest-lived-then-shortest-lived": ("7-3", 62, 31, 32),
    "identify-life-stages-1": ("8-1", 6, 3, 5),
    "identify-life-stages-2": ("8-2", 4, 2, 4),
    "inclined-plane-determine-angle": ("9-1", 84, 42, 42),
    "inclined-plane-friction-named-surfaces": ("9-2", 692, 346, 348),
    "inclined-plane-friction-unnamed-surfaces": ("9-3", 80, 40, 42),
    "mendelian-genetics-known-plant": ("10-1", 60, 30, 30),
    "mendelian-genetics-unknown-plant": ("10-2", 240, 120, 120),
}

SPLITS = ("train", "valid", "test")

# -- step limits ---------------------------------------------------------------------------------
# The paper's protocol caps every episode at 100 steps, but the engine's gold paths of some tasks are
# longer (hundreds of steps): those variations could not be won at all. Each task's limit instead
# follows one rule over the longest gold path of all its variations (every split), measured with
# ``python -m madopd_envs.scienceworld.goldpaths`` (the engine's paths under this package's JVM options):
#
#     limit(task) = max(100, 10 * ceil(1.25 * longest_gold(task) / 10))
#
# i.e. the paper's 100 where the gold paths fit it with a quarter to spare, else 25% above the longest
# gold path, rounded up to a multiple of 10.
STEP_LIMIT_FLOOR = 100
STEP_LIMIT_SLACK = 1.25


def step_limit_rule(longest_gold: int) -> int:
    """The step limit of a task whose longest gold path has ``longest_gold`` actions (see above)."""
    return max(STEP_LIMIT_FLOOR, 10 * math.ceil(STEP_LIMIT_SLACK * longest_gold / 10))


# task -> (longest gold path, variations measured). All variations of a task where the count equals its
# size in TASKS; an evenly spread sample of the others (a gold path takes 0.1-80 s to generate on a
# loaded 2-core machine; the sampled tasks have short paths or vary little). Re-measure with the command above.
GOLD_MEASURED: dict[str, tuple[int, int]] = {
    "boil":                                             (164, 30),
    "melt":                                             (132, 30),
    "freeze":                                           (125, 30),
    "change-the-state-of-matter-of":                    (114, 30),
    "use-thermometer":                                  (24, 269),
    "measure-melting-point-known-substance":            (74, 186),
    "measure-melting-point-unknown-substance":          (96, 300),
    "power-component":                                  (15, 20),
    "power-component-renewable-vs-nonrenewable-energy": (30, 20),
    "test-conductivity":                                (49, 348),
    "test-conductivity-of-unknown-substances":          (37, 227),
    "find-living-thing":                                (16, 114),
    "find-non-living-thing":                            (11, 114),
    "find-plant":                                       (16, 114),
    "find-animal":                                      (16, 114),
    "grow-plant":                                       (77, 126),
    "grow-fruit":                                       (115, 126),
    "chemistry-mix":                                    (58, 32),
    "chemistry-mix-paint-secondary-color":              (27, 36),
    "chemistry-mix-paint-tertiary-color":               (35, 36),
    "lifespan-longest-lived":                           (8, 48),
    "lifespan-shortest-lived":                          (8, 47),
    "lifespan-longest-lived-then-shortest-lived":       (9, 47),
    "identify-life-stages-1":                           (42, 14),
    "identify-life-stages-2":                           (17, 10),
    "inclined-plane-determine-angle":                   (193, 168),
    "inclined-plane-friction-named-surfaces":           (797, 1386),
    "inclined-plane-friction-unnamed-surfaces":         (231, 162),
    "mendelian-genetics-known-plant":                   (160, 25),
    "mendelian-genetics-unknown-plant":                 (161, 13),
}
LONGEST_GOLD: dict[str, int] = {t: n for t, (n, _) in GOLD_MEASURED.items()}

STEP_LIMITS: dict[str, int] = {t: step_limit_rule(n) for t, n in LONGEST_GOLD.items()}


def step_limit(task: str) -> int:
    """The step limit of ``task`` (see ``STEP_LIMITS``)."""
    return STEP_LIMITS[check_task(task)]

ENGINE_FOLD = {"train": "train", "valid": "dev", "test": "test"}

# The engine's simplifications; "easy" is its preset of all of them that suit the task (it keeps
# electrical actions for electrical tasks and, in 1.2.3, leaves containers closed).
SIMPLIFICATIONS = ("teleportAction", "selfWateringFlowerPots", "openContainers", "openDoors", "noElectricalAction")
PRESETS = ("easy",)


def _close(word: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def check_task(name: str) -> str:
    """``name`` if it is a ScienceWorld task, else a ``ValueError`` with close matches."""
    if name not in TASKS:
        raise ValueError(f"unknown ScienceWorld task {name!r}.{_close(name, TASKS)} Known: {', '.join(TASKS)}")
    return name


def is_electrical(task: str) -> bool:
    """Tasks that need ``connect`` actions (the engine refuses ``noElectricalAction`` for them)."""
    return "power-component" in task or "conductivity" in task


def variations(task: str, split: str) -> range:
    """The variation indices of ``task`` in ``split`` (contiguous: train, then dev, then test)."""
    _, n_train, n_dev, n_test = TASKS[check_task(task)]
    if split == "train":
        return range(0, n_train)
    if split == "valid":
        return range(n_train, n_train + n_dev)
    if split == "test":
        return range(n_train + n_dev, n_train + n_dev + n_test)
    raise ValueError(f"unknown ScienceWorld split {split!r}; known: {list(SPLITS)}")


def split_of(task: str, variation: int) -> str:
    """The split a variation belongs to."""
    for split in SPLITS:
        if variation in variations(task, split):
            return split
    n = sum(TASKS[task][1:])
    raise ValueError(f"ScienceWorld task {task!r} has variations 0..{n - 1}; got {variation}")


def task_ids(split: str, tasks: Iterable[str] | None = None) -> list[str]:
    """``"<task>/<variation>"`` for every variation of ``tasks`` (default: all 30) in ``split``."""
    names = list(TASKS) if tasks is None else [check_task(t) for t in tasks]
    return [f"{t}/{v}" for t in names for v in variations(t, split)]


def parse_task_id(task_id: str) -> tuple[str, int]:
    """``"boil/17"`` -> ``("boil", 17)``; a malformed id fails in words."""
    task, sep, var = str(task_id).rpartition("/")
    if not sep or not var.isdigit():
        raise ValueError(f"ScienceWorld task ids look like '<task>/<variation>', e.g. 'boil/17'; got {task_id!r}")
    variation = int(var)
    split_of(check_task(task), variation)  # range check
    return task, variation


def parse_simplifications(spec: str | Iterable[str] | None) -> str:
    """Normalise a preset (``"easy"``) or simplifications (``"openDoors,teleportAction"`` or a
    list) to the engine's comma-separated string; an unknown name fails with close matches."""
    if spec is None:
        return ""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()]
    known = PRESETS + SIMPLIFICATIONS
    for name in names:
        if name not in known:
            raise ValueError(f"unknown ScienceWorld simplification {name!r}.{_close(name, known)} Known: {', '.join(known)}")
    if "easy" in names and len(names) > 1:
        raise ValueError("the 'easy' preset already includes every simplification; give it alone")
    return ",".join(names)


def check_with_engine(engine: Any = None, tasks: Iterable[str] | None = None) -> list[str]:
    """Compare this module's table with the engine (a ``scienceworld.ScienceWorldEnv``; default: a
    new one) for ``tasks`` (default: all); return the differences in words. It loads tasks."""
    from madopd_envs.jvm import start_engine, stop_engine

    own = engine is None
    if own:
        from scienceworld import ScienceWorldEnv

        engine = start_engine(lambda: ScienceWorldEnv("", envStepLimit=10_000))
    problems = []
    try:
        names = list(engine.get_task_names())
        if sorted(names) != sorted(TASKS):
            problems.append(f"task names differ: engine {sorted(names)} vs table {sorted(TASKS)}")
        for name in names if tasks is None else list(tasks):
            if name not in TASKS:
                continue
            engine.load(name, 0, "", generateGoldPath=False)
            engine_splits = {"train": engine.get_variations_train(), "valid": engine.get_variations_dev(),
                             "test": engine.get_variations_test()}
            for split, got in engine_splits.items():
                if list(got) != list(variations(name, split)):
                    problems.append(f"{name} {split}: engine {list(got)} vs table {list(variations(name, split))}")
    finally:
        if own:
            stop_engine(engine)
    return problems


if __name__ == "__main__":
    import sys

    found = check_with_engine()
    print("\n".join(found) or f"OK: the table matches the engine ({sum(sum(v[1:]) for v in TASKS.values())} variations)")
    sys.exit(1 if found else 0)
