"""The conformance suite every environment must pass: ``check_text_env(env)``.

It runs gymnasium's ``check_env`` and then the text-specific promises of the contract
(``madopd_envs.core``): seeded determinism, garbage actions answered in words, the typed info
contract, task enumeration per split, and a close that is idempotent and leaves no child process.
``run_checks`` reports every check with its detail (``python -m madopd_envs check`` prints them);
``check_text_env`` raises ``AssertionError`` naming the failed ones (for test suites).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

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


def _first_difference(a: list[Any], b: list[Any], actions: list[str]) -> str:
    """Where two traces of the same seed and actions part: the step, the action and what differs."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x == y:
            continue
        if i == 0:
            return f"reset(seed) observation differs: {_short(x)} vs {_short(y)}"
        if i == 1:
            keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
            return f"reset(seed) info differs in {keys}"
        step, action = i - 1, actions[i - 2]
        parts = [name for name, u, v in zip(("observation", "reward", "terminated", "truncated"), x, y) if u != v]
        keys = sorted(k for k in set(x[4]) | set(y[4]) if x[4].get(k) != y[4].get(k))
        parts += [f"info {keys}"] if keys else []
        return f"step {step} (action {_short(action)}) differs in {', '.join(parts)}"
    return f"the traces have different lengths ({len(a)} vs {len(b)} entries)"


def _short(x: Any, n: int = 60) -> str:
    r = repr(x)
    return r if len(r) <= n else r[: n - 3] + "..."


@dataclass
class CheckResult:
    """One conformance check: its name, whether it passed, and what a maintainer needs to fix it."""

    name: str
    passed: bool
    detail: str
    seconds: float = 0.0


def describe_error(e: BaseException) -> str:
    """An assertion's message, or the exception with the innermost frame that raised it."""
    if isinstance(e, AssertionError) and str(e):
        return str(e)
    import traceback

    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {tb[-1].filename}:{tb[-1].lineno} in {tb[-1].name})" if tb else ""
    return f"raised {type(e).__name__}: {' '.join(str(e).split())}{where}"


