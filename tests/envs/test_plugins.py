"""Plugins: third-party env packages installed by pip (real dist-info and entry points), not a patched registry.

``tiny_bench`` (a working env) and ``broken_bench`` (three broken entry points) are pip-installed into a
temporary folder that goes on ``PYTHONPATH`` of fresh processes; the tests list, check, evaluate and
``gymnasium.make`` the plugin env, see every broken plugin reported in one line while the rest works,
and install the skeleton ``python -m madopd_envs new`` writes, which passes ``check`` as generated.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "plugins"
PLUGIN_ID = "tiny_bench/Count-v0"
BROKEN = {"broken_import": "ModuleNotFoundError", "broken_clash": "'madopd/' namespace belongs to the built-in envs",
          "broken_namespace": "'tiny_bench/' namespace belongs to plugin tiny_bench"}


def pip_install(target: Path, *projects: Path) -> None:
    """A real install (wheel built by setuptools, dist-info with entry_points.txt), offline and without deps."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-build-isolation",
                    "--target", str(target), *map(str, projects)], check=True, capture_output=True, text=True)


def run(args: list[str], site: Path, cwd: Path, extra_env: dict[str, str] | None = None,
        timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", **(extra_env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plugins")
    for name in ("tiny_bench", "broken_bench"):
        shutil.copytree(FIXTURES / name, root / "src" / name)  # setuptools builds inside the project folder
    pip_install(root / "site", root / "src" / "tiny_bench", root / "src" / "broken_bench")
    assert (root / "site" / "tiny_bench-0.3.1.dist-info" / "entry_points.txt").is_file()
    return root / "site"


def test_list_shows_the_plugin_with_its_package_and_each_broken_plugin_in_one_line(site, tmp_path):
    out = run(["-m", "madopd_envs", "list", "--json"], site, tmp_path)
    assert out.returncode == 0, out.stderr
    listing = json.loads(out.stdout)
    envs = {r["id"]: r for r in listing["envs"]}
    assert envs[PLUGIN_ID]["package"] == "tiny-bench" and envs[PLUGIN_ID]["version"] == "0.3.1"
    assert envs[PLUGIN_ID]["source"] == "plugin tiny_bench" and envs[PLUGIN_ID]["family"] == "count"
    # the clash did not replace the built-in, and a failing plugin's other ids were undone
    assert envs["madopd/TWX-Coin-v0"]["package"] == "madopd" and envs["madopd/TWX-Coin-v0"]["source"] == "built-in"
    assert "broken_clash/Fine-v0" not in envs
    broken = {b["plugin"].split()[0]: b["error"] for b in listing["broken_plugins"]}
    assert set(broken) == set(BROKEN)
    for name, phrase in BROKEN.items():
        assert phrase in broken[name] and "\n" not in broken[name]
    assert "needs_engine.py:3" in broken["broken_import"]  # the plugin's own line, not the registry's

    table = run(["-m", "madopd_envs", "list"], site, tmp_path)
    assert table.returncode == 0
    plugin_rows = [line for line in table.stdout.splitlines() if line.startswith(PLUGIN_ID)]
    assert len(plugin_rows) == 1 and "tiny-bench 0.3.1" in plugin_rows[0]
    broken_lines = [line for line in table.stdout.splitlines() if line.startswith("broken plugin ")]
    assert sorted(line.split()[2] for line in broken_lines) == sorted(BROKEN)


