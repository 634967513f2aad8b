"""TextWorldExpress: eight fast text games on a JVM engine (``textworld-express`` on PyPI).

At ~2900 engine steps/s it is the family for CPU-scale distillation studies, so the wrapper does
as little as possible per step: one engine call, a set lookup for validity.
"""

from __future__ import annotations

import atexit
from typing import Any, ClassVar

from madopd_envs.core import TextEnv
from madopd_envs.jvm import java_options, stop_engine

GAMES = ("cookingworld", "twc", "coin", "mapreader", "arithmetic", "sorting", "simonsays", "peckingorder")

# Small, fast defaults (the engine's own defaults make some games long for CPU studies).
DEFAULT_PARAMS: dict[str, str] = {
    "cookingworld": "numLocations=3,numIngredients=2,numDistractorItems=2,includeDoors=0,limitInventorySize=0",
    "twc": "numLocations=1,numItemsToPutAway=2,includeDoors=0,limitInventorySize=0",
    "coin": "numLocations=3,numDistractorItems=2,includeDoors=0,limitInventorySize=0",
    "mapreader": "numLocations=4,maxDistanceApart=3,maxDistractorItemsPerLocation=1,includeDoors=0,limitInventorySize=0",
    "arithmetic": "",
    "sorting": "",
    "simonsays": "gameLength=4,numDistractors=2,memorization=0",
    "peckingorder": "",
}

SEEDS_PER_SPLIT = 1000
_FOLDS = {"train": "train", "valid": "dev", "test": "test"}


class TWXEnv(TextEnv):
    """One TextWorldExpress game.

    Task ids are ``"<split>-<seed>"``; the engine generates the game from the seed within its own
    train/dev/test fold (``valid`` here is the engine's ``dev``).

    Args:
        game: one of ``GAMES``.
        game_params: the engine's comma-separated ``key=value`` parameters ("" = engine defaults).
        num_seeds: task ids per split (the engine's folds hold more; the first ones are used).
    """

    family: ClassVar[str] = "textworldexpress"
    splits: ClassVar[tuple[str, ...]] = ("train", "valid", "test")

    def __init__(self, game: str = "cookingworld", *, game_params: str | None = None,
                 num_seeds: int = SEEDS_PER_SPLIT, **kwargs: Any):
        super().__init__(**kwargs)
        if game not in GAMES:
            raise ValueError(f"unknown TextWorldExpress game {game!r}; known: {', '.join(GAMES)}")
        self.game = game
        self.game_params = DEFAULT_PARAMS[game] if game_params is None else game_params
        self.num_seeds = num_seeds
        self._engine = None
        self._gold: list[str] = []
        self._on_gold = True
        self._valid: set[str] = set()

    def tasks(self, split: str | None = None) -> list[str]:
        split = split or self.split
        return [f"{split}-{s}" for s in range(self.num_seeds)]

    def _engine_or_start(self):
        if self._engine is None:
            from textworld_express import TextWorldExpressEnv

            with java_options():
                self._engine = TextWorldExpressEnv(envStepLimit=10_000)
            atexit.register(self.close)
        return self._engine

    def _load(self, task_id: str, split: str) -> tuple[str, dict[str, Any]]:
        fold_split, _, seed = task_id.rpartition("-")
        engine = self._engine_or_start()
        obs, infos = engine.reset(seed=int(seed), gameFold=_FOLDS[fold_split or split], gameName=self.game,
                                  gameParams=self.game_params, generateGoldPath=True)
        self._gold = list(engine.getGoldActionSequence())
        self._on_gold = True
        # The gold path starts with "look around"; the expert's first action is the one after it.
        self._gold_pos = 1 if self._gold and self._gold[0] == "look around" else 0
        return obs, self._info(infos, action=None)

    def _act(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        valid = action in self._valid
        self._on_gold = self._on_gold and self._gold_pos < len(self._gold) and action == self._gold[self._gold_pos]
        self._gold_pos += 1
        obs, reward, done, infos = self._engine.step(action)
        info = self._info(infos, action)
        info["action_valid"] = valid
        return obs, float(reward), bool(done), info

    def _info(self, infos: dict[str, Any], action: str | None) -> dict[str, Any]:
        self._valid = set(infos["validActions"])
        score = float(infos["score"])
        expert = self._gold[self._gold_pos] if self._on_gold and self._gold_pos < len(self._gold) else None
        return {
            "task": infos["taskDescription"],
            "admissible_actions": sorted(self._valid),
            "won": bool(infos["tasksuccess"]),
            "score": max(score, 0.0),
            "raw_score": score,
            "expert_action": expert,
        }

    def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            stop_engine(engine)
