"""The eval CLI end to end on a real engine (TextWorldExpress): results, kill -9 + resume, retries, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import madopd_envs
from madopd_envs.eval.__main__ import main
from madopd_envs.eval.config import Entry
from madopd_envs.eval.results import EpisodeStore
from madopd_envs.eval.runner import evaluate

ENV = "madopd/TWX-Coin-v0"
REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(not madopd_envs.spec(ENV).card.available, reason="textworld-express not installed")
METRICS = ("success_rate", "stderr", "mean_score", "score_stderr", "invalid_action_rate", "invalid_format_rate",
           "errored", "planned_episodes", "finished_episodes", "overall", "envs")


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_expert_run_writes_episodes_and_summary(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--agent", "expert", "--env", ENV, "--episodes", "5", "--output", str(out), "--no-progress"]) == 0
    records = _lines(out / "episodes.jsonl")
    assert len(records) == 5 and len({r["key"] for r in records}) == 5
    r = records[0]
    assert r["trajectory"] and r["trajectory"][0]["action"] and r["versions"]["harness"].startswith("madopd")
    assert "textworld-express" in r["versions"] or "textworld_express" in r["versions"]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("success_rate", "mean_score", "stderr"):
        assert isinstance(summary[key], float)
    # The summary is computed from the records (env correctness itself is the conformance suite's job).
    assert summary["success_rate"] == sum(r["won"] for r in records) / 5 > 0
    assert summary["envs"][ENV]["episodes"] == 5
    table = capsys.readouterr().out
    assert "| madopd/TWX-Coin-v0" in table and "success_rate" in table
    # A second run into the same folder without --resume refuses, and loses nothing.
    assert main(["--agent", "expert", "--env", ENV, "--episodes", "5", "--output", str(out), "--no-progress"]) == 2
    assert len(_lines(out / "episodes.jsonl")) == 5


def _conf(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    (conf / "agent").mkdir(parents=True)
    (conf / "agent" / "slow_random.yaml").write_text(
        "backend: agent_helpers:SlowRandomAgent\nargs: {seed: 3, delay: 0.05}\n")
    return conf


def _eval_cmd(out: Path, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "madopd_envs.eval", "--agent", "slow_random", "--env", "madopd/TWX-CookingWorld-v0",
           "--episodes", "8", "--max-steps", "12", "--num-envs", "2", "--output", str(out), "--no-progress"]
    return cmd + (["--resume"] if resume else [])


def _run_until(cmd: list[str], env: dict, episodes: Path, lines: int, sig: int) -> subprocess.Popen:
    """Start an eval and send it ``sig`` once ``episodes`` holds ``lines`` records."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if episodes.exists() and len(episodes.read_text().splitlines()) >= lines:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the eval ended before it could be interrupted"
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    return proc


