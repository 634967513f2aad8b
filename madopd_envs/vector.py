"""Isolated, batched environments: one worker process per env.

ALFWorld is not thread-safe and leaks; the JVM engines crash. So every env of a ``TextVectorEnv``
lives in its own process (and process group, so an engine's JVM dies with its worker). A step that
outlives ``step_timeout`` or a worker that dies is reported as an *errored* episode with its cause
-- never silently lost -- and the worker is restarted; the rest of the batch goes on.

Batches are lists of text. Unlike gymnasium's ``VectorEnv`` there is no autoreset: multi-turn
agents finish episodes at different turns, so callers reset the envs they choose (``indices``) and
pass ``None`` as the action of an env that should sit a step out.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

_CTX = mp.get_context("spawn")  # fork would copy torch/JVM state of the parent into every worker


class WorkerError(RuntimeError):
    pass


def _watch_parent(parent_pid: int) -> None:
    """If the parent dies (even by SIGKILL), take this worker's whole process group down."""
    while True:
        if os.getppid() != parent_pid:
            os.killpg(0, signal.SIGKILL)
        time.sleep(0.5)


def _worker(conn, env_id: str, env_kwargs: dict, parent_pid: int) -> None:
    os.setpgrp()  # own group: a JVM the engine starts is killed with this worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    from madopd_envs.registry import make

    env = None
    try:
        env = make(env_id, **env_kwargs)
        conn.send(("ok", None))
        while True:
            cmd, args = conn.recv()
            if cmd == "close":
                break
            try:
                if cmd == "reset":
                    result = env.reset(**args)
                elif cmd == "step":
                    result = env.step(args)
                else:  # "call": a method of the env, e.g. tasks(split)
                    name, a, kw = args
                    result = getattr(env, name)(*a, **kw)
                conn.send(("ok", result))
            except Exception as e:  # the env's failure travels to the caller, the worker lives on
                conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}"))
    except (EOFError, KeyboardInterrupt):
        pass
    except Exception as e:
        try:
            conn.send(("error", f"{type(e).__name__}: {e}"))
        except Exception:
            pass
    finally:
        if env is not None:
            env.close()
        conn.close()


def _start_ignoring_sigint(process: Any) -> None:
    """Start ``process`` with SIGINT ignored from its first instruction.

    Ctrl-C signals the terminal's whole process group: a worker still starting (importing) would print a
    KeyboardInterrupt traceback. An ignored signal stays ignored across exec, and Python then installs no
    handler. The parent blocks SIGINT meanwhile (a blocked signal stays pending on Linux even while
    ignored), so its own Ctrl-C is delivered as soon as its handler is back.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        process.start()
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


@dataclass
class _Worker:
    process: Any
    conn: Any
    episodes: int = 0

    def kill(self) -> None:
        """Kill the worker's process group (the worker and any engine it started)."""
        if self.process.pid is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):  # not yet its own group leader
                if self.process.is_alive():
                    self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


def default_recycle_after(env_id: str) -> int | None:
    """The ``recycle_after`` class attribute of ``env_id``'s env class (engines that leak per game set
    it), else ``None``. Importing an env module is cheap: engines load lazily."""
    from madopd_envs.registry import _resolve, spec

    try:
        cls = _resolve(spec(env_id).entry_point)
    except Exception:  # unknown id or a broken plugin: the worker's make() reports it in words
        return None
    value = getattr(cls, "recycle_after", None)
    return value if isinstance(value, int) else None


