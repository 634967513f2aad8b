"""The text-environment contract every madopd environment implements.

An environment is a :class:`TextEnv`: a ``gymnasium.Env[str, str]`` whose per-step facts travel in
``info`` (see :class:`StepInfo`). A family writes three small methods -- ``tasks``, ``_load`` and
``_act`` -- and the base class does the rest: task choice from seed/options, rejection of garbage
actions *in words* (never an exception), step counting, truncation, and completing the info dict so
every env speaks the same contract.
"""

from __future__ import annotations

import string
import unicodedata
from typing import Any, ClassVar, Required, TypedDict

import gymnasium
import numpy as np
from gymnasium import spaces

# Engines emit Unicode ("café", "°C"); observations are checked for type and length, not charset.
MAX_OBSERVATION_CHARS = 1_000_000
DEFAULT_MAX_ACTION_CHARS = 4_096


class StepInfo(TypedDict, total=False):
    """What ``reset`` and ``step`` report in ``info``.

    Attributes:
        task_id: the task (game file, variation, goal index...) this episode plays.
        split: the split the task comes from (``train``, ``valid_seen``, ``test``...).
        task: the goal in words.
        admissible_actions: the actions the engine accepts now, or ``None`` when open-ended.
        won: the task is solved.
        score: progress normalised to ``[0, 1]``.
        raw_score: the engine's own score (ScienceWorld 0-100, WebShop reward x 100...).
        action_valid: the last action was well formed and understood by the engine.
        expert_action: the engine's expert next action; present only when the env was made with
            ``expert=True`` (privileged access for scripted experts and teacher turns).
        step: number of actions taken in this episode.
    """

    task_id: Required[str]
    split: Required[str]
    task: Required[str]
    admissible_actions: Required[list[str] | None]
    won: Required[bool]
    score: Required[float]
    raw_score: Required[float]
    action_valid: Required[bool]
    step: Required[int]
    expert_action: str | None


INFO_TYPES: dict[str, type | tuple[type, ...]] = {
    "task_id": str,
    "split": str,
    "task": str,
    "admissible_actions": (list, type(None)),
    "won": bool,
    "score": float,
    "raw_score": float,
    "action_valid": bool,
    "step": int,
}


class UnicodeText(spaces.Text):
    """A ``Text`` space that admits any Unicode string up to ``max_length``.

    Gymnasium's ``Text`` checks every character against a charset; engine text holds characters
    outside any small charset, so membership here is "a str of bounded length". ``sample()`` still
    draws printable ASCII, which envs must answer in words like any other action.
    """

    def __init__(self, max_length: int, *, min_length: int = 0, seed: int | None = None):
        super().__init__(max_length, min_length=min_length, charset=string.printable, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"


def action_problem(action: Any, max_chars: int) -> str | None:
    """Why ``action`` cannot be a command, in words; ``None`` when it is well formed."""
    if not isinstance(action, str):
        return f"Actions are text; got {type(action).__name__}."
    if not action.strip():
        return "The action is empty."
    if len(action) > max_chars:
        return f"The action is {len(action)} characters long; the limit is {max_chars}."
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in action):
        return "The action contains control characters."
    return None


