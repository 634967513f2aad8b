"""The test harness that runs *inside* the sandbox (executed as ``python3 -s -S -c SRC FD``).

Why three processes: untrusted code that shares a process with the checker can forge any verdict
(monkeypatch the checker, print "PASS", ``os._exit(0)``, read the expected answers from memory).
So the solution never shares memory with the tests:

- the **checker** (trusted) reads the job from stdin, runs the task's test statements, and writes
  the verdict -- with the host's per-run nonce -- to a private pipe (fd ``FD``) only it holds. It is
  non-dumpable, so a same-uid process can neither ptrace it nor open its ``/proc/<pid>/fd`` or ``mem``;
- the **zygote** is forked after the checker has read only the solution (the tests and the nonce
  are read later, so they are in no memory the solution can reach); it forks one **worker** per
  request and reports how each worker ended;
- the **worker** sets its rlimits, runs the solution, and answers calls over a socket: the checker's
  ``candidate(...)`` proxy sends the arguments, the worker calls the real function and returns the
  value in a strict binary encoding that decodes only to plain data (no pickle), and the
  comparisons of the test run in the checker. A killed, exiting or lying worker can only make its
  own test fail.

One file (longer than most modules here) because it is shipped as one ``-c`` program into the
sandbox, where nothing of madopd is importable. Only C-level modules are imported (``_socket``, ``_signal``, ``marshal``...): ``json``, ``socket``,
``signal`` and ``traceback`` pull in ``re``/``enum`` and tripled the harness's start-up time.

Protocol with the host: stdin carries ``!II`` lengths, then part 1 ``{"prelude", "solution",
"limits"}`` and part 2 ``{"context", "items", "proxies" (name in the tests -> function of the
solution), "nonce"}``, both ``marshal``-ed (host-made data). The verdict on fd ``FD`` is the
``repr`` of a dict of plain values, which the host reads with ``ast.literal_eval``.
"""

import _signal
import _socket
import builtins
import marshal
import os
import resource
import select
import struct
import sys
import time

# With `-c`, sys.path starts with the cwd (/tmp, writable by the solution): a module dropped there
# must not shadow what the checker imports later (test code's `import math`).
sys.path[:] = [p for p in sys.path if p not in ("", ".")]

MAX_DEPTH = 64
MAX_ITEMS = 100_000  # elements taken from a returned iterator
MAX_INT_DIGITS = 4000
ERROR_CHARS = 2000
SIGKILL, SIGXCPU = _signal.SIGKILL, _signal.SIGXCPU
SIGNAL_NAMES = {getattr(_signal, n): n for n in ("SIGKILL", "SIGXCPU", "SIGXFSZ", "SIGSEGV", "SIGABRT", "SIGBUS",
                                                  "SIGFPE", "SIGILL", "SIGTERM", "SIGINT", "SIGHUP", "SIGPIPE")}
U32 = struct.Struct("!I")
F64 = struct.Struct("!d")


# -- the value codec: plain data only; lists, tuples, sets, iterators stay distinct -----------------
_SEQ_TAGS = {list: b"l", tuple: b"t", set: b"S", frozenset: b"z"}
_SEQ_TYPES = {b"l": list, b"t": tuple, b"S": set, b"z": frozenset, b"I": iter}