class TextVectorEnv:
    """``num_envs`` copies of a registered env, each in its own worker process.

    Args:
        env_id: a registered id, e.g. ``"madopd/TWX-CookingWorld-v0"``.
        num_envs: number of worker processes.
        group_size: consecutive envs form groups that play the *same* task from the same seed (as
            GRPO/OPD groups need); ``num_envs`` must be a multiple of it.
        step_timeout: seconds a step or reset may take before the worker is declared hung.
        recycle_after: restart a worker after this many episodes (engines that leak); ``None``: never;
            ``"auto"`` (default): the env class's ``recycle_after`` (ALFWorld sets one), else never.
        env_kwargs: passed to ``make`` in every worker.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        *,
        group_size: int = 1,
        step_timeout: float = 60.0,
        start_timeout: float = 300.0,
        recycle_after: int | None | str = "auto",
        **env_kwargs: Any,
    ):
        if recycle_after == "auto":
            recycle_after = default_recycle_after(env_id)
        if num_envs < 1 or num_envs % group_size:
            raise ValueError(f"num_envs ({num_envs}) must be a positive multiple of group_size ({group_size})")
        self.env_id, self.num_envs, self.group_size = env_id, num_envs, group_size
        self.step_timeout, self.start_timeout, self.recycle_after = step_timeout, start_timeout, recycle_after
        self.env_kwargs = env_kwargs
        self.closed = False
        self._workers: list[_Worker | None] = [None] * num_envs
        try:
            for i in range(num_envs):
                self._workers[i] = self._spawn()
            for i in range(num_envs):
                self._expect(i, self.start_timeout, "start")
        except BaseException:
            self.close()
            raise

    # -- workers --------------------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        parent, child = _CTX.Pipe()
        p = _CTX.Process(target=_worker, args=(child, self.env_id, self.env_kwargs, os.getpid()), daemon=True)
        _start_ignoring_sigint(p)
        child.close()
        return _Worker(p, parent)

    def _expect(self, i: int, timeout: float, what: str) -> Any:
        w = self._workers[i]
        if not w.conn.poll(timeout):
            raise WorkerError(f"env {i} ({self.env_id}) hung: no answer to {what} within {timeout:.0f} s")
        try:
            status, payload = w.conn.recv()
        except (EOFError, OSError) as e:
            raise WorkerError(f"env {i} ({self.env_id}) worker died during {what} (exit code {w.process.exitcode})") from e
        if status == "error":
            raise WorkerError(f"env {i} ({self.env_id}) failed during {what}: {payload}")
        return payload

    def restart(self, i: int) -> None:
        """Replace worker ``i`` by a fresh one (its episode is lost; callers report it)."""
        self._workers[i].kill()
        self._workers[i] = self._spawn()
        self._expect(i, self.start_timeout, "restart")

    def _send(self, i: int, cmd: str, args: Any) -> bool:
        try:
            self._workers[i].conn.send((cmd, args))
            return True
        except (BrokenPipeError, OSError):
            return False

    def _gather(self, indices: Sequence[int], cmd: str, args: Sequence[Any]) -> list[tuple[Any, str | None]]:
        """Send ``cmd`` to each worker, then collect; a dead or hung worker yields (None, cause)."""
        sent = {i: self._send(i, cmd, a) for i, a in zip(indices, args)}
        out = []
        deadline = time.monotonic() + self.step_timeout
        for i in indices:
            try:
                if not sent[i]:
                    raise WorkerError(f"env {i} ({self.env_id}) worker died (exit code {self._workers[i].process.exitcode})")
                out.append((self._expect(i, max(0.0, deadline - time.monotonic()), cmd), None))
            except WorkerError as e:
                out.append((None, str(e)))
                if "failed during" not in str(e):  # dead or hung: the process is gone or useless
                    self.restart(i)
        return out

    # -- the batched API ------------------------------------------------------------------------
    def reset(
        self,
        *,
        seed: int | Sequence[int] | None = None,
        options: dict | Sequence[dict | None] | None = None,
        indices: Sequence[int] | None = None,
    ) -> tuple[list[str | None], list[dict]]:
        """Reset the envs in ``indices`` (default: all).

        With ``seed``, env ``i`` gets seed ``seed + i // group_size``: members of a group play the
        same task; a sequence gives each index its own seed (evals replaying planned episodes).
        ``options`` is one dict for all or one per index (e.g. ``{"task_id": ...}``).
        An env whose reset failed returns ``None`` and ``info["error"]``.
        """
        indices = list(range(self.num_envs)) if indices is None else list(indices)
        if options is None or isinstance(options, dict):
            options = [options] * len(indices)
        args = []
        seeds = list(seed) if isinstance(seed, (list, tuple)) else None
        if seeds is not None and len(seeds) != len(indices):
            raise ValueError(f"got {len(seeds)} seeds for {len(indices)} envs")
        for k, (i, opt) in enumerate(zip(indices, options)):
            w = self._workers[i]
            if self.recycle_after and w.episodes >= self.recycle_after:
                self.restart(i)
            self._workers[i].episodes += 1
            env_seed = seeds[k] if seeds is not None else None if seed is None else seed + i // self.group_size
            args.append({"seed": env_seed, "options": opt})
        results = self._gather(indices, "reset", args)
        obs, infos = [], []
        for result, error in results:
            obs.append(None if error else result[0])
            infos.append({"error": error} if error else result[1])
        return obs, infos

    def step(self, actions: Sequence[str | None]) -> tuple[list, np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        """Step every env whose action is not ``None``.

        A worker that died or hung mid-step is restarted; its entry has ``truncated=True`` and
        ``info["error"]`` naming the cause, so the caller can report the episode as errored.
        """
        if len(actions) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got {len(actions)}")
        active = [i for i, a in enumerate(actions) if a is not None]
        obs: list[str | None] = [None] * self.num_envs
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos: list[dict] = [{} for _ in range(self.num_envs)]
        for i, (result, error) in zip(active, self._gather(active, "step", [actions[i] for i in active])):
            if error:
                obs[i], truncated[i], infos[i] = "", True, {"error": error}
            else:
                obs[i], rewards[i], terminated[i], truncated[i], infos[i] = result
        return obs, rewards, terminated, truncated, infos

    def call(self, name: str, *args: Any, indices: Sequence[int] | None = None, **kwargs: Any) -> list[Any]:
        """Call an env method in each worker, e.g. ``call("tasks", "test")``."""
        indices = list(range(self.num_envs)) if indices is None else list(indices)
        results = self._gather(indices, "call", [(name, args, kwargs)] * len(indices))
        for result, error in results:
            if error:
                raise WorkerError(error)
        return [r for r, _ in results]

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    def close(self) -> None:
        """Stop every worker (politely, then by force); idempotent."""
        if self.closed:
            return
        self.closed = True
        for w in self._workers:
            if w is not None and w.process.is_alive():
                try:
                    w.conn.send(("close", None))
                except (BrokenPipeError, OSError):
                    pass
        for w in self._workers:
            if w is not None:
                w.process.join(timeout=10)
                w.kill()

    def __enter__(self) -> TextVectorEnv:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "closed", True):
            self.close()


BACKENDS = ("process", "ray")


def make_vec(env_id: str, num_envs: int = 1, *, group_size: int = 1, backend: str = "process",
             **kwargs: Any) -> TextVectorEnv:
    """``num_envs`` isolated copies of ``env_id``; see :class:`TextVectorEnv`.

    ``backend="ray"``: each env is a Ray actor (:class:`madopd_envs.vector_ray.RayVectorEnv`, which also
    takes ``ray_address`` and ``cpus_per_env``), with the same semantics as the local processes.
    """
    if backend == "ray":
        from madopd_envs.vector_ray import RayVectorEnv

        return RayVectorEnv(env_id, num_envs, group_size=group_size, **kwargs)
    if backend != "process":
        raise ValueError(f"unknown env backend {backend!r}; known: {', '.join(BACKENDS)}")
    return TextVectorEnv(env_id, num_envs, group_size=group_size, **kwargs)
