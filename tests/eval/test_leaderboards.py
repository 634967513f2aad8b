"""Leaderboard configs, planning, summary statistics, tables and the store renderer."""

from __future__ import annotations

import json
import math

import pytest

from madopd_envs.eval.config import ConfigError, Entry, list_configs, load_leaderboard, plan_entry, select_tasks
from madopd_envs.eval.report import load_store, main as report_main
from madopd_envs.eval.results import metrics, summarize
from madopd_envs.eval.tables import leaderboard_table, summary_table
from madopd_envs.registry import spec

FAMILY_BOARDS = {"default", "twx", "alfworld", "scienceworld", "webshop", "humaneval", "all"}


def test_every_leaderboard_loads_and_names_registered_envs(monkeypatch):
    monkeypatch.setenv("ALFWORLD_DATA", "/data/alfworld")
    monkeypatch.setenv("WEBSHOP_DATA", "/data/webshop")
    assert FAMILY_BOARDS <= set(list_configs("leaderboard"))
    for name in list_configs("leaderboard"):
        board = load_leaderboard(name)
        for entry in board.entries:
            s = spec(entry.env)  # raises for an unknown id
            assert entry.split in s.card.splits, (name, entry)
    assert dict(load_leaderboard("alfworld_official").entries[0].env_kwargs) == {"data_path": "/data/alfworld"}
    assert len(load_leaderboard("all").entries) == sum(len(load_leaderboard(n).entries)
                                                       for n in ("twx", "alfworld", "scienceworld", "webshop", "humaneval"))


def test_bad_configs_fail_with_the_file_and_the_fix(tmp_path, monkeypatch):
    (tmp_path / "leaderboard").mkdir()
    (tmp_path / "leaderboard" / "loop.yaml").write_text("include: [loop]\n")
    (tmp_path / "leaderboard" / "typo.yaml").write_text("entries:\n  - {env: madopd/TWX-Coin-v0, episods: 3}\n")
    monkeypatch.setenv("MADOPD_CONF", str(tmp_path))
    with pytest.raises(ConfigError, match="cycle"):
        load_leaderboard("loop")
    with pytest.raises(ConfigError, match="typo.yaml entry 0.*episods"):
        load_leaderboard("typo")
    with pytest.raises(ConfigError, match="known: .*default"):
        load_leaderboard("defualt")


def test_planning_is_deterministic_and_spreads_over_the_split():
    ids = [f"t{i}" for i in range(10)]
    assert select_tasks(ids, 4) == ["t0", "t2", "t5", "t7"] and select_tasks(ids, 3, "first") == ["t0", "t1", "t2"]
    plan = plan_entry(Entry(env="madopd/TWX-Coin-v0", episodes=20, max_steps=5, seeds=(0, 1)), ids)
    assert len(plan.units) == 20 and len({u.key for u in plan.units}) == 20 and plan.notes
    with pytest.raises(ConfigError, match="no tasks"):
        plan_entry(Entry(env="madopd/TWX-Coin-v0", task_ids=("zz",)), ids)


def _rec(env, won, score, steps=4, invalid=1, task_type=None, error=None, key=None):
    return {"key": key or f"{env}|{won}|{score}|{task_type}|{error}", "env": env, "split": "test", "family": "f",
            "won": won, "score": score, "steps": steps, "invalid_actions": invalid, "invalid_format": 0,
            "completion_tokens": 0, "task_type": task_type, "error": error, "versions": {"harness": "h"}}


def test_summary_statistics_by_env_and_task_type():
    recs = [_rec("e/A-v0", True, 1.0, task_type="x"), _rec("e/A-v0", False, 0.5, task_type="y"),
            _rec("e/A-v0", False, 0.0, task_type="y"), _rec("e/B-v0", True, 1.0),
            _rec("e/B-v0", False, 0.0, error="worker died")]
    m = metrics(recs[:3])
    assert m["success_rate"] == pytest.approx(1 / 3) and m["mean_score"] == pytest.approx(0.5)
    assert m["stderr"] == pytest.approx(math.sqrt((2 * (1 / 3) ** 2 + (2 / 3) ** 2) / 2 / 3))
    assert m["invalid_action_rate"] == pytest.approx(0.25)
    s = summarize(recs, agent="a", leaderboard="b", planned=5, versions={})
    assert s["errored"] == 1 and s["overall"]["episodes"] == 4 and s["success_rate"] == 0.5
    assert s["envs"]["e/A-v0"]["task_types"]["y"]["episodes"] == 2 and "task_types" not in s["envs"]["e/B-v0"]
    assert summarize(recs[::-1], agent="a", leaderboard="b", planned=5, versions={}) == s  # order-free
    two = summarize(recs[:1] + [{**recs[1], "split": "valid"}], agent="a", leaderboard=None, planned=2, versions={})
    assert set(two["envs"]) == {"e/A-v0 [test]", "e/A-v0 [valid]"}
    table = summary_table(s)
    assert "| e/A-v0" in table and "|   y" in table and "**all**" in table


def test_store_renders_markdown_and_html_with_plot(tmp_path, capsys):
    for agent, won in (("expert", True), ("random", False)):
        d = tmp_path / "default" / agent
        d.mkdir(parents=True)
        s = summarize([_rec("e/A-v0", won, float(won)), _rec("e/B-v0", won, 0.5)], agent=agent, leaderboard="default",
                      planned=2, versions={"harness": "h"})
        (d / "summary.json").write_text(json.dumps(s))
        (d / "run.json").write_text(json.dumps({"command": f"python -m madopd_envs.eval --agent {agent}"}))
    boards = load_store(tmp_path)
    assert list(boards) == ["default"] and len(boards["default"]) == 2
    assert "1.000 ± 0.000" in leaderboard_table(boards["default"])
    assert report_main(["--store", str(tmp_path)]) == 0
    md = (tmp_path / "README.md").read_text()
    assert "## default" in md and "`python -m madopd_envs.eval --agent random`" in md
    page = (tmp_path / "index.html").read_text()
    assert page.count("data:image/png;base64,iVBOR") == 1 and "<table" in page
    assert report_main(["--store", str(tmp_path / "empty")]) == 2


def test_a_leaderboard_names_its_workers_backend(tmp_path, monkeypatch, capsys):
    """``workers: {backend: ray, ray_address: ...}`` in the YAML reaches the env workers (here: a Ray
    address nobody listens on, refused in one line); a bad backend is a config error."""
    from madopd_envs.eval.__main__ import main

    (tmp_path / "leaderboard").mkdir()
    entry = "entries:\n  - {env: madopd/TWX-Coin-v0, split: test, episodes: 1, max_steps: 2}\n"
    (tmp_path / "leaderboard" / "onray.yaml").write_text(entry + "workers: {backend: ray, ray_address: '127.0.0.1:9'}\n")
    (tmp_path / "leaderboard" / "badworkers.yaml").write_text(entry + "workers: {backend: threads}\n")
    monkeypatch.setenv("MADOPD_CONF", str(tmp_path))
    assert load_leaderboard("onray").workers == {"backend": "ray", "ray_address": "127.0.0.1:9"}
    with pytest.raises(ConfigError, match="badworkers.yaml: workers may have backend"):
        load_leaderboard("badworkers")
    assert main(["--agent", "random", "--leaderboard", "onray", "--output", str(tmp_path / "out")]) == 2
    assert "cannot reach a Ray cluster at 127.0.0.1:9" in capsys.readouterr().err
    # the command line wins over the leaderboard
    assert main(["--agent", "random", "--leaderboard", "onray", "--backend", "process", "--no-progress",
                 "--output", str(tmp_path / "out2")]) == 0
