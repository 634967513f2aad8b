"""Isolated, batched environments: one worker process per env (or per few envs).

ALFWorld is not thread-safe and leaks; the JVM engines crash. So every env of a ``TextVectorEnv``
lives in a worker process of its own (and process group, so an engine's JVM dies with its worker). A
step that outlives ``step_timeout`` or a worker that dies is reported as an *errored* episode with its
cause -- never silently lost -- and the worker is restarted; the rest of the batch goes on.

Each batched call sends one message per worker. With ``envs_per_worker=k`` a worker hosts k envs and
steps them one after another, so the round trip (pickling, the pipe, the worker's wake-up) is paid
once per k env steps: for engines whose steps take about a millisecond that round trip is the
isolation's whole cost. The price: a worker that dies or hangs takes its k episodes with it.

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


def _serve(env: Any, cmd: str, args: Any) -> tuple[str, Any]:
    """One request to one env; the env's failure travels to the caller, the worker lives on."""
    try:
        if cmd == "reset":
            return "ok", env.reset(**args)
        if cmd == "step":
            return "ok", env.step(args)
        name, a, kw = args  # "call": a method of the env, e.g. tasks(split)
        return "ok", getattr(env, name)(*a, **kw)
    except Exception as e:
        return "error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}"


def _worker(conn, env_id: str, env_kwargs: dict, parent_pid: int, num_envs: int = 1) -> None:
    """Host ``num_envs`` envs; each message is a list of ``(slot, cmd, args)``, answered by one list."""
    os.setpgrp()  # own group: a JVM the engine starts is killed with this worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    from madopd_envs.registry import make

    envs: list[Any] = []
    try:
        for _ in range(num_envs):
            envs.append(make(env_id, **env_kwargs))
        conn.send(("ok", None))
        while True:
            requests = conn.recv()
            if requests == "close":
                break
            conn.send(("ok", [_serve(envs[slot], cmd, args) for slot, cmd, args in requests]))
    except (EOFError, KeyboardInterrupt):
        pass
    except Exception as e:
        try:
            conn.send(("error", f"{type(e).__name__}: {e}"))
        except Exception:
            pass
    finally:
        for env in envs:
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
    """``num_envs`` copies of a registered env, in worker processes.

    Args:
        env_id: a registered id, e.g. ``"madopd/TWX-CookingWorld-v0"``.
        num_envs: number of envs.
        group_size: consecutive envs form groups that play the *same* task from the same seed (as
            GRPO/OPD groups need); ``num_envs`` must be a multiple of it.
        envs_per_worker: envs hosted by one worker process (1: full isolation). With more, one
            message per worker carries each batched call (see the module docstring).
        step_timeout: seconds a step or reset may take before the worker is declared hung.
        recycle_after: restart a worker after this many episodes per env (engines that leak); ``None``:
            never; ``"auto"`` (default): the env class's ``recycle_after`` (ALFWorld sets one), else never.
            A worker hosting several envs is recycled at a reset of all of them (no episode in flight).
        env_kwargs: passed to ``make`` in every worker.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        *,
        group_size: int = 1,
        envs_per_worker: int = 1,
        step_timeout: float = 60.0,
        start_timeout: float = 300.0,
        recycle_after: int | None | str = "auto",
        **env_kwargs: Any,
    ):
        if recycle_after == "auto":
            recycle_after = default_recycle_after(env_id)
        if num_envs < 1 or num_envs % group_size:
            raise ValueError(f"num_envs ({num_envs}) must be a positive multiple of group_size ({group_size})")
        if envs_per_worker < 1:
            raise ValueError(f"envs_per_worker must be >= 1, got {envs_per_worker}")
        self.env_id, self.num_envs, self.group_size = env_id, num_envs, group_size
        self.per_worker = envs_per_worker
        self.step_timeout, self.start_timeout, self.recycle_after = step_timeout, start_timeout, recycle_after
        self.env_kwargs = env_kwargs
        self.closed = False
        self._lost: dict[int, str] = {}  # env -> why its episode is gone (a sibling's worker restart)
        self._workers: list[_Worker | None] = [None] * -(-num_envs // envs_per_worker)
        try:
            for w in range(len(self._workers)):
                self._workers[w] = self._spawn(w)
            for w in range(len(self._workers)):
                self._expect(w, self.start_timeout, "start")
        except BaseException:
            self.close()
            raise

    # -- workers --------------------------------------------------------------------------------
    def _envs_of(self, w: int) -> range:
        return range(w * self.per_worker, min((w + 1) * self.per_worker, self.num_envs))

    def _name(self, w: int) -> str:
        envs = self._envs_of(w)
        return f"env {envs[0]}" if len(envs) == 1 else f"envs {envs[0]}-{envs[-1]}"

    def _spawn(self, w: int) -> _Worker:
        parent, child = _CTX.Pipe()
        p = _CTX.Process(target=_worker, args=(child, self.env_id, self.env_kwargs, os.getpid(), len(self._envs_of(w))),
                         daemon=True)
        _start_ignoring_sigint(p)
        child.close()
        return _Worker(p, parent)

    def _expect(self, w: int, timeout: float, what: str) -> Any:
        worker, name = self._workers[w], self._name(w)
        if not worker.conn.poll(timeout):
            raise WorkerError(f"{name} ({self.env_id}) hung: no answer to {what} within {timeout:.0f} s")
        try:
            status, payload = worker.conn.recv()
        except (EOFError, OSError) as e:
            raise WorkerError(f"{name} ({self.env_id}) worker died during {what} "
                              f"(exit code {worker.process.exitcode})") from e
        if status == "error":
            raise WorkerError(f"{name} ({self.env_id}) failed during {what}: {payload}")
        return payload

    def _restart_worker(self, w: int, cause: str, spared: Sequence[int] = ()) -> None:
        """Replace worker ``w``; the episodes of its envs not in ``spared`` are lost (said on their next step)."""
        self._workers[w].kill()
        self._workers[w] = self._spawn(w)
        for i in self._envs_of(w):
            if i not in spared:
                self._lost[i] = f"env {i} ({self.env_id}) lost its episode: its worker was restarted ({cause})"
        self._expect(w, self.start_timeout, "restart")

    def restart(self, i: int) -> None:
        """Replace env ``i``'s worker by a fresh one (its episode is lost; callers report it)."""
        self._restart_worker(i // self.per_worker, f"restart of env {i}", spared=[i])

    def _send(self, w: int, requests: list) -> bool:
        try:
            self._workers[w].conn.send(requests)
            return True
        except (BrokenPipeError, OSError):
            return False

    def _gather(self, indices: Sequence[int], cmd: str, args: Sequence[Any]) -> list[tuple[Any, str | None]]:
        """One message per worker, then collect; a dead or hung worker yields (None, cause) for its envs."""
        results: dict[int, tuple[Any, str | None]] = {}
        batches: dict[int, list[int]] = {}
        for i, a in zip(indices, args):
            if cmd == "step" and i in self._lost:
                results[i] = (None, self._lost.pop(i))
            else:
                batches.setdefault(i // self.per_worker, []).append(i)
        arg_of = dict(zip(indices, args))
        sent = {w: self._send(w, [(i % self.per_worker, cmd, arg_of[i]) for i in envs]) for w, envs in batches.items()}
        deadline = time.monotonic() + self.step_timeout
        for w, envs in batches.items():
            try:
                if not sent[w]:
                    raise WorkerError(f"{self._name(w)} ({self.env_id}) worker died "
                                      f"(exit code {self._workers[w].process.exitcode})")
                replies = self._expect(w, max(0.0, deadline - time.monotonic()), cmd)
            except WorkerError as e:  # dead or hung: the process is gone or useless
                results.update((i, (None, str(e))) for i in envs)
                self._restart_worker(w, str(e).split(":")[0], spared=envs)
                continue
            for i, (status, payload) in zip(envs, replies):
                results[i] = (payload, None) if status == "ok" else \
                    (None, f"env {i} ({self.env_id}) failed during {cmd}: {payload}")
        return [results[i] for i in indices]

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
        resetting = set(indices)
        for w, worker in enumerate(self._workers):  # recycle only a worker none of whose episodes is in flight
            envs = self._envs_of(w)
            if self.recycle_after and worker.episodes >= self.recycle_after * len(envs) and resetting >= set(envs):
                self._restart_worker(w, "recycled", spared=envs)
        for k, (i, opt) in enumerate(zip(indices, options)):
            self._workers[i // self.per_worker].episodes += 1
            self._lost.pop(i, None)
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
        """The worker process of each env (envs sharing a worker share its pid)."""
        return [self._workers[i // self.per_worker].process.pid for i in range(self.num_envs)]

    def close(self) -> None:
        """Stop every worker (politely, then by force); idempotent."""
        if self.closed:
            return
        self.closed = True
        for w in self._workers:
            if w is not None and w.process.is_alive():
                try:
                    w.conn.send("close")
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

        if kwargs.pop("envs_per_worker", 1) != 1:
            raise ValueError("envs_per_worker is for process workers: each Ray actor hosts one env")

        return RayVectorEnv(env_id, num_envs, group_size=group_size, **kwargs)
    if backend != "process":
        raise ValueError(f"unknown env backend {backend!r}; known: {', '.join(BACKENDS)}")
    return TextVectorEnv(env_id, num_envs, group_size=group_size, **kwargs)
