"""Every env test module, and the session, must leave no JVM (ScienceWorld/TWX engines) running."""

import time

import pytest

from madopd_envs.jvm import child_jvms


def _still_running(pids: set[int], grace_s: float = 20.0) -> set[int]:
    """``pids`` still alive after a grace period: a closed engine's JVM takes seconds to exit on a
    loaded machine, which is not a leak."""
    deadline = time.monotonic() + grace_s
    while pids and time.monotonic() < deadline:
        time.sleep(0.25)
        pids &= set(child_jvms())
    return pids


def _describe(pids: set[int]) -> str:
    """Each JVM with its parent's command line: which worker or test still holds it."""
    import psutil

    out = []
    for pid in sorted(pids):
        try:
            parent = psutil.Process(pid).parent()
            out.append(f"{pid} (parent {parent.pid}: {' '.join(parent.cmdline())[:200]})" if parent else str(pid))
        except psutil.Error:
            out.append(f"{pid} (gone)")
    return ", ".join(out)


@pytest.fixture(scope="session", autouse=True)
def no_jvm_left_after_the_session():
    yield
    leftover = _still_running(set(child_jvms()))
    assert not leftover, f"JVMs still running after the test session: {_describe(leftover)}"


@pytest.fixture(scope="module", autouse=True)
def no_jvm_left_by_this_module(request):
    before = set(child_jvms())
    yield
    leftover = _still_running(set(child_jvms()) - before)
    assert not leftover, f"{request.module.__name__} left JVMs running: {_describe(leftover)}"
