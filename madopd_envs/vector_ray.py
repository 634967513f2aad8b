"""Environment workers as Ray actors: ``make_vec(..., backend="ray")``.

The process workers of :mod:`madopd_envs.vector` stop at one machine. Here every env is a Ray actor
with its own CPU reservation (``cpus_per_env``), spread over the cluster (``ray_address``: a running
cluster; none: a private local cluster that this process starts and stops). Placement, transport and
node management are Ray's; this module only keeps the semantics of the process workers, so callers
cannot tell the backends apart:

- group seeding, ``indices``, ``None`` actions, recycling: inherited from :class:`TextVectorEnv`;
- a step that outlives ``step_timeout`` (``ray.wait``), or an actor whose process died, gives that
  env an *errored* entry (``info["error"]`` with the cause) and a fresh actor; the batch goes on;
- an engine's own child processes (the JVMs) die with their actor: each actor leads its own process
  group, watched by a tiny reaper process that kills the group once the actor is gone (SIGKILL, OOM,
  ``ray.kill``), whatever the cluster's own child-process settings;
- ``close()`` (also on Ctrl-C) closes the envs, kills every actor, and stops the local cluster it
  started; actors are owned by this driver, so Ray also removes them if the driver dies.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

from madopd_envs.vector import TextVectorEnv, WorkerError, default_recycle_after


class RayBackendError(RuntimeError):
    """The Ray backend cannot run as asked (Ray missing, cluster unreachable, too few CPUs)."""


def import_ray() -> Any:
    """``ray``, or a one-line :class:`RayBackendError` that says how to install it."""
    try:
        import ray
    except ImportError as e:
        raise RayBackendError("backend 'ray' needs Ray, an optional extra: pip install -c constraints.txt "
                              "'madopd[ray]' (make setup installs it), or use backend 'process'") from e
    return ray


# The reaper: a separate session (so no signal meant for the actor reaches it) that polls the actor's
# pid and kills the actor's process group once the actor is gone. Polling, like _watch_parent in
# vector.py: a dead process cannot run cleanup code of its own.
_REAPER = """
import os, signal, sys, time
pid = int(sys.argv[1])
while True:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                raise ProcessLookupError
    except (ProcessLookupError, FileNotFoundError):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        sys.exit(0)
    time.sleep(0.5)
"""


class EnvActor:
    """One env inside a Ray actor process (wrapped with ``ray.remote`` at spawn time)."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any]):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        self.reaper = None
        try:  # own group, out of the terminal's: Ctrl-C is the driver's to handle, as for process workers
            os.setpgrp()
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self.reaper = subprocess.Popen([sys.executable, "-c", _REAPER, str(os.getpid())], start_new_session=True,
                                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
        except (OSError, ValueError):  # not allowed here (or not the main thread): Ray's own cleanup applies
            pass
        from madopd_envs.registry import make

        self.env = make(env_id, **env_kwargs)

    def where(self) -> dict[str, Any]:
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}

    def reset(self, args: dict[str, Any]) -> Any:
        return self.env.reset(**args)

    def step(self, action: str) -> Any:
        return self.env.step(action)

    def call(self, args: tuple[str, tuple, dict]) -> Any:
        name, a, kw = args
        return getattr(self.env, name)(*a, **kw)

    def close(self) -> None:
        self.env.close()
        if self.reaper is not None:
            self.reaper.kill()
            self.reaper.wait()


@dataclass
class _Actor:
    handle: Any
    ready: Any  # ObjectRef of where(): the actor is placed and its env made
    pid: int | None = None
    node: str | None = None
    episodes: int = 0

    def kill(self) -> None:
        import ray

        try:
            ray.kill(self.handle, no_restart=True)
        except Exception:  # already dead, or the cluster is gone: nothing left to kill
            pass


LOOPBACK = "127.0.0.2"  # a loopback address Ray does not rewrite to the host's network address

