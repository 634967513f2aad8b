"""ScienceWorld: 30 elementary-science tasks (7207 variations) on a JVM engine (``scienceworld`` on PyPI).

The wrapper talks to the engine's server object directly instead of through
``scienceworld.ScienceWorldEnv.step``, which on every step also lists the valid actions (417 at
the start of ``boil``: the bulk of a step's cost) and renders ``look``/``inventory``. Here a step is
one engine ``step`` plus the score and completion flags; the valid-action list is computed only when
``admissible=True`` (the default, which fills ``info["admissible_actions"]`` on every step like the
upstream API) or on demand through :meth:`ScienceWorldEnv.admissible_actions`.

Scores follow the engine: ``raw_score`` is its 0-100 progress, or -100 once the task has failed
(e.g. the agent focused on the wrong object); ``score = max(raw_score, 0) / 100``; ``won`` is the
engine's completion flag on a task that did not fail (the score is then 100). A failed task ends the
episode, like the upstream API.

**Step limits.** Each task has its own limit, set by one rule over the longest gold path of all its
variations (``tasks.STEP_LIMITS``; 100 -- the paper's limit -- where the gold paths fit it), so that
every variation can be won; ``max_episode_steps`` caps it further (``max_episode_steps=100`` gives the
paper's fixed limit). ``info["expert_action"]`` is ``None`` once an episode has ended.
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterable

import gymnasium

from madopd_envs.core import TextEnv
from madopd_envs.jvm import (
    DEFAULT_JAVA_OPTIONS,
    DETERMINISTIC_HASH_OPTIONS,
    EngineCrashed,
    crash_error,
    is_alive,
    start_engine,
    stop_engine,
)
from madopd_envs.scienceworld.tasks import (
    SPLITS,
    TASKS,
    check_task,
    is_electrical,
    parse_simplifications,
    parse_task_id,
    split_of,
    step_limit,
    task_ids,
    variations,
)

# The engine's answers to input it cannot parse (anything else was understood, possibly as an
# ambiguous request that the next action resolves by number).
UNPARSED_PREFIXES = ("No known action matches that input.", "Unknown action.")

# ScienceWorld 1.2.3 keeps objects in sets ordered by JVM identity hashes, which differ from one
# load to the next: the same variation then lists its objects, and ticks its physics, in another
# order (upstream fixed this in 1.3.0, which is not on PyPI here). A constant identity hash makes
# every load of a variation identical -- measured in benchmarks/bench_jvm.py. It changes which of
# the engine's possible worlds a variation gets: in that world the engine's gold agent fails
# mendelian-genetics-unknown-plant/427 (it focuses on the wrong box after 258 steps; with native
# hashes it won in 2 of 2 tries); 112 other sampled test variations ended in a win.
JAVA_OPTIONS = f"{DEFAULT_JAVA_OPTIONS} {DETERMINISTIC_HASH_OPTIONS}"

GOLD_CACHE_SIZE = 512  # gold paths kept per env (a few KB each)
_SEP = "\x1e"  # joins the valid actions on the Java side (no action holds it)


class ScienceWorldEnv(TextEnv):
    """ScienceWorld tasks and variations behind the TextEnv contract.

    ``reset()`` without a ``task_id`` picks a task uniformly, then one of its variations in the split
    uniformly (a uniform draw over all 7207 ids would give ``inclined-plane-friction-named-surfaces``
    a fifth of all episodes). ``reset(options={"simplification": "easy"})`` sets the simplifications
    of one episode.

    Args:
        tasks: restrict enumeration and sampling to these task names (default: all 30).
        simplification: ``"easy"`` (the engine's preset) or simplifications such as
            ``"openDoors,teleportAction"`` (a list works too); default none, as in the paper's tests.
        admissible: list the valid actions after every step in ``info["admissible_actions"]``. With
            ``False`` that key holds ``None`` and a step runs at the engine's raw speed;
            :meth:`admissible_actions` still lists them on demand.
        java_options: ``JAVA_TOOL_OPTIONS`` for the engine's JVM. The default caps the heap at 384 MB
            and makes loads deterministic (see ``JAVA_OPTIONS``); ``madopd_envs.jvm.DEFAULT_JAVA_OPTIONS``
            gives the engine's native, load-order-dependent behaviour.
        task_step_limits: end each episode at its task's limit (``tasks.STEP_LIMITS``), or at
            ``max_episode_steps`` when that is lower; ``False``: ``max_episode_steps`` alone.
        **kwargs: ``split``, ``expert``, ``max_episode_steps``... (see :class:`TextEnv`).
    """

    family: ClassVar[str] = "scienceworld"
    splits: ClassVar[tuple[str, ...]] = SPLITS

    def __init__(
        self,
        *,
        tasks: str | Iterable[str] | None = None,
        simplification: str | Iterable[str] | None = None,
        admissible: bool = True,
        java_options: str | None = JAVA_OPTIONS,
        task_step_limits: bool = True,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        # max_episode_steps becomes the current episode's limit at each reset; this is the cap.
        self.step_cap = self.max_episode_steps
        self.task_step_limits = task_step_limits
        names = [tasks] if isinstance(tasks, str) else list(tasks or TASKS)
        if not names:
            raise ValueError("ScienceWorldEnv: tasks is empty; give task names or None for all 30")
        self.task_names = [check_task(t) for t in names]
        self.simplification = parse_simplifications(simplification)
        self._episode_simplification = self.simplification
        if "noElectricalAction" in self.simplification.split(","):
            bad = [t for t in self.task_names if is_electrical(t)]
            if bad:
                raise ValueError(f"noElectricalAction removes the 'connect' actions that {', '.join(bad)} need; "
                                 f"drop it or choose other tasks")
        self.admissible = admissible
        self.java_options = java_options
        self._engine: Any = None
        self._gold: list[str] = []
        self._gold_cache: dict[tuple[str, int, str], list[str]] = {}
        self._gold_pos = 0
        self._task_text = ""
        self._score = 0.0

    # -- tasks ----------------------------------------------------------------------------------
    def tasks(self, split: str | None = None) -> list[str]:
        return task_ids(split or self.split, self.task_names)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        options = dict(options or {})
        self._episode_simplification = (parse_simplifications(options.pop("simplification"))
                                        if "simplification" in options else self.simplification)
        if options.get("task_id") is None:
            # Task-balanced draw; seeding here so the base class draws nothing more.
            gymnasium.Env.reset(self, seed=seed)
            split = options.get("split") or self.split
            if split not in self.splits:
                raise ValueError(f"ScienceWorldEnv: unknown split {split!r}; known: {list(self.splits)}")
            task = self.task_names[int(self.np_random.integers(len(self.task_names)))]
            pool = variations(task, split)
            options["task_id"] = f"{task}/{pool[int(self.np_random.integers(len(pool)))]}"
            seed = None
        return super().reset(seed=seed, options=options)

    # -- engine ---------------------------------------------------------------------------------
    def _engine_or_start(self) -> Any:
        if self._engine is not None and not is_alive(self._engine):
            stop_engine(self._engine)  # died between episodes: replace it silently
            self._engine = None
        if self._engine is None:
            from scienceworld import ScienceWorldEnv as Engine

            self._engine = start_engine(lambda: Engine("", envStepLimit=1_000_000), self.java_options)
        return self._engine

    def _crashed(self, exc: Exception) -> Exception:
        """The error to raise for a failed engine call: EngineCrashed (and forget the JVM) if it died."""
        err = crash_error(self._engine, "ScienceWorld", exc)
        if err is None:
            return exc
        stop_engine(self._engine)
        self._engine = None
        return err

    def _server(self) -> Any:
        if self._engine is None:
            raise EngineCrashed("The ScienceWorld JVM crashed earlier in this episode; call reset() to start a new one.")
        return self._engine.server

    def admissible_actions(self) -> list[str]:
        """The engine's valid actions now (~10-30 ms per call; sorted by the engine)."""
        from py4j.protocol import Py4JError

        server = self._server()
        try:
            return self._listed(server)
        except Py4JError as e:
            raise self._crashed(e) from e

    def _listed(self, server: Any) -> list[str]:
        """The valid actions in two JVM round trips: ``list()`` over py4j's proxy of the Java list fetches
        the actions one round trip each (417 at the start of ``boil``); joined on the Java side it is one
        string. Same actions, same order (tests/envs/test_scienceworld.py checks it)."""
        joined = self._engine._gateway.jvm.java.lang.String.join(_SEP, server.getValidActionObjectCombinations())
        return joined.split(_SEP) if joined else []

    # -- episode --------------------------------------------------------------------------------
    def _load(self, task_id: str, split: str) -> tuple[str, dict[str, Any]]:
        from py4j.protocol import Py4JError

        task, variation = parse_task_id(task_id)
        actual = split_of(task, variation)
        if actual != split:
            raise ValueError(f"ScienceWorld {task_id!r} is in split {actual!r}, not {split!r}")
        simplification = self._episode_simplification
        if is_electrical(task) and "noElectricalAction" in simplification.split(","):
            raise ValueError(f"{task} needs electrical actions; it cannot run with noElectricalAction")
        limits = [x for x in (self.step_cap, step_limit(task) if self.task_step_limits else None) if x is not None]
        self.max_episode_steps = min(limits) if limits else None
        server = self._engine_or_start().server
        try:
            # load() builds the world from the variation's seed (and, to make the gold path, plays a
            # copy first: 0.1-15 s, so each variation's path is made once per env -- loads are
            # deterministic); the first observation is a "look around", as upstream's reset().
            key = (task, variation, simplification)
            generate = self.expert and key not in self._gold_cache
            error = server.load(task, variation, simplification, generate)
            if error:
                raise RuntimeError(f"ScienceWorld could not load {task_id!r}: {error}")
            if generate:
                if len(self._gold_cache) >= GOLD_CACHE_SIZE:
                    self._gold_cache.pop(next(iter(self._gold_cache)))
                self._gold_cache[key] = [str(a) for a in server.getGoldActionSequence()]
            self._gold = self._gold_cache[key] if self.expert else []
            obs = server.step("look around")
            self._task_text = str(server.getTaskDescription())
            raw = int(round(100 * server.getScore()))
            listed = self._listed(server) if self.admissible else None
        except Py4JError as e:
            raise self._crashed(e) from e
        self._gold_pos = 0
        self._score = max(raw, 0) / 100
        return obs, self._info(raw, won=False, listed=listed)

    def _act(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        from py4j.protocol import Py4JError

        server = self._server()
        try:
            obs = server.step(action)
            raw = int(round(100 * server.getScore()))
            completed = bool(server.getCompleted())
            listed = self._listed(server) if self.admissible else None
        except Py4JError as e:
            raise self._crashed(e) from e
        failed = raw < 0
        # Still on the gold path only while every action so far was the gold one, and the episode runs.
        on_path = self._gold_pos < len(self._gold) and action == self._gold[self._gold_pos]
        self._gold_pos = self._gold_pos + 1 if on_path else len(self._gold)
        if completed or failed or (self.max_episode_steps is not None and self._steps >= self.max_episode_steps):
            self._gold_pos = len(self._gold)  # ended (won, failed or truncated): no next expert action
        score = max(raw, 0) / 100
        reward, self._score = score - self._score, score  # rewards sum to the final score
        info = self._info(raw, won=completed and not failed, listed=listed)
        info["action_valid"] = not obs.startswith(UNPARSED_PREFIXES)
        return obs, reward, completed or failed, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)
        if (terminated or truncated) and "expert_action" in info:
            info["expert_action"] = None  # also after an invalid last action, whose info is the previous one
        return obs, reward, terminated, truncated, info

    def _info(self, raw: int, *, won: bool, listed: list[str] | None) -> dict[str, Any]:
        return {
            "task": self._task_text,
            "admissible_actions": listed,
            "won": won,
            "score": max(raw, 0) / 100,
            "raw_score": float(raw),
            "expert_action": self._gold[self._gold_pos] if self._gold_pos < len(self._gold) else None,
        }

    def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            stop_engine(engine)
