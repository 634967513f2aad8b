"""Helpers for the py4j-based JVM engines (ScienceWorld, TextWorldExpress).

Their ``close()`` asks the JVM to exit but does not wait, so a closed env could leave a java
process behind for a moment (or for good, if it hangs). ``stop_engine`` waits, then kills.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import Any, Iterator

# ~260 MB per JVM instead of 0.5-1 GB with the default heap (a quarter of RAM).
DEFAULT_JAVA_OPTIONS = "-Xmx384m -XX:+UseSerialGC"


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


def stop_engine(engine: Any, timeout: float = 5.0) -> None:
    """Close a py4j engine and make sure its JVM process is gone."""
    proc: subprocess.Popen | None = getattr(getattr(engine, "_gateway", None), "java_process", None)
    with contextlib.suppress(Exception):
        engine.close()
    if proc is not None and proc.poll() is None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