def enc(v, out=None, depth=0):
    """``v`` as bytes (appended to ``out``); TypeError/ValueError for what cannot travel."""
    top = out is None
    out = [] if top else out
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    t = type(v)
    if v is None:
        out.append(b"N")
    elif t is bool:
        out.append(b"T" if v else b"F")
    elif t is int:
        digits = str(v).encode()
        if len(digits) > MAX_INT_DIGITS:
            raise ValueError("integer too large")
        out += [b"i", U32.pack(len(digits)), digits]
    elif t is float:
        out += [b"f", F64.pack(v)]
    elif t is complex:
        out += [b"c", F64.pack(v.real), F64.pack(v.imag)]
    elif t is str:
        data = v.encode("utf-8", "surrogatepass")
        out += [b"s", U32.pack(len(data)), data]
    elif t is bytes or t is bytearray:
        out += [b"b", U32.pack(len(v)), bytes(v)]
    elif t in _SEQ_TAGS:
        out += [_SEQ_TAGS[t], U32.pack(len(v))]
        for x in v:
            enc(x, out, depth + 1)
    elif t is dict:
        out += [b"d", U32.pack(len(v))]
        for k, x in v.items():
            enc(k, out, depth + 1)
            enc(x, out, depth + 1)
    elif t is range:
        out.append(b"r")
        for x in (v.start, v.stop, v.step):
            enc(x, out, depth + 1)
    else:
        # Subclasses (IntEnum, OrderedDict, namedtuple, Counter...) travel as their base type.
        for base in (bool, int, float, str, bytes, tuple, list, dict, set, frozenset):
            if isinstance(v, base):
                return enc(base(v), None if top else out, depth)
        if hasattr(v, "__next__") and hasattr(v, "__iter__"):  # generators, map(), zip()...
            items = []
            for x in v:
                if len(items) >= MAX_ITEMS:
                    raise ValueError("the returned iterator yields too many items")
                items.append(x)
            out += [b"I", U32.pack(len(items))]
            for x in items:
                enc(x, out, depth + 1)
        else:
            raise TypeError(f"a value of type {t.__name__} cannot be passed between the checker and the solution")
    return b"".join(out) if top else None


def dec(buf):
    """The value encoded in ``buf``; ValueError for anything malformed (the worker is untrusted)."""
    value, pos = _dec(buf, 0, 0)
    if pos != len(buf):
        raise ValueError("trailing bytes")
    return value


def _take(buf, pos, n):
    if n < 0 or pos + n > len(buf):
        raise ValueError("truncated value")
    return buf[pos:pos + n], pos + n


def _dec(buf, pos, depth):
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    tag, pos = _take(buf, pos, 1)
    if tag == b"N":
        return None, pos
    if tag in (b"T", b"F"):
        return tag == b"T", pos
    if tag == b"f":
        raw, pos = _take(buf, pos, 8)
        return F64.unpack(raw)[0], pos
    if tag == b"c":
        raw, pos = _take(buf, pos, 16)
        return complex(F64.unpack(raw[:8])[0], F64.unpack(raw[8:])[0]), pos
    if tag == b"r":
        parts = []
        for _ in range(3):
            x, pos = _dec(buf, pos, depth + 1)
            if type(x) is not int:
                raise ValueError("malformed range")
            parts.append(x)
        return range(*parts), pos
    raw, pos = _take(buf, pos, 4)
    (n,) = U32.unpack(raw)
    if tag == b"i":
        if n > MAX_INT_DIGITS + 1:
            raise ValueError("integer too large")
        digits, pos = _take(buf, pos, n)
        if not digits.lstrip(b"-").isdigit():
            raise ValueError("malformed integer")
        return int(digits), pos
    if tag == b"s":
        data, pos = _take(buf, pos, n)
        return data.decode("utf-8", "surrogatepass"), pos
    if tag == b"b":
        data, pos = _take(buf, pos, n)
        return bytes(data), pos
    if n > len(buf) - pos:  # every element takes at least one byte
        raise ValueError("truncated value")
    if tag in _SEQ_TYPES:
        items = []
        for _ in range(n):
            x, pos = _dec(buf, pos, depth + 1)
            items.append(x)
        try:
            return _SEQ_TYPES[tag](items), pos
        except TypeError:  # an unhashable element of a set
            raise ValueError("malformed set") from None
    if tag == b"d":
        out = {}
        for _ in range(n):
            k, pos = _dec(buf, pos, depth + 1)
            x, pos = _dec(buf, pos, depth + 1)
            try:
                out[k] = x
            except TypeError:
                raise ValueError("malformed dict key") from None
        return out, pos
    raise ValueError("unknown tag")


# -- small helpers ----------------------------------------------------------------------------------
def read_exact(fd, n):
    """Exactly ``n`` bytes from a raw fd: no read-ahead buffer holds later bytes (the tests)."""
    chunks, left = [], n
    while left:
        b = os.read(fd, min(left, 1 << 20))
        if not b:
            raise EOFError("stdin closed early")
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


def send_msg(sock, msg):
    data = enc(msg)
    sock.sendall(U32.pack(len(data)) + data)


def recv_exact_sock(sock, n):
    chunks, left = [], n
    while left:
        b = sock.recv(min(left, 1 << 20))
        if not b:
            raise EOFError
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


