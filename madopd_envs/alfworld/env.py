"""``madopd/ALFWorld-v0``: ALFWorld's text games on the real engine (TextWorld PDDL + alfworld).

Each game plays through ``AlfredInfos(AlfredDemangler(PddlEnv))``, as upstream's ``AlfredTWEnv``
plays it; the expert is upstream's handcoded expert (``expert.py``). Games come from upstream's data
when ``data_path=`` or ``$ALFWORLD_DATA`` points at it, otherwise from the offline generated sets
(``data.py``). Success is the engine's ``won``; ``score`` is 1.0 when won, else 0.0.

The installed alfworld version is reported in every info (``alfworld_version``): the place command
is ``move X to Y`` in alfworld 0.4.x, ``put X in/on Y`` before, so results are comparable only within
a version.
"""

from __future__ import annotations

import contextlib
import zlib
from typing import Any, ClassVar, Iterator

from madopd_envs.core import TextEnv

TASK_PREFIX = "Your task is to: "


class ALFWorldEnv(TextEnv):
    """One ALFWorld household task per episode.

    Task ids are game directories relative to the data root (``valid_unseen/<task>/<trial>``); see
    ``madopd_envs.alfworld.data``.

    Args:
        data_path: upstream-layout data (the directory holding ``json_2.1.1``); default
            ``$ALFWORLD_DATA``, else the generated sets.
        game_seed: seed of the generated sets (0 = the shipped eval sets).
        num_train_games: train games listed for the generated sets.
        fast: memoise TextWorld's grammar parsing (``fastgrammar``; identical traces, ~3x faster).
            ``False``: stock TextWorld, even after a ``fast=True`` env in the same process;
            ``None``: whatever ``fastgrammar.install()``/``uninstall()`` set (benchmarks).
        **kwargs: ``TextEnv`` arguments (``split``, ``expert``, ``max_episode_steps``...).

    ``recycle_after``: the engine keeps ~2 MB per game load (stock TextWorld too), so
    ``make_vec`` restarts an ALFWorld worker after this many episodes unless told otherwise.
    """

    family: ClassVar[str] = "alfworld"
    splits: ClassVar[tuple[str, ...]] = ("train", "valid_seen", "valid_unseen")
    recycle_after: ClassVar[int | None] = 50

    def __init__(self, *, data_path: str | None = None, game_seed: int = 0, num_train_games: int = 1000,
                 fast: bool | None = True, **kwargs: Any):
        super().__init__(**kwargs)
        from madopd_envs.alfworld.data import GeneratedData, OfficialData, configured_data_path
        from madopd_envs.alfworld.engine import alfworld_version

        path = configured_data_path(data_path)
        self.source = OfficialData(path) if path is not None else GeneratedData(game_seed, num_train_games)
        self.fast = fast
        self.alfworld_version = alfworld_version()
        self._engine = None
        self._engine_task: str | None = None
        self._expert = None
        self._traj: dict[str, Any] = {}
        self._admissible: list[str] = []
        self._task = ""

    def tasks(self, split: str | None = None) -> list[str]:
        split = split or self.split
        if split not in self.splits:
            raise ValueError(f"ALFWorldEnv: unknown split {split!r}; known: {list(self.splits)}")
        return self.source.tasks(split)

    @contextlib.contextmanager
    def _parser(self) -> Iterator[None]:
        """TextWorld's parsing as ``fast`` says, for the engine calls inside the block."""
        from madopd_envs.alfworld import fastgrammar

        if self.fast:
            fastgrammar.install()
        with fastgrammar.mode(self.fast):
            yield

    def _load(self, task_id: str, split: str) -> tuple[str, dict[str, Any]]:
        if not task_id.startswith(f"{split}/"):
            raise ValueError(f"ALFWorld task {task_id!r} is not in split {split!r}")
        with self._parser():
            return self._load_game(task_id)

    def _load_game(self, task_id: str) -> tuple[str, dict[str, Any]]:
        if self._engine is None or self._engine_task != task_id:
            from madopd_envs.alfworld.engine import open_game

            game, self._traj = self.source.load(task_id)
            self._engine, self._engine_task = None, None
            # Facts cost time every step; only the expert reads them.
            self._engine, self._engine_task = open_game(game, facts=self.expert), task_id
        state = self._engine.reset()
        self._task = state["feedback"].rpartition(TASK_PREFIX)[2].strip()
        expert_action = None
        if self.expert:
            from madopd_envs.alfworld.expert import HandcodedExpert

            madopd = self._traj.get("madopd", {})
            # The generator's expert seed, so expert_action replays the stored walkthrough.
            seed = int(madopd["index"]) if "index" in madopd else zlib.crc32(task_id.encode())
            self._expert = HandcodedExpert(self._traj, seed=seed)
            expert_action = self._expert.first(state)
        return state["feedback"], self._info(state, 0.0, expert_action)

    def _act(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        with self._parser():
            return self._act_engine(action)

    def _act_engine(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        command = action.strip()
        valid = command in self._admissible  # the engine answers "Nothing happens." to anything else
        state, score, done = self._engine.step(command)
        expert_action = self._expert.next(state, command) if self.expert and self._expert else None
        info = self._info(state, float(score), expert_action)
        info["action_valid"] = valid
        won = bool(state["won"])
        return state["feedback"], 1.0 if won else 0.0, bool(done or won), info

    def _info(self, state: Any, raw_score: float, expert_action: str | None) -> dict[str, Any]:
        self._admissible = list(state["admissible_commands"])
        won = bool(state["won"])
        return {
            "task": self._task,
            "task_type": self._traj.get("task_type", ""),
            "admissible_actions": list(self._admissible),
            "won": won,
            "score": 1.0 if won else 0.0,
            "raw_score": raw_score,
            "expert_action": expert_action,
            "alfworld_version": self.alfworld_version,
        }

    def close(self) -> None:
        # The engine is in-process (fast-downward is a library): dropping it frees it; no child to stop.
        self._engine, self._engine_task, self._expert = None, None, None
