"""Helpers for the py4j-based JVM engines (ScienceWorld, TextWorldExpress).

Each engine object starts its own JVM through py4j. Three things go wrong without care:

- memory: the default heap is a quarter of RAM (0.5-1 GB RSS per JVM); ``start_engine`` caps it;
- shutdown: the engines' ``close()`` asks the JVM to exit but does not wait, so a closed env could
  leave a java process behind for a moment (or for good, if it hangs); ``stop_engine`` waits, then
  kills, and an ``atexit`` hook stops every engine still running when Python exits;
- crashes: a JVM that dies (killed, out of memory) surfaces as an opaque py4j network error;
  ``crash_error`` turns it into :class:`EngineCrashed`, which says what happened and what to do.
  py4j itself then logs a traceback for every retry and every later call (hundreds of lines), and
  its ``send_command`` logs through the *root* logger (``logging.info``/``logging.exception``), whose
  first use configures the root logger of the user's process (``basicConfig``). ``start_engine``
  therefore routes those calls to py4j's own logger and keeps that logger quiet unless the user
  configured it (:func:`quiet_py4j_logging`): a crash reads as one line, the ``EngineCrashed`` message.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import subprocess
import weakref
from typing import Any, Callable, Iterator, TypeVar

# Heap capped at 384 MB: JVM RSS measured 170-180 MB (TWX) and 380-470 MB (ScienceWorld) in
# benchmarks/bench_jvm.py, instead of 0.5-1 GB each with the default heap (a quarter of RAM).
DEFAULT_JAVA_OPTIONS = "-Xmx384m -XX:+UseSerialGC"
# Every object's identity hash = 1, so hash-ordered collections iterate in insertion order. Engines
# that keep objects in identity-hashed sets (ScienceWorld 1.2.x) then replay a seed identically.
DETERMINISTIC_HASH_OPTIONS = "-XX:+UnlockExperimentalVMOptions -XX:hashCode=2"

E = TypeVar("E")


class EngineCrashed(RuntimeError):
    """The engine's JVM died mid-episode. The episode is lost; the next ``reset()`` starts a new JVM."""


@contextlib.contextmanager
def java_options(options: str | None = DEFAULT_JAVA_OPTIONS) -> Iterator[None]:
    """Set ``JAVA_TOOL_OPTIONS`` while an engine launches its JVM (py4j passes the environment)."""
    old = os.environ.get("JAVA_TOOL_OPTIONS")
    if options:
        os.environ["JAVA_TOOL_OPTIONS"] = options
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("JAVA_TOOL_OPTIONS", None)
        else:
            os.environ["JAVA_TOOL_OPTIONS"] = old


# Engines started by start_engine and not yet stopped: stopped at interpreter exit. Weak, so an
# env that is garbage-collected is not kept alive by this registry.
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()


class _Py4JRootCalls:
    """Stands in for the ``logging`` module inside ``py4j.java_gateway``: its root-level calls go to
    the ``py4j.java_gateway`` logger instead, so they never configure or write to the root logger."""

    def __init__(self) -> None:
        self._logger = logging.getLogger("py4j.java_gateway")

    def __getattr__(self, name: str) -> Any:
        if name in ("debug", "info", "warning", "error", "exception", "critical", "log"):
            return getattr(self._logger, name)
        return getattr(logging, name)


def quiet_py4j_logging() -> None:
    """Keep py4j's logging out of the user's root logger (idempotent; see the module docstring).

    The ``py4j`` logger gets a ``NullHandler`` and stops propagating, unless the user already gave it
    a handler or a level (then it is theirs and left as it is); ``propagate = True`` turns it back on.
    """
    import py4j.java_gateway as gateway

    if not isinstance(getattr(gateway, "logging", None), _Py4JRootCalls):
        gateway.logging = _Py4JRootCalls()
    py4j_logger = logging.getLogger("py4j")
    if not py4j_logger.handlers and py4j_logger.level == logging.NOTSET:
        py4j_logger.addHandler(logging.NullHandler())
        py4j_logger.propagate = False


def start_engine(factory: Callable[[], E], options: str | None = DEFAULT_JAVA_OPTIONS) -> E:
    """Build an engine (``factory()`` launches its JVM) with ``options`` and track it for exit."""
    quiet_py4j_logging()
    if shutil.which("java") is None:
        raise RuntimeError("This engine runs on the JVM, and no `java` is on PATH. Install a Java 8+ runtime, "
                           "e.g. `apt-get install openjdk-17-jre-headless`.")
    with java_options(options):
        engine = factory()
    _LIVE.add(engine)
    return engine


def java_process(engine: Any) -> subprocess.Popen | None:
    """The engine's JVM process, when py4j launched one."""
    return getattr(getattr(engine, "_gateway", None), "java_process", None)


def is_alive(engine: Any) -> bool:
    """True while the engine's JVM process runs (a cheap ``waitpid`` check, no JVM call)."""
    proc = java_process(engine)
    return proc is not None and proc.poll() is None


def crash_error(engine: Any, name: str, exc: BaseException) -> EngineCrashed | None:
    """The :class:`EngineCrashed` to raise when ``exc`` (from a py4j call) means the JVM is gone.

    ``None`` when the JVM still runs and the error came from inside it (a Java exception).
    """
    from py4j.protocol import Py4JNetworkError

    proc = java_process(engine)
    code = None if proc is None else proc.poll()
    if code is None and not isinstance(exc, Py4JNetworkError):
        return None  # the JVM runs and answered: a Java exception, not a crash
    pid = "?" if proc is None else proc.pid
    how = "is unreachable" if code is None else f"exited with code {code}"
    return EngineCrashed(
        f"The {name} JVM (pid {pid}) {how}: this episode is lost. The next reset() starts a new JVM. "
        f"(A JVM killed with code -9 or 137 often ran out of memory; raise the heap with java_options='-Xmx1g'.)"
    )


def stop_engine(engine: Any, timeout: float = 5.0) -> None:
    """Close a py4j engine and make sure its JVM process is gone."""
    _LIVE.discard(engine)
    proc = java_process(engine)
    with contextlib.suppress(Exception):
        engine.close()
    if proc is not None and proc.poll() is None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


@atexit.register
def _stop_all() -> None:
    for engine in list(_LIVE):
        stop_engine(engine, timeout=2.0)


def child_jvms(pid: int | None = None) -> list[int]:
    """Pids of the running java processes below ``pid`` (default: this process), at any depth."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in children:
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.name() == "java":
                out.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out