def clip(text, n=ERROR_CHARS):
    text = str(text)
    return text if len(text) <= n else text[: n // 2] + "\n...[truncated]...\n" + text[-n // 2:]


def set_limit(which, value):
    if value:
        resource.setrlimit(which, (value, value))


def safe_str(e):
    try:
        return str(e)
    except BaseException:  # noqa: BLE001 -- a solution's exception may break its own __str__
        return "<unprintable>"


def format_exception(e, sources, skip=1):
    """A traceback in Python's format, without the ``traceback`` module (its imports are costly).
    ``sources`` maps file names to their text; ``skip`` drops the harness's own frames."""
    lines = []
    tb = e.__traceback__
    for _ in range(skip):
        tb = tb.tb_next if tb is not None else None
    if tb is not None:
        lines.append("Traceback (most recent call last):")
    while tb is not None:
        code = tb.tb_frame.f_code
        lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}')
        text = sources.get(code.co_filename)
        if text is not None:
            src = text.splitlines()[tb.tb_lineno - 1:tb.tb_lineno]
            if src and src[0].strip():
                lines.append("    " + src[0].strip())
        tb = tb.tb_next
    if isinstance(e, SyntaxError):
        lines.append(f'  File "{e.filename}", line {e.lineno}')
        if e.text:
            lines.append("    " + e.text.strip())
        lines.append(f"{type(e).__name__}: {e.msg}")
    else:
        msg = safe_str(e)
        lines.append(f"{type(e).__name__}: {msg}" if msg else type(e).__name__)
    return clip("\n".join(lines))