def test_ctrl_c_and_kill9_midway_then_resume_give_the_uninterrupted_summary(tmp_path):
    env = {**os.environ, "MADOPD_CONF": str(_conf(tmp_path)), "PYTHONPATH": f"{HERE}{os.pathsep}{REPO}"}
    full, broken = tmp_path / "full", tmp_path / "broken"
    subprocess.run(_eval_cmd(full, False), env=env, check=True, capture_output=True, timeout=300)
    episodes = broken / "episodes.jsonl"

    interrupted = _run_until(_eval_cmd(broken, False), env, episodes, 2, signal.SIGINT)  # Ctrl-C
    assert interrupted.returncode == 130 and "--resume" in interrupted.stderr.read()
    n_int = len(_lines(episodes))
    killed = _run_until(_eval_cmd(broken, True), env, episodes, n_int + 2, signal.SIGKILL)  # kill -9
    assert killed.returncode == -signal.SIGKILL
    n_before = len(_lines(episodes))
    assert 2 <= n_int < n_before < 8 and not (broken / "summary.json").exists()

    done = subprocess.run(_eval_cmd(broken, True), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming: {n_before} of 8" in done.stderr
    records = _lines(episodes)
    keys = [r["key"] for r in records]
    assert len(keys) == 8 and len(set(keys)) == 8  # nothing lost, nothing duplicated
    a = json.loads((full / "summary.json").read_text())
    b = json.loads((broken / "summary.json").read_text())
    assert {k: a[k] for k in METRICS} == {k: b[k] for k in METRICS}
    ref = {r["key"]: r["trajectory"] for r in _lines(full / "episodes.jsonl")}
    assert all(ref[r["key"]] == r["trajectory"] for r in records)  # the same episodes, step for step


def test_partial_last_line_is_dropped_and_repaired(tmp_path):
    path = tmp_path / "episodes.jsonl"
    path.write_text('{"key": "a", "won": true}\n{"key": "b", "won": fal')
    store = EpisodeStore(path)
    assert list(store.load(repair=True)) == ["a"]
    assert path.read_text() == '{"key": "a", "won": true}\n'
    path.write_text('{"key": "a", "won": true}\n{"key": "b", "won": false}')  # complete, newline lost
    assert list(store.load(repair=True)) == ["a", "b"] and path.read_text().endswith("}\n")


def test_dead_worker_episode_is_retried_once_then_reported(tmp_path, monkeypatch):
    from agent_helpers import WorkerKillingExpert

    import madopd_agents.registry as reg

    env = madopd_envs.make(ENV)
    t0, t1, t2 = env.tasks("test")[:3]
    env.close()
    killer = WorkerKillingExpert(kill={t1: 1, t2: 2})  # t1 recovers, t2 dies twice
    monkeypatch.setattr(reg, "build_agent", lambda card: killer)
    entries = [Entry(env=ENV, split="test", episodes=3, max_steps=10, select="first")]
    summary = evaluate(agent_name="expert", agent_args={}, entries=entries, output=tmp_path / "r", num_envs=1,
                       progress=False, step_timeout=60, log=lambda m: None)
    records = {r["task_id"]: r for r in _lines(tmp_path / "r" / "episodes.jsonl")}
    assert set(records) == {t0, t1, t2}
    assert records[t0]["attempts"] == 1 and records[t0]["error"] is None
    assert records[t1]["attempts"] == 2 and records[t1]["won"] and "died" in records[t1]["first_error"]
    assert records[t2]["attempts"] == 2 and "died" in records[t2]["error"]
    assert summary["errored"] == 1 and summary["overall"]["episodes"] == 2 and summary["success_rate"] == 1.0


def test_student_4b_without_weights_fails_fast_with_instructions(tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty-hf-cache"), "HF_HUB_OFFLINE": "1"}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "madopd_envs.eval", "--agent", "student_4b", "--env", ENV,
                        "--episodes", "1", "--output", str(tmp_path / "o")], env=env, capture_output=True, text=True,
                       timeout=120)
    elapsed = time.monotonic() - t0
    assert r.returncode == 2
    assert "Qwen/Qwen3-4B" in r.stderr and "hf download" in r.stderr and "model=/path/to" in r.stderr
    assert "Traceback" not in r.stderr
    assert elapsed < 30, f"took {elapsed:.1f} s"  # ~1-3 s idle; generous for a loaded 2-core CI machine
    assert not (tmp_path / "o").exists()  # no env was started, nothing written


def test_bad_arguments_are_reported_in_words(tmp_path, capsys):
    assert main(["--agent", "expret", "--env", ENV, "--output", str(tmp_path / "a")]) == 2
    assert "Did you mean expert" in capsys.readouterr().err
    assert main(["--agent", "expert", "--env", "madopd/TWX-Con-v0", "--output", str(tmp_path / "b")]) == 2
    assert "TWX-Coin-v0" in capsys.readouterr().err
    assert main(["--agent", "expert", "--env", ENV, "--agent-args", "temperature=-1",
                 "--output", str(tmp_path / "c")]) == 2
    assert "temperature" in capsys.readouterr().err
