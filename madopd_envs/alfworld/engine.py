"""The ALFWorld engine: TextWorld's ``PddlEnv`` wrapped as upstream's ``AlfredTWEnv`` wraps it.

Upstream plays a game through ``AlfredInfos(AlfredDemangler(PddlEnv(infos)))`` (object ids become
"apple 1"...). This module builds exactly that stack for one game, from its ``game.tw-pddl`` data,
and nothing else: no planner requests (``policy_commands``/``walkthrough`` make fast-downward replan,
0.4 steps/s), facts only when an expert needs them.
"""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path
from typing import Any

UNKNOWN_GOAL = "UNKNOWN GOAL"


@functools.lru_cache(maxsize=1)
def alfworld_version() -> str:
    """The installed alfworld version (the place command changed across versions: record it)."""
    return importlib.metadata.version("alfworld")


@functools.lru_cache(maxsize=1)
def wheel_logic() -> tuple[str, str]:
    """The domain (``alfred.pddl``) and grammar (``alfred.twl2``) that ship in the alfworld wheel."""
    import alfworld.info

    return Path(alfworld.info.ALFRED_PDDL_PATH).read_text(), Path(alfworld.info.ALFRED_TWL2_PATH).read_text()


def game_data(pddl_problem: str, task_desc: str, *, solvable: bool = True,
              walkthrough: list[str] | None = None) -> dict[str, Any]:
    """A ``game.tw-pddl`` document: the wheel's domain and grammar, the task sentence in the grammar."""
    domain, grammar = wheel_logic()
    return {"pddl_domain": domain, "grammar": grammar.replace(UNKNOWN_GOAL, task_desc),
            "pddl_problem": pddl_problem, "solvable": solvable, "walkthrough": walkthrough}


def open_game(game: dict[str, Any] | str, *, facts: bool = False):
    """Load one game on the engine; returns the wrapped env (call ``reset()`` next).

    Args:
        game: a ``game.tw-pddl`` document, or the path of one.
        facts: also report the state's facts (the handcoded expert reads them).
    """
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos
    from textworld.envs import PddlEnv

    infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=facts, extras=["gamefile"])
    env = AlfredInfos(AlfredDemangler(PddlEnv(infos), shuffle=False))
    env.load(game)
    return env