class TextEnv(gymnasium.Env[str, str]):
    """Base class of every madopd environment.

    Subclasses set ``family`` and ``splits`` and implement:

    - ``tasks(split) -> list[str]``: the task ids of a split, in a fixed order;
    - ``_load(task_id) -> (obs, info)``: start an episode of that task;
    - ``_act(action) -> (obs, reward, terminated, info)``: apply a well-formed action.

    The ``info`` a subclass returns needs only what it knows (``won``, ``score``...); the base fills
    in ``task_id``, ``split``, ``step``, ``action_valid`` and defaults, and drops ``expert_action``
    unless the env was made with ``expert=True``.

    Args:
        split: the split ``reset`` samples tasks from when ``options`` names none.
        expert: expose the engine's expert next action as ``info["expert_action"]``.
        max_episode_steps: truncate an episode after this many actions (``None``: never).
        max_action_chars: longer actions are answered in words, not executed.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"]}
    family: ClassVar[str] = "text"
    splits: ClassVar[tuple[str, ...]] = ("test",)
    open_ended: ClassVar[bool] = False  # True where no admissible-action list exists (code)

    def __init__(
        self,
        *,
        split: str | None = None,
        expert: bool = False,
        max_episode_steps: int | None = None,
        max_action_chars: int = DEFAULT_MAX_ACTION_CHARS,
        render_mode: str | None = None,
    ):
        split = split or self.splits[-1]
        if split not in self.splits:
            raise ValueError(f"{type(self).__name__}: unknown split {split!r}; known: {list(self.splits)}")
        self.split = split
        self.expert = expert
        self.max_episode_steps = max_episode_steps
        self.max_action_chars = max_action_chars
        self.render_mode = render_mode
        self.observation_space = UnicodeText(MAX_OBSERVATION_CHARS)
        self.action_space = UnicodeText(max_action_chars, min_length=1)
        self._task_id: str | None = None
        self._episode_split = split
        self._steps = 0
        self._last_obs = ""
        self._last_info: dict[str, Any] = {}
        self._done = False

    # -- what a family implements -------------------------------------------------------------
    def tasks(self, split: str | None = None) -> list[str]:
        """The task ids of ``split`` (default: this env's split), deterministic and ordered."""
        raise NotImplementedError

    def _load(self, task_id: str, split: str) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def _act(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        raise NotImplementedError

    # -- the gymnasium API --------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        split = options.pop("split", None) or self.split
        if split not in self.splits:
            raise ValueError(f"{type(self).__name__}: unknown split {split!r}; known: {list(self.splits)}")
        task_id = options.pop("task_id", None)
        if task_id is None:
            ids = self.tasks(split)
            if not ids:
                raise RuntimeError(f"{type(self).__name__}: split {split!r} has no tasks")
            task_id = ids[int(self.np_random.integers(len(ids)))]
        self._task_id, self._episode_split = str(task_id), split
        self._steps, self._done = 0, False
        obs, info = self._load(self._task_id, split)
        self._last_obs = obs
        return obs, self._complete(info, action_valid=True)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._task_id is None:
            raise gymnasium.error.ResetNeeded("Call reset() before step().")
        self._steps += 1
        problem = action_problem(action, self.max_action_chars)
        if problem is not None:
            obs, reward, terminated = f"Invalid action: {problem}", 0.0, False
            info = self._complete(dict(self._last_info), action_valid=False)
        else:
            obs, reward, terminated, info = self._act(action)
            info = self._complete(info, action_valid=info.get("action_valid", True))
        self._last_obs = obs
        truncated = not terminated and self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        self._done = bool(terminated or truncated)
        return obs, float(reward), bool(terminated), bool(truncated), info

    def render(self) -> str | None:
        return self._last_obs if self.render_mode == "ansi" else None

    # -- helpers ------------------------------------------------------------------------------
    def _complete(self, info: dict[str, Any], *, action_valid: bool) -> dict[str, Any]:
        """Fill the contract's keys so every family returns the same, typed info."""
        base = {
            "task_id": self._task_id,
            "split": self._episode_split,
            "task": "",
            "admissible_actions": None,
            "won": False,
            "score": 0.0,
            "raw_score": 0.0,
        }
        base.update({k: v for k, v in info.items() if k not in ("action_valid", "step")})
        base["won"] = bool(base["won"])
        base["score"] = float(np.clip(base["score"], 0.0, 1.0))
        base["raw_score"] = float(base["raw_score"])
        base["action_valid"] = bool(action_valid)
        base["step"] = self._steps
        if not self.expert:
            base.pop("expert_action", None)
        self._last_info = base
        return dict(base)
