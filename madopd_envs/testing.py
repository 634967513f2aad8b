"""The conformance suite every environment must pass: ``check_text_env(env)``.

It runs gymnasium's ``check_env`` and then the text-specific promises of the contract
(``madopd_envs.core``): seeded determinism, garbage actions answered in words, the typed info
contract, task enumeration per split, and a close that is idempotent and leaves no child process.
Raises ``AssertionError`` with the reason on the first broken promise.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from gymnasium.utils.env_checker import check_env

from madopd_envs.core import INFO_TYPES, TextEnv

GARBAGE_ACTIONS = {
    "empty": "",
    "blank": "   \n\t ",
    "control": "\x00\x07 go \x1b[31m",
    "huge": "x" * 100_000,
    "non_ascii": "prenez la pomme \u00e0 c\u00f4t\u00e9 \u2603 \U0001f34e",
}


def check_info(info: dict[str, Any], *, expert: bool, where: str) -> None:
    """Assert ``info`` carries the contract's keys with the contract's types."""
    for key, types in INFO_TYPES.items():
        assert key in info, f"{where}: info lacks {key!r}"
        assert isinstance(info[key], types), f"{where}: info[{key!r}] is {type(info[key]).__name__}"
    assert 0.0 <= info["score"] <= 1.0, f"{where}: score {info['score']} outside [0, 1]"
    if info["admissible_actions"] is not None:
        assert all(isinstance(a, str) for a in info["admissible_actions"]), f"{where}: admissible actions not str"
    if not expert:
        assert "expert_action" not in info, f"{where}: expert_action leaked without expert=True"


def child_pids() -> set[int]:
    """Live (non-zombie) descendants of this process."""
    import psutil

    return {p.pid for p in psutil.Process(os.getpid()).children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


def _probe_actions(env: TextEnv, info: dict[str, Any], n: int) -> list[str]:
    """A short, deterministic action sequence: expert actions when exposed, else admissible ones."""
    actions = []
    if info.get("expert_action"):
        actions.append(info["expert_action"])
    if info["admissible_actions"]:
        actions += sorted(info["admissible_actions"])[:n]
    return (actions or ["look"])[:n]


def _trace(env: TextEnv, seed: int, actions: list[str], options: dict | None = None) -> list[Any]:
    obs, info = env.reset(seed=seed, options=options)
    trace: list[Any] = [obs, info]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        trace.append((obs, r, term, trunc, info))
        if term or trunc:
            break
    return trace


def check_text_env(env: TextEnv, *, seed: int = 0, n_steps: int = 3, run_gymnasium_checker: bool = True) -> None:
    """Check ``env`` against the TextEnv contract; closes it at the end.

    The env should be freshly made (its child processes, if any, are counted from before the
    first reset of this check, so make it inside the check's caller and pass it straight in).
    """
    assert isinstance(env, TextEnv), f"{type(env).__name__} is not a madopd_envs.core.TextEnv"
    name = type(env).__name__
    children_before = child_pids()

    # gymnasium's own checker: spaces, reset/step signatures, seeding, determinism.
    if run_gymnasium_checker:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_env(env, skip_render_check=True)

    # Tasks: every split enumerates, deterministically, as strings.
    for split in env.splits:
        ids = env.tasks(split)
        assert isinstance(ids, list) and all(isinstance(t, str) for t in ids), f"{name}.tasks({split!r}) not list[str]"
        assert ids == env.tasks(split), f"{name}.tasks({split!r}) is not deterministic"
    assert env.tasks(env.split), f"{name}: split {env.split!r} has no tasks"

    # Reset: the info contract, and options select the task and split.
    obs, info = env.reset(seed=seed)
    assert isinstance(obs, str) and obs, f"{name}.reset returned an empty observation"
    check_info(info, expert=env.expert, where=f"{name}.reset")
    assert info["step"] == 0 and info["split"] == env.split
    first = env.tasks(env.split)[0]
    _, info = env.reset(seed=seed, options={"task_id": first})
    assert info["task_id"] == first, f"{name}: options['task_id'] was not honoured"

    # Determinism: the same seed and actions give the same trace.
    actions = _probe_actions(env, env.reset(seed=seed)[1], n_steps)
    trace_a = _trace(env, seed, actions)
    trace_b = _trace(env, seed, actions)
    assert trace_a == trace_b, f"{name}: same seed and actions gave different traces"
    for t in trace_a[2:]:
        check_info(t[4], expert=env.expert, where=f"{name}.step")

    # Garbage actions: answered in words, marked invalid, never raise; the episode goes on.
    env.reset(seed=seed)
    for label, action in GARBAGE_ACTIONS.items():
        if label == "non_ascii" and env.open_ended:
            continue  # code envs accept any text; it fails as code, not as an action
        obs, reward, term, trunc, info = env.step(action)
        assert isinstance(obs, str) and obs, f"{name}: {label} action got no answer in words"
        assert info["action_valid"] is False, f"{name}: {label} action was marked valid"
        check_info(info, expert=env.expert, where=f"{name}.step({label})")
        if term or trunc:
            env.reset(seed=seed)
    for _ in range(3):
        env.step(env.action_space.sample())  # random printable strings, tabs included

    # Close: idempotent, and no child process left behind.
    env.close()
    env.close()
    leftover = child_pids() - children_before
    assert not leftover, f"{name}.close() left child processes: {sorted(leftover)}"
