"""Every env test module, and the session, must leave no JVM (ScienceWorld/TWX engines) running."""

import pytest

from madopd_envs.jvm import child_jvms


@pytest.fixture(scope="session", autouse=True)
def no_jvm_left_after_the_session():
    yield
    leftover = child_jvms()
    assert not leftover, f"JVMs still running after the test session: {leftover}"


@pytest.fixture(scope="module", autouse=True)
def no_jvm_left_by_this_module(request):
    before = set(child_jvms())
    yield
    leftover = set(child_jvms()) - before
    assert not leftover, f"{request.module.__name__} left JVMs running: {sorted(leftover)}"