def test_lookup_is_lazy_and_gymnasium_make_reaches_the_plugin(site, tmp_path):
    code = """
import json, sys
import gymnasium
import madopd_envs
after_import = [m for m in ("tiny_bench", "broken_bench") if m in sys.modules]
spec = madopd_envs.spec("tiny_bench/Count-v0")          # loads the entry point named after the namespace only
broken_loaded = sorted(m for m in sys.modules if m.startswith("broken_bench."))
env = gymnasium.make("tiny_bench/Count-v0")
obs, info = env.reset(seed=0)
env.close()
print(json.dumps({"after_import": after_import, "broken_loaded": broken_loaded, "obs": obs,
                  "limit": env.spec.max_episode_steps, "package": [spec.package, spec.version]}))
"""
    out = run(["-c", code], site, tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["after_import"] == [] and r["broken_loaded"] == []
    assert r["obs"].startswith("Count from 1 to") and r["limit"] == 12 and r["package"] == ["tiny-bench", "0.3.1"]

    # Gymnasium's own "module:id" form, in a process that never imports madopd_envs itself
    code = ("import gymnasium; env = gymnasium.make('tiny_bench:tiny_bench/Count-v0'); "
            "obs, info = env.reset(seed=1); print(type(env.unwrapped).__name__, info['task_id'])")
    out = run(["-c", code], site, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "CountEnv" and out.stdout.split()[1].startswith("test-")


def test_check_passes_on_the_plugin_by_id_and_by_class(site, tmp_path):
    out = run(["-m", "madopd_envs", "check", PLUGIN_ID], site, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert len([line for line in lines if line.startswith("PASS ")]) == 9 and "9/9 checks passed" in lines[-1]
    out = run(["-m", "madopd_envs", "check", "tiny_bench.env:CountEnv", "--json"], site, tmp_path)
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["passed"] and len(report["checks"]) == 9


BAD_ENVS = '''
import random
from madopd_envs import TextEnv


class Base(TextEnv):
    splits = ("test",)

    def tasks(self, split=None):
        return ["a", "b"]

    def _load(self, task_id, split):
        return "Say go.", {"task": "go", "admissible_actions": ["go"]}


class Crashes(Base):
    calls = 0

    def tasks(self, split=None):  # a new list on every call
        Crashes.calls += 1
        return ["a", f"b{Crashes.calls}"]

    def _load(self, task_id, split):
        return "Say go.", {"task": 3, "admissible_actions": ["go"]}

    def _act(self, action):
        raise RuntimeError("engine crashed")


class Drifts(Base):
    def _act(self, action):
        valid = action == "go"
        return f"You rolled {random.random()}.", 0.0, False, {"task": "go", "admissible_actions": ["go"],
                                                                "action_valid": valid}
'''


def test_check_names_each_failure_and_exits_1(site, tmp_path):
    (tmp_path / "bad_envs.py").write_text(BAD_ENVS)
    out = run(["-m", "madopd_envs", "check", "bad_envs:Crashes"], site, tmp_path,
              extra_env={"PYTHONPATH": f"{site}{os.pathsep}{tmp_path}"})
    assert out.returncode == 1
    lines = {line.split()[1]: line for line in out.stdout.splitlines() if line.startswith(("PASS ", "FAIL "))}
    assert lines["tasks"].startswith("FAIL") and "not deterministic" in lines["tasks"]
    assert lines["reset"].startswith("FAIL") and "info['task'] is int" in lines["reset"]
    assert lines["determinism"].startswith("FAIL")
    assert "raised RuntimeError: engine crashed" in lines["determinism"] and "bad_envs.py" in lines["determinism"]
    assert lines["text_env"].startswith("PASS") and lines["close"].startswith("PASS")  # each check on its own

    out = run(["-m", "madopd_envs", "check", "bad_envs:Drifts", "--json"], site, tmp_path,
              extra_env={"PYTHONPATH": f"{site}{os.pathsep}{tmp_path}"})
    report = json.loads(out.stdout)
    failed = {c["name"]: c["detail"] for c in report["checks"] if not c["passed"]}
    assert out.returncode == 1 and not report["passed"] and set(failed) == {"gymnasium_checker", "determinism"}
    assert "step 1 (action 'go') differs in observation" in failed["determinism"]

    out = run(["-m", "madopd_envs", "check", "nowhere/Nothing-v0"], site, tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("error: No environment") and out.stdout == ""


def test_eval_cli_leaderboard_config_and_report_carry_the_plugin_card(site, tmp_path):
    conf = tmp_path / "conf" / "leaderboard"
    conf.mkdir(parents=True)
    (conf / "plug.yaml").write_text("name: plug\nentries:\n"
                                    "  - {env: tiny_bench/Count-v0, split: test, episodes: 2}\n"
                                    "  - {env: 'tiny_bench:tiny_bench/Count-v0', split: train, episodes: 1}\n")
    out = run(["-m", "madopd_envs.eval", "--agent", "expert", "--leaderboard", "plug", "--num-envs", "1",
               "--output", str(tmp_path / "store" / "plug" / "expert"), "--no-progress"], site, tmp_path,
              extra_env={"MADOPD_CONF": str(tmp_path / "conf")})
    assert out.returncode == 0, out.stderr
    run_dir = tmp_path / "store" / "plug" / "expert"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished_episodes"] == 3 and summary["errored"] == 0
    assert {r["won"] for r in map(json.loads, (run_dir / "episodes.jsonl").read_text().splitlines())} == {True}
    cards = json.loads((run_dir / "run.json").read_text())["env_cards"]
    assert cards[PLUGIN_ID]["package"] == "tiny-bench" and cards[PLUGIN_ID]["version"] == "0.3.1"
    assert cards[PLUGIN_ID]["license"] == "CC0 (tests of madopd)" and cards[PLUGIN_ID]["splits"] == {"train": 5, "test": 5}
    assert cards["tiny_bench:tiny_bench/Count-v0"]["id"] == PLUGIN_ID

    out = run(["-m", "madopd_envs.eval.report", "--store", str(tmp_path / "store")], site, tmp_path)
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "store" / "index.html").read_text()
    assert "<table class='cards'>" in page and "tiny-bench 0.3.1" in page and "CC0 (tests of madopd)" in page


def test_new_writes_a_package_that_installs_and_passes_check(site, tmp_path):
    out = run(["-m", "madopd_envs", "new", "MyBench", "--dir", str(tmp_path / "my_bench")], site, tmp_path)
    assert out.returncode == 0, out.stderr
    project = tmp_path / "my_bench"
    assert {"pyproject.toml", "my_bench/__init__.py", "my_bench/env.py", "tests/test_my_bench.py"} <= \
        {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}
    assert '[project.entry-points."madopd.envs"]' in (project / "pyproject.toml").read_text()
    env_py = (project / "my_bench" / "env.py").read_text()
    assert all(f"def {m}(" in env_py for m in ("tasks", "_load", "_act"))

    skeleton_site = tmp_path / "site"
    pip_install(skeleton_site, project)
    paths = {"PYTHONPATH": f"{skeleton_site}{os.pathsep}{site}"}
    out = run(["-m", "madopd_envs", "check", "my_bench/MyBench-v0"], site, tmp_path, extra_env=paths)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "my_bench/MyBench-v0: 9/9 checks passed" in out.stdout
    out = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], site, project, extra_env=paths)
    assert out.returncode == 0 and "2 passed" in out.stdout, out.stdout + out.stderr



def test_new_refuses_bad_names_and_a_full_folder(tmp_path, capsys):
    from madopd_envs.__main__ import main

    assert main(["new", "my-bench", "--dir", str(tmp_path / "x")]) == 2
    assert "CamelCase" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert main(["new", "MyBench", "--dir", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err and not (tmp_path / "full" / "pyproject.toml").exists()


def test_train_cli_trains_on_the_plugin_env(site, tmp_path):
    from madopd_agents.zoo import tiny_model_dir

    out = tmp_path / "opd"
    args = ["-m", "madopd_distill.train", f"env={PLUGIN_ID}", f"student={tiny_model_dir('S', seed=0)}",
            f"teacher={tiny_model_dir('S', seed=1)}", "rollout.num_envs=1", "rollout.tasks_per_step=2",
            "rollout.group_size=1", "rollout.max_new_tokens=6", "rollout.max_env_steps=2", "eval.num_tasks=1",
            "steps=1", f"output_dir={out}"]
    proc = run(args, site, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1]