def run_checks(env: Any, *, seed: int = 0, n_steps: int = 3, run_gymnasium_checker: bool = True) -> list[CheckResult]:
    """Run every check of the TextEnv contract on ``env``, each on its own; closes the env at the end.

    The env should be freshly made (its child processes, if any, are counted from before the
    first reset of this check, so make it inside the check's caller and pass it straight in).
    A check that raises fails with the exception and the line that raised; later checks still run
    (on the same env), except that nothing runs on an object that is not a ``TextEnv``.
    """
    name = type(env).__name__
    children_before = child_pids()
    results: list[CheckResult] = []

    def run(check: str, fn: Callable[[], str]) -> None:
        start = time.perf_counter()
        try:
            results.append(CheckResult(check, True, fn(), time.perf_counter() - start))
        except Exception as e:  # noqa: BLE001 -- the point is to report whatever the env raises
            results.append(CheckResult(check, False, describe_error(e), time.perf_counter() - start))

    def is_text_env() -> str:
        assert isinstance(env, TextEnv), f"{name} is not a madopd_envs.core.TextEnv subclass"
        return f"{name} is a TextEnv (family {env.family!r}, splits {list(env.splits)})"

    run("text_env", is_text_env)
    if not results[-1].passed:
        return results

    def gymnasium_checker() -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_env(env, skip_render_check=True)
        return "gymnasium.utils.env_checker.check_env passed (spaces, reset/step signatures, seeding)"

    def tasks() -> str:
        sizes = {}
        for split in env.splits:
            ids = env.tasks(split)
            assert isinstance(ids, list) and all(isinstance(t, str) for t in ids), \
                f"{name}.tasks({split!r}) is not a list of str"
            assert ids == env.tasks(split), f"{name}.tasks({split!r}) is not deterministic"
            sizes[split] = len(ids)
        assert env.tasks(env.split), f"{name}: split {env.split!r} has no tasks"
        return f"task ids are deterministic lists of str: {sizes}"

    def reset() -> str:
        obs, info = env.reset(seed=seed)
        assert isinstance(obs, str) and obs, f"{name}.reset returned {_short(obs)}, not a non-empty str"
        check_info(info, expert=env.expert, where=f"{name}.reset")
        assert info["step"] == 0, f"{name}.reset: info['step'] is {info['step']}, not 0"
        assert info["split"] == env.split, f"{name}.reset: info['split'] is {info['split']!r}, not {env.split!r}"
        return "reset(seed) gives a non-empty observation and the typed info contract"

    def task_option() -> str:
        first = env.tasks(env.split)[0]
        _, info = env.reset(seed=seed, options={"task_id": first})
        assert info["task_id"] == first, f"{name}: reset(options={{'task_id': {first!r}}}) played {info['task_id']!r}"
        return f"options['task_id'] selects the task ({first!r})"

    def determinism() -> str:
        actions = _probe_actions(env, env.reset(seed=seed)[1], n_steps)
        trace_a = _trace(env, seed, actions)
        trace_b = _trace(env, seed, actions)
        if trace_a != trace_b:
            raise AssertionError(f"{name} is not deterministic: {_first_difference(trace_a, trace_b, actions)}")
        for i, t in enumerate(trace_a[2:], start=1):
            check_info(t[4], expert=env.expert, where=f"{name}.step {i} (action {_short(actions[i - 1])})")
        return f"the same seed and {len(actions)} actions replay identically; step infos keep the contract"

    def garbage_actions() -> str:
        env.reset(seed=seed)
        tried = []
        for label, action in GARBAGE_ACTIONS.items():
            if label == "non_ascii" and env.open_ended:
                continue  # code envs accept any text; it fails as code, not as an action
            where = f"{name}.step({label} action {_short(action, 30)})"
            try:
                obs, reward, term, trunc, info = env.step(action)
            except Exception as e:
                raise AssertionError(f"{where} {describe_error(e)}") from e
            assert isinstance(obs, str) and obs, f"{where} got no answer in words"
            assert info["action_valid"] is False, f"{where} was marked valid"
            check_info(info, expert=env.expert, where=where)
            tried.append(label)
            if term or trunc:
                env.reset(seed=seed)
        return f"answered in words and marked invalid: {', '.join(tried)}"

    def random_actions() -> str:
        for _ in range(3):
            action = env.action_space.sample()  # random printable strings, tabs included
            try:
                _, _, term, trunc, _ = env.step(action)
            except Exception as e:
                raise AssertionError(f"{name}.step({_short(action, 30)}) from action_space.sample() "
                                     f"{describe_error(e)}") from e
            if term or trunc:
                env.reset(seed=seed)
        return "3 actions from action_space.sample() answered"

    def close() -> str:
        env.close()
        env.close()
        leftover = child_pids() - children_before
        assert not leftover, f"{name}.close() left child processes: {sorted(leftover)}"
        return "close() is idempotent and leaves no child process"

    if run_gymnasium_checker:
        run("gymnasium_checker", gymnasium_checker)
    for check, fn in (("tasks", tasks), ("reset", reset), ("task_option", task_option), ("determinism", determinism),
                      ("garbage_actions", garbage_actions), ("random_actions", random_actions), ("close", close)):
        run(check, fn)
    return results


def check_text_env(env: TextEnv, *, seed: int = 0, n_steps: int = 3, run_gymnasium_checker: bool = True) -> None:
    """Check ``env`` against the TextEnv contract; closes it at the end.

    Raises ``AssertionError`` naming every failed check with its detail (see :func:`run_checks`).
    """
    failed = [r for r in run_checks(env, seed=seed, n_steps=n_steps, run_gymnasium_checker=run_gymnasium_checker)
              if not r.passed]
    assert not failed, "; ".join(f"{r.name}: {r.detail}" for r in failed)