def flush_output():
    """The worker is killed, not exited, at the end: what the solution printed must not stay buffered."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 -- the solution may have replaced or closed them
            pass


PRELOAD = ("typing", "math", "collections", "itertools", "functools", "re", "string", "heapq", "bisect", "copy",
           "operator", "random", "fractions", "decimal", "statistics", "dataclasses", "json", "datetime", "hashlib")


def preload(*texts):
    """Import, before the zygote fork, the common stdlib modules the code imports anyway, so each
    is loaded once per run rather than once per process (``typing`` alone costs tens of ms)."""
    joined = "\n".join(texts)
    for name in PRELOAD:
        if f"import {name}" in joined or f"from {name} " in joined:
            __import__(name)


def seed_random_if_used(*texts):
    """Reproducible runs for code that uses ``random`` (imported only then: it costs start-up time)."""
    if any("random" in t for t in texts):
        import random

        random.seed(0)


# -- worker: the only process that runs the solution ------------------------------------------------
def worker_main(sock, prelude, solution, lim):
    os.setpgid(0, 0)  # the checker kills the worker's whole group
    try:  # when the run's memory cgroup is full, the kernel's OOM killer picks the solution first
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("1000")
    except OSError:
        pass
    set_limit(resource.RLIMIT_AS, lim["memory_mb"] << 20)
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
    sources = {"prompt.py": prelude, "solution.py": solution}
    seed_random_if_used(prelude, solution)
    ns = {"__name__": "solution", "__builtins__": builtins}
    try:
        if prelude:
            exec(compile(prelude, "prompt.py", "exec"), ns)
        exec(compile(solution, "solution.py", "exec"), ns)
    except BaseException as e:  # noqa: BLE001 -- any failure of the solution is a verdict, not a crash
        flush_output()
        send_msg(sock, ("load_error", format_exception(e, sources)))
        os._exit(0)
    flush_output()
    send_msg(sock, ("ready", [k for k, v in list(ns.items()) if type(k) is str and not k.startswith("__")
                              and callable(v)]))
    while True:
        try:
            (n,) = U32.unpack(recv_exact_sock(sock, 4))
            _, name, args, kwargs = dec(recv_exact_sock(sock, n))
        except EOFError:
            os._exit(0)
        fn = ns.get(name)
        if not callable(fn):
            send_msg(sock, ("exc", "NameError", f"your code defines no function named {name!r}", ""))
            continue
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001
            flush_output()
            send_msg(sock, ("exc", type(e).__name__, clip(safe_str(e), 500), format_exception(e, sources)))
            continue
        flush_output()
        try:
            reply = enc(("ok", result))
        except (TypeError, ValueError, RecursionError) as e:
            reply = enc(("bad", clip(safe_str(e), 500)))
        sock.sendall(U32.pack(len(reply)) + reply)


# -- zygote: forks workers from a memory that holds the solution but no test ------------------------
def zygote_main(ctl, prelude, solution, lim):
    while True:
        if not ctl.recv(1):
            os._exit(0)
        mine, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            pid = os.fork()
        except OSError:
            ctl.sendall(b"P" + struct.pack("!i", -1))
            mine.close()
            theirs.close()
            continue
        if pid == 0:
            try:
                ctl.close()
                mine.close()
                worker_main(theirs, prelude, solution, lim)
            finally:
                os._exit(0)
        theirs.close()
        fds = struct.pack("i", mine.fileno())
        ctl.sendmsg([b"P" + struct.pack("!i", pid)], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        mine.close()
        _, status = os.waitpid(pid, 0)
        ctl.sendall(b"X" + struct.pack("!ii", pid, status))


def describe_status(status, killed_by_checker):
    if os.WIFEXITED(status):
        return f"exited with code {os.WEXITSTATUS(status)}"
    sig = os.WTERMSIG(status)
    if sig == SIGKILL and killed_by_checker:
        return "killed by the harness"
    if sig == SIGXCPU:
        return "killed by SIGXCPU (CPU time limit)"
    if sig == SIGKILL:
        return "killed by SIGKILL (a resource limit)"
    return f"killed by {SIGNAL_NAMES.get(sig, f'signal {sig}')}"


class SolutionFailure(BaseException):
    """The solution timed out, died or returned an unusable value (a BaseException so that test code's
    ``except Exception`` cannot swallow it; the checker also records it out of band)."""


class SolutionError(Exception):
    """The solution raised an exception whose type is not a builtin."""


# -- checker ----------------------------------------------------------------------------------------
ZYGOTE_GONE = ("Your code killed the sandbox's process that starts it (its parent), so every test of this run "
               "fails.")


def zygote_was_killed(ctl, pid):
    """Whether the zygote died before the end of the run. A solution can kill it (it is its parent), and
    when the checker notices depends on timing, so this end-of-run check is what makes the verdict
    the same every time."""
    ctl.shutdown(_socket.SHUT_WR)  # the zygote exits at EOF
    deadline = time.monotonic() + 2.0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
        if time.monotonic() > deadline:  # alive but stuck: not the solution's doing
            os.kill(pid, SIGKILL)
            return False
        time.sleep(0.005)


class Checker:
    def __init__(self, ctl, lim, deadline):
        self.ctl = ctl
        self.lim = lim
        self.deadline = deadline
        self.sock = None
        self.pid = None
        self.names = []
        self.load_error = None
        self.test_deadline = deadline
        self.failure = None  # out-of-band failure of the current test
        self.last_call = None

    def spawn(self):
        """Start a fresh worker; False if the solution cannot be loaded."""
        if self.load_error is not None:
            return False
        try:
            self.ctl.sendall(b"S")
            data, anc, _, _ = self.ctl.recvmsg(5, _socket.CMSG_LEN(4))
        except OSError:
            data, anc = b"", []
        if len(data) < 5:  # the zygote is gone: the solution can kill it (same uid, its parent)
            self.load_error = ZYGOTE_GONE
            return False
        (pid,) = struct.unpack("!i", data[1:5])
        fds = [struct.unpack("i", d[:4])[0] for lvl, typ, d in anc if typ == _socket.SCM_RIGHTS and len(d) >= 4]
        if pid < 0 or not fds:
            self.load_error = "The sandbox could not start a process for your code (process limit reached)."
            return False
        self.pid, self.sock = pid, _socket.socket(fileno=fds[0])
        try:
            msg = self.recv(min(time.monotonic() + self.lim["test_timeout_s"], self.deadline), "while loading")
        except SolutionFailure as e:
            self.load_error = str(e)
            return False
        if msg[0] == "load_error" and len(msg) == 2:
            self.load_error = "Your code failed to load:\n" + str(msg[1])
            self.reap(kill=True)
            return False
        names = msg[1] if msg[0] == "ready" and len(msg) == 2 and type(msg[1]) is list else []
        self.names = [n for n in names if type(n) is str and n.isidentifier()]
        return True

    def reap(self, kill, grace=0.5):
        """Stop the worker (its whole process group) and wait for its end; its status in words.

        ``kill=False``: it seems to have ended by itself; give it ``grace`` seconds to be reported
        before killing it anyway (a solution can close its socket and live on)."""
        if self.pid is None:
            return "not running"
        pid, sock, self.pid, self.sock = self.pid, self.sock, None, None
        sock.close()
        killed = kill or not select.select([self.ctl], [], [], grace)[0]
        try:
            os.killpg(pid, SIGKILL)  # also the descendants still in its group
        except OSError:
            pass
        if not select.select([self.ctl], [], [], 5.0)[0]:
            return "did not stop"
        try:
            _, status = struct.unpack("!ii", recv_exact_sock(self.ctl, 9)[1:9])
        except (EOFError, OSError):
            self.load_error = ZYGOTE_GONE
            return "ended, and it had killed the sandbox's process that starts it (its parent)"
        return describe_status(status, killed)

    def _read(self, n, deadline, during):
        """``n`` bytes from the worker before ``deadline``, or a SolutionFailure saying why not."""
        buf = b""
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                why = "the run's time limit" if deadline >= self.deadline else \
                    f"the {self.lim['test_timeout_s']:g} s limit per test"
                self.reap(kill=True)
                raise SolutionFailure(f"Timed out {during}: your code did not finish within {why}.")
            r, _, _ = select.select([self.sock, self.ctl], [], [], left)
            if self.sock in r:
                try:
                    b = self.sock.recv(min(n - len(buf), 1 << 20))
                except OSError:
                    b = b""
                if b:
                    buf += b
                    continue
            if r:  # EOF, or the worker exited while a descendant still holds its socket
                raise SolutionFailure(f"Your code's process ended {during}: {self.reap(kill=False)}.")
        return buf

    def recv(self, deadline, during):
        """One message (a non-empty tuple) from the worker."""
        (n,) = U32.unpack(self._read(4, deadline, during))
        if n > self.lim["value_bytes"]:
            self.reap(kill=True)
            raise SolutionFailure(f"The value your code sent {during} is larger than {self.lim['value_bytes']} bytes.")
        try:
            msg = dec(self._read(n, deadline, during))
            if type(msg) is not tuple or not msg or type(msg[0]) is not str:
                raise ValueError
            return msg
        except (ValueError, UnicodeDecodeError, OverflowError):
            self.reap(kill=True)
            raise SolutionFailure(f"Your code's process sent a malformed reply {during}.") from None

    def call(self, name, args, kwargs):
        if self.pid is None and not self.spawn():
            self.failure = self.load_error
            raise SolutionFailure(self.load_error)
        try:
            payload = enc(("call", name, args, kwargs))
        except (TypeError, ValueError) as e:
            raise RuntimeError(f"the test passes an argument that cannot reach the solution: {e}") from None
        shown = clip(f"{name}({', '.join([repr(a) for a in args] + [f'{k}={v!r}' for k, v in kwargs.items()])})", 300)
        self.last_call = (shown, None)
        try:
            self.sock.sendall(U32.pack(len(payload)) + payload)
        except OSError:
            self.failure = f"Your code's process ended before {shown}: {self.reap(kill=True)}."
            raise SolutionFailure(self.failure) from None
        try:
            msg = self.recv(self.test_deadline, f"in {shown}")
        except SolutionFailure as e:
            self.failure = str(e)
            raise
        if msg[0] == "ok" and len(msg) == 2:
            self.last_call = (shown, clip(repr(msg[1]), 300))
            return msg[1]
        if msg[0] == "bad" and len(msg) == 2:
            self.failure = f"{shown} returned a value the checker cannot compare: {msg[1]}"
            raise SolutionFailure(self.failure)
        if msg[0] != "exc" or len(msg) != 4:
            self.reap(kill=True)
            self.failure = f"Your code's process sent a malformed reply in {shown}."
            raise SolutionFailure(self.failure)
        exc_name, text, tb = str(msg[1]), str(msg[2]), str(msg[3])
        self.last_call = (shown, f"raised {exc_name}: {clip(text, 200)}")
        cls = getattr(builtins, exc_name, None)
        # A builtin exception type is re-raised as itself, so tests that expect ValueError etc. work.
        if isinstance(cls, type) and issubclass(cls, Exception):
            err = cls(text)
        else:
            err = SolutionError(f"{exc_name}: {text}")
        err.solution_traceback = tb
        raise err

    def proxy(self, name):
        def candidate(*args, **kwargs):
            return self.call(name, args, kwargs)

        candidate.__name__ = candidate.__qualname__ = name
        return candidate


def describe_failure(checker, exc, source):
    if checker.failure:
        return clip(f"{source}\n{checker.failure}")
    tb = getattr(exc, "solution_traceback", None)
    if tb:
        return clip(f"{source}\n{tb.rstrip()}")
    msg = safe_str(exc)
    head = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    if isinstance(exc, AssertionError) and checker.last_call and checker.last_call[1] is not None:
        call, result = checker.last_call
        head += f" ({call} {result})" if result.startswith("raised ") else f" ({call} returned {result})"
    return clip(f"{source}\n{head}")


def checker_main(verdict_fd):
    import ctypes

    # Non-dumpable: processes of the same uid can neither ptrace us nor open /proc/<pid>/fd or mem.
    ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    n1, n2 = struct.unpack("!II", read_exact(0, 8))
    started = time.monotonic()
    part1 = marshal.loads(read_exact(0, n1))
    lim = part1["limits"]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core dumps (set_limit skips a 0)
    set_limit(resource.RLIMIT_NOFILE, lim["nofile"])
    set_limit(resource.RLIMIT_FSIZE, lim["fsize_mb"] << 20)
    set_limit(resource.RLIMIT_NPROC, lim["nproc"])  # inside the user namespace: counted per sandbox
    preload(part1["prelude"], part1["solution"])
    ctl, ctl_z = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        try:
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)  # the tests and the nonce still wait in the stdin pipe
            os.close(devnull)
            os.close(verdict_fd)
            ctl.close()
            zygote_main(ctl_z, part1["prelude"], part1["solution"], lim)
        finally:
            os._exit(0)
    ctl_z.close()
    part2 = marshal.loads(read_exact(0, n2))
    verdict = {"nonce": part2["nonce"], "load_error": None, "context_error": None, "tests": [], "values": [], "setup_errors": []}
    checker = Checker(ctl, lim, started + lim["budget_s"])
    seed_random_if_used(part2["context"], *(src for _, src in part2["items"]))
    ns = {"__name__": "__check__", "__builtins__": builtins}
    try:
        exec(compile(part2["context"], "task_context.py", "exec"), ns)
    except BaseException as e:  # noqa: BLE001 -- a broken task, reported as such
        verdict["context_error"] = format_exception(e, {"task_context.py": part2["context"]})
    if checker.spawn():
        for name in checker.names:  # the solution's other functions, unless they would shadow a builtin
            if name not in ns and not hasattr(builtins, name):
                ns[name] = checker.proxy(name)
    verdict["load_error"] = checker.load_error
    for alias, name in part2["proxies"].items():  # the entry point shadows the prompt's stub
        ns[alias] = checker.proxy(name)
    for kind, source in part2["items"]:
        if kind in ("test", "value") and checker.load_error is not None:
            verdict[kind + "s"].append([False, checker.load_error])
            continue
        now = time.monotonic()
        if now >= checker.deadline:
            if kind in ("test", "value"):
                verdict[kind + "s"].append([False, "Not run: the run's time limit was reached."])
            continue
        checker.test_deadline = min(now + lim["test_timeout_s"], checker.deadline)
        checker.failure, checker.last_call = None, None
        try:
            if kind == "value":  # an expression whose value the host wants (encoded, hex)
                value = eval(compile(source, "value.py", "eval"), ns)
                if checker.failure is None:
                    verdict["values"].append([True, enc(value).hex()])
                    continue
            else:
                exec(compile(source, "test.py", "exec"), ns)
            ok, error = checker.failure is None, checker.failure
        except BaseException as e:  # noqa: BLE001
            ok, error = False, describe_failure(checker, e, source)
        if kind == "test":
            verdict["tests"].append([ok, error])
        elif kind == "value":
            verdict["values"].append([False, error])
        elif not ok:
            verdict["setup_errors"].append(error)
    if checker.pid is not None:
        checker.reap(kill=True)
    if zygote_was_killed(ctl, pid):
        for kind in ("tests", "values"):
            verdict[kind] = [[False, ZYGOTE_GONE] for _ in verdict[kind]]
    data = repr(verdict).encode("utf-8", "backslashreplace")
    while data:
        data = data[os.write(verdict_fd, data):]
    os.close(verdict_fd)
    os._exit(0)


if __name__ == "__main__":
    checker_main(int(sys.argv[1]))
