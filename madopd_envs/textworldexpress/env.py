"""TextWorldExpress: eight fast text games on a JVM engine (``textworld-express`` on PyPI).

At thousands of engine steps per second it is the family for CPU-scale distillation studies, so a
step here is one JVM call: the engine's ``stepJSON`` parsed with orjson. The package's own
``TextWorldExpressEnv.step`` makes a second JVM call per step (the unchanging task description) and
copies every step into a run history; this wrapper reads the description once per episode instead.
``benchmarks/bench_jvm.py`` measures the wrapper against both the package step and the bare call.

Splits are the engine's seed folds: train seeds 0-999, dev (our ``valid``) 10000-10999, test
20000-20999. The engine builds a game from the seed alone -- the fold argument does not change it --
so task ids carry the seed itself: ``"test-20005"``.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Mapping

from madopd_envs.core import TextEnv
from madopd_envs.jvm import DEFAULT_JAVA_OPTIONS, EngineCrashed, crash_error, is_alive, start_engine, stop_engine

GAMES = ("cookingworld", "twc", "coin", "mapreader", "arithmetic", "sorting", "simonsays", "peckingorder")

# The generation parameters each game accepts (the engine rejects any other name).
GAME_PARAMS: dict[str, tuple[str, ...]] = {
    "cookingworld": ("numLocations", "numIngredients", "numDistractorItems", "includeDoors", "limitInventorySize"),
    "twc": ("numLocations", "numItemsToPutAway", "includeDoors", "limitInventorySize"),
    "coin": ("numLocations", "numDistractorItems", "includeDoors", "limitInventorySize"),
    "mapreader": ("numLocations", "maxDistanceApart", "maxDistractorItemsPerLocation", "includeDoors",
                  "limitInventorySize"),
    "arithmetic": (),
    "sorting": (),
    "simonsays": ("gameLength", "numDistractors", "memorization", "verbose"),
    "peckingorder": (),
}

# Small, fast defaults (the engine's own make cookingworld and coin 11-room games, long for CPU
# studies). game_params="" gives the engine's defaults. Every seed of every fold generates with these
# (mapreader with 4 rooms cannot place 3 apart on 393 of the 3000 seeds; with 6 it can).
DEFAULT_PARAMS: dict[str, dict[str, int]] = {
    "cookingworld": {"numLocations": 3, "numIngredients": 2, "numDistractorItems": 2, "includeDoors": 0,
                     "limitInventorySize": 0},
    "twc": {"numLocations": 1, "numItemsToPutAway": 2, "includeDoors": 0, "limitInventorySize": 0},
    "coin": {"numLocations": 3, "numDistractorItems": 2, "includeDoors": 0, "limitInventorySize": 0},
    "mapreader": {"numLocations": 6, "maxDistanceApart": 3, "maxDistractorItemsPerLocation": 1, "includeDoors": 0,
                  "limitInventorySize": 0},
    "arithmetic": {},
    "sorting": {},
    "simonsays": {"gameLength": 4, "numDistractors": 2, "memorization": 0},
    "peckingorder": {},
}

SEEDS_PER_SPLIT = 1000
FOLDS = {"train": ("train", 0), "valid": ("dev", 10_000), "test": ("test", 20_000)}  # split -> (fold, first seed)


def parse_params(game: str, spec: str | Mapping[str, int]) -> dict[str, int]:
    """``"a=1,b=2"`` or a mapping -> checked ``{name: int}`` for ``game``; bad input fails in words."""
    if isinstance(spec, str):
        items: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, eq, value = part.partition("=")
            if not eq:
                raise ValueError(f"TextWorldExpress game parameters look like 'name=value,...'; got {part!r}")
            items[name.strip()] = value.strip()
    else:
        items = dict(spec)
    out = {}
    for name, value in items.items():
        if name not in GAME_PARAMS[game]:
            known = ", ".join(GAME_PARAMS[game]) or "none"
            raise ValueError(f"TextWorldExpress {game} has no parameter {name!r}; its parameters: {known}")
        try:
            out[name] = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"TextWorldExpress parameter {name} must be an integer; got {value!r}") from None
    return out


class TWXEnv(TextEnv):
    """One TextWorldExpress game.

    Args:
        game: one of ``GAMES``.
        game_params: the full parameter set, as ``"name=value,..."`` or a mapping, replacing
            ``DEFAULT_PARAMS[game]`` (``""``: the engine's own defaults).
        num_seeds: task ids per split (the first seeds of each fold; the engine's folds hold 1000).
        java_options: ``JAVA_TOOL_OPTIONS`` for the engine's JVM (the default caps its heap).
        **kwargs: single game parameters that override the defaults (``numLocations=5``), and the
            :class:`TextEnv` options (``split``, ``expert``, ``max_episode_steps``...).
    """

    family: ClassVar[str] = "textworldexpress"
    splits: ClassVar[tuple[str, ...]] = ("train", "valid", "test")
    # Keyword arguments that belong to TextEnv; every other keyword is a game parameter.
    _ENV_OPTIONS: ClassVar[frozenset[str]] = frozenset(inspect.signature(TextEnv.__init__).parameters) - {"self"}

    def __init__(self, game: str = "cookingworld", *, game_params: str | Mapping[str, int] | None = None,
                 num_seeds: int = SEEDS_PER_SPLIT, java_options: str | None = DEFAULT_JAVA_OPTIONS, **kwargs: Any):
        if game not in GAMES:
            raise ValueError(f"unknown TextWorldExpress game {game!r}; known: {', '.join(GAMES)}")
        if not 1 <= num_seeds <= SEEDS_PER_SPLIT:
            raise ValueError(f"num_seeds must be in 1..{SEEDS_PER_SPLIT}; got {num_seeds}")
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k not in self._ENV_OPTIONS}
        super().__init__(**kwargs)
        params = dict(DEFAULT_PARAMS[game]) if game_params is None else parse_params(game, game_params)
        params.update(parse_params(game, overrides))
        self.game = game
        self.params = params
        self.game_params = ",".join(f"{k}={v}" for k, v in params.items())  # the engine's string
        self.num_seeds = num_seeds
        self.java_options = java_options
        self._engine: Any = None
        self._loaded = False  # the engine holds this game and parameters
        self._gold: list[str] = []
        self._gold_pos = 0
        self._valid: list[str] = []
        self._task_text = ""
        self._score = 0.0

    def tasks(self, split: str | None = None) -> list[str]:
        split = split or self.split
        first = FOLDS[split][1]
        return [f"{split}-{first + i}" for i in range(self.num_seeds)]

    # -- engine ---------------------------------------------------------------------------------
    def _server(self) -> Any:
        if self._engine is not None and not is_alive(self._engine):
            stop_engine(self._engine)  # died between episodes: replace it silently
            self._engine = None
        if self._engine is None:
            from textworld_express import TextWorldExpressEnv

            self._engine = start_engine(lambda: TextWorldExpressEnv(envStepLimit=1_000_000), self.java_options)
            self._loaded = False
        return self._engine.server

    def _crashed(self, exc: Exception) -> Exception:
        err = crash_error(self._engine, "TextWorldExpress", exc)
        if err is None:
            return exc
        stop_engine(self._engine)
        self._engine = None
        return err

    # -- episode --------------------------------------------------------------------------------
    def _load(self, task_id: str, split: str) -> tuple[str, dict[str, Any]]:
        import orjson
        from py4j.protocol import Py4JError, Py4JJavaError

        fold, first = FOLDS[split]
        name, _, seed_text = task_id.rpartition("-")
        if name != split or not seed_text.isdigit() or not first <= int(seed_text) < first + SEEDS_PER_SPLIT:
            raise ValueError(f"TextWorldExpress {split} task ids are '{split}-<seed>' with a seed in "
                             f"{first}..{first + SEEDS_PER_SPLIT - 1}; got {task_id!r}")
        server = self._server()
        try:
            if not self._loaded:
                error = server.load(self.game, self.game_params)
                if error:
                    raise ValueError(f"TextWorldExpress rejected {self.game} with {self.game_params!r}: {error}")
                self._loaded = True
            state = orjson.loads(server.generateNewGameJSON(int(seed_text), fold, self.expert))
            self._task_text = str(server.getTaskDescription())
            # Known engine quirk, left as is: the same seed can get a different gold path later in one JVM's
            # life (test-20000: "move south, take coin", then "move west, move east, ..."), so expert runs
            # are not a pure function of task and seed.
            self._gold = [str(a) for a in server.getGoldActionSequence()] if self.expert else []
        except Py4JJavaError as e:  # the engine could not build this game (e.g. parameters too tight)
            raise ValueError(f"TextWorldExpress could not generate {self.game} seed {seed_text} with "
                             f"{self.game_params!r}: {e.java_exception.getMessage()}") from None
        except Py4JError as e:
            raise self._crashed(e) from e
        # Gold paths open with "look around", which repeats the first observation: skip it.
        self._gold_pos = 1 if self._gold[:1] == ["look around"] else 0
        self._score = 0.0
        return state["observation"], self._info(state)

    def _act(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        import orjson
        from py4j.protocol import Py4JError

        if self._engine is None:
            raise EngineCrashed("The TextWorldExpress JVM crashed earlier in this episode; call reset() to start a new one.")
        valid = action in self._valid
        try:
            state = orjson.loads(self._engine.server.stepJSON(action))
        except Py4JError as e:
            raise self._crashed(e) from e
        on_path = self._gold_pos < len(self._gold) and action == self._gold[self._gold_pos]
        self._gold_pos = self._gold_pos + 1 if on_path else len(self._gold)
        score = float(state["score"])
        reward, self._score = score - self._score, score
        info = self._info(state)
        info["action_valid"] = valid
        # The package's end conditions: success, failure, or full score.
        done = bool(state["tasksuccess"] or state["taskfailure"] or score >= 1.0)
        return state["observation"], reward, done, info

    def _info(self, state: dict[str, Any]) -> dict[str, Any]:
        self._valid = sorted(state["validActions"])
        score = float(state["score"])
        return {
            "task": self._task_text,
            "admissible_actions": self._valid,
            "won": bool(state["tasksuccess"]),
            "score": max(score, 0.0),
            "raw_score": float(state["scoreRaw"]),  # the game's points; score is them normalised
            "expert_action": self._gold[self._gold_pos] if self._gold_pos < len(self._gold) else None,
        }

    def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            stop_engine(engine)
