"""The import layers of DESIGN.md, read from the source (every import, lazy ones inside functions too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("madopd_envs", "madopd_agents", "madopd_distill")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out[name] = path
    return out


MODULES = _modules()


def imports(module: str) -> set[str]:
    """Project modules ``module`` imports anywhere in its file (``from pkg import sub`` counts as ``pkg.sub``)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
            found |= set(subs) if subs else {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in MODULES and m != module}


@pytest.mark.parametrize("a,b", [("madopd_envs.builtin", "madopd_envs.registry"),
                                 ("madopd_envs.alfworld.data", "madopd_envs.alfworld.generate"),
                                 ("madopd_agents.registry", "madopd_envs.eval.config")])
def test_no_import_cycle(a, b):
    assert not (b in imports(a) and a in imports(b)), f"{a} and {b} import each other"


def test_agent_layer_never_imports_the_eval_or_distill():
    offenders = {m: sorted(d for d in imports(m) if d.startswith(("madopd_envs.eval", "madopd_distill")))
                 for m in MODULES if m.startswith("madopd_agents")}
    assert not {m: d for m, d in offenders.items() if d}


def test_env_layer_never_imports_distill_and_reaches_agents_only_from_the_eval():
    for m in (m for m in MODULES if m.startswith("madopd_envs")):
        deps = imports(m)
        assert not any(d.startswith("madopd_distill") for d in deps), m
        if not m.startswith("madopd_envs.eval"):
            assert not any(d.startswith("madopd_agents") for d in deps), m


def test_config_loading_is_shared_from_a_module_that_imports_neither_layer():
    assert {d for d in imports("madopd_envs.conf")} == set()
    assert "madopd_envs.conf" in imports("madopd_agents.registry")
    assert "madopd_envs.conf" in imports("madopd_envs.eval.config")