# Local clusters this process started (ray.init(address="local")), shut down with their last user.
_LOCAL = {"users": 0, "owned": False}


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, in one line, where ``ray.init`` would retry for a minute."""
    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise RayBackendError(f"cannot reach a Ray cluster at {address} ({e}); start one with `ray start --head "
                              f"--port=PORT`, or give no address for a local cluster") from e


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the cluster at ``address`` (``host:port``, ``auto``), or start a small local one.

    Returns True when this call started a local cluster (the caller then shuts it down). A process
    already connected to Ray keeps its connection.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:
        _check_reachable(address)
        host = address.rpartition(":")[0]
        if host.startswith("127.") and host != "127.0.0.1":
            kwargs["_node_ip_address"] = host  # this driver's node stays on the loopback address it was given
        try:
            ray.init(address=address, **kwargs)
        except Exception as e:
            chain, c = [], e
            while c is not None and len(chain) < 5:
                chain.append(f"{type(c).__name__}: {c}")
                c = c.__cause__ or c.__context__
            hint = ""
            if any("InvalidAuthToken" in x or "AuthenticationError" in x for x in chain):
                hint = ("; the cluster uses token auth: start Python with RAY_AUTH_MODE=token and the cluster's token "
                        "(RAY_AUTH_TOKEN or ~/.ray/auth_token)")
            raise RayBackendError(f"cannot join the Ray cluster at {address}: {str(e).splitlines()[0]}{hint}") from e
        return False
    # A small local cluster: a 100 MB object store (env traffic is a few KB of text per step). Ray maps
    # "127.0.0.1"/"localhost" to the host's network address (services.resolve_ip_for_localhost), not
    # 127.0.0.2; its GCS still advertises the host's address to its own processes (seen with ss), so
    # those connections go to this machine's own interface address, never to another host.
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), object_store_memory=100 * 2**20,
             _node_ip_address=LOOPBACK, **kwargs)
    return True


class RayVectorEnv(TextVectorEnv):
    """``num_envs`` copies of a registered env, each in its own Ray actor (see the module docstring).

    Args (beyond :class:`TextVectorEnv`'s):
        ray_address: a running cluster (``host:port`` of its head, or ``auto``); ``None``: a local
            cluster started here (and stopped by ``close``) unless this process already joined one.
        cpus_per_env: CPUs each actor reserves (fractions allowed: ``0.5`` packs two envs per core);
            ``None``: one each where the cluster has them, else the cluster's CPUs shared evenly (said
            in one line). An explicit value the cluster cannot fit is refused.
        local_cpus: CPUs of the local cluster when one is started (default: this machine's count).
    """

    def __init__(self, env_id: str, num_envs: int, *, group_size: int = 1, step_timeout: float = 60.0,
                 start_timeout: float = 300.0, recycle_after: int | None | str = "auto", ray_address: str | None = None,
                 cpus_per_env: float | None = None, local_cpus: int | None = None, **env_kwargs: Any):
        if recycle_after == "auto":  # as the process workers: the env class's own (ALFWorld leaks per game)
            recycle_after = default_recycle_after(env_id)
        if num_envs < 1 or num_envs % group_size:
            raise ValueError(f"num_envs ({num_envs}) must be a positive multiple of group_size ({group_size})")
        if cpus_per_env is not None and cpus_per_env <= 0:
            raise ValueError(f"cpus_per_env must be > 0, got {cpus_per_env}")
        self.env_id, self.num_envs, self.group_size = env_id, num_envs, group_size
        self.step_timeout, self.start_timeout, self.recycle_after = step_timeout, start_timeout, recycle_after
        self.env_kwargs, self.cpus_per_env = env_kwargs, cpus_per_env
        self.closed = True  # until connected: close() has nothing to undo
        self.per_worker, self._lost = 1, {}  # one env per actor: no sibling loses its episode
        self._workers: list[_Actor | None] = [None] * num_envs
        self._ray = import_ray()
        self._owns_cluster = False
        try:
            owns = connect(ray_address, local_cpus)
            self.closed = False
            if owns:
                _LOCAL["owned"] = True
            _LOCAL["users"] += 1
            self._owns_cluster = _LOCAL["owned"]
            have = self._ray.cluster_resources().get("CPU", 0.0)
            if cpus_per_env is None:  # the default fits the cluster it runs on
                cpus_per_env = self.cpus_per_env = min(1.0, have / num_envs) if have else 1.0
                if cpus_per_env < 1.0:
                    print(f"ray: {num_envs} env actors share the cluster's {have:g} CPUs ({cpus_per_env:.3g} each)",
                          file=sys.stderr, flush=True)
            need = num_envs * cpus_per_env
            if need > have:
                raise RayBackendError(
                    f"{num_envs} env actors x {cpus_per_env:g} CPU need {need:g} CPUs, the Ray cluster has "
                    f"{have:g}; use fewer envs, a smaller cpus_per_env, or add nodes")
            self._actor_cls = self._ray.remote(EnvActor).options(
                num_cpus=cpus_per_env, max_restarts=0, scheduling_strategy="SPREAD")
            for i in range(num_envs):
                self._workers[i] = self._spawn()
            for i in range(num_envs):
                self._wait_ready(i, "start")
        except BaseException:
            self.close()
            raise

    # -- actors ---------------------------------------------------------------------------------
    def _spawn(self) -> _Actor:
        handle = self._actor_cls.remote(self.env_id, self.env_kwargs)
        return _Actor(handle, handle.where.remote())

    def _wait_ready(self, i: int, what: str) -> None:
        a = self._workers[i]
        ready, _ = self._ray.wait([a.ready], timeout=self.start_timeout)
        if not ready:
            raise WorkerError(f"env {i} ({self.env_id}) actor not ready within {self.start_timeout:.0f} s "
                              f"during {what} (no CPU free in the cluster, or the env is slow to start)")
        try:
            where = self._ray.get(a.ready)
        except self._ray.exceptions.RayError as e:
            raise WorkerError(f"env {i} ({self.env_id}) failed during {what}: {_cause(e)}") from e
        a.pid, a.node = where["pid"], where["node"]

    def restart(self, i: int) -> None:
        """Replace actor ``i`` by a fresh one (its episode is lost; callers report it)."""
        self._workers[i].kill()
        self._workers[i] = self._spawn()
        self._wait_ready(i, "restart")

    def _restart_worker(self, w: int, cause: str, spared: Sequence[int] = ()) -> None:
        self.restart(w)

    def _gather(self, indices: Sequence[int], cmd: str, args: Sequence[Any]) -> list[tuple[Any, str | None]]:
        """Send ``cmd`` to each actor, wait up to ``step_timeout``; a dead or hung actor yields (None, cause)."""
        ray = self._ray
        refs = {i: getattr(self._workers[i].handle, cmd).remote(a) for i, a in zip(indices, args)}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.step_timeout)
        done = set(ready)
        out: list[tuple[Any, str | None]] = []
        for i in indices:
            error, restart = None, True
            if refs[i] not in done:
                error = f"env {i} ({self.env_id}) actor hung: no answer to {cmd} within {self.step_timeout:.0f} s"
            else:
                try:
                    out.append((ray.get(refs[i]), None))
                    continue
                except ray.exceptions.RayTaskError as e:  # the env raised: the actor lives on
                    error, restart = f"env {i} ({self.env_id}) failed during {cmd}: {_cause(e)}", False
                except ray.exceptions.RayError as e:  # the actor's process is gone (killed, OOM, node lost)
                    error = f"env {i} ({self.env_id}) actor died during {cmd} (pid {self._workers[i].pid}): {_cause(e)}"
            out.append((None, error))
            if restart:
                self.restart(i)
        return out

    # -- facts and shutdown -----------------------------------------------------------------------
    def pids(self) -> list[int]:
        """The actors' process ids (each on its own node; the node ids are in :meth:`nodes`)."""
        return [w.pid for w in self._workers]

    def nodes(self) -> list[str]:
        return [w.node for w in self._workers]

    def close(self) -> None:
        """Close every env (its engine stops), kill every actor, stop a local cluster started here; idempotent."""
        if self.closed:
            return
        self.closed = True
        ray = self._ray
        try:
            live = [w for w in self._workers if w is not None]
            if ray.is_initialized() and live:
                refs = [w.handle.close.remote() for w in live if w.pid is not None]
                if refs:
                    ray.wait(refs, num_returns=len(refs), timeout=10)
                for w in live:
                    w.kill()
                here = ray.get_runtime_context().get_node_id()
                _wait_gone([w.pid for w in live if w.pid is not None and w.node == here], timeout=10)
        finally:
            _LOCAL["users"] -= 1
            if _LOCAL["users"] <= 0 and _LOCAL["owned"]:
                _LOCAL["owned"], _LOCAL["users"] = False, 0
                ray.shutdown()


def _cause(e: BaseException) -> str:
    """The first line of what went wrong inside Ray (the env's own exception when there is one)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _wait_gone(pids: Sequence[int], timeout: float) -> None:
    """Wait until the actor processes on this machine are gone (remote ones: Ray's raylet kills them)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.05)
