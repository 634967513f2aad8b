"""ScienceWorld on the real engine: splits, scoring and failure, gold-path expert, lazy valid actions,
deterministic reloads, JVM memory cap, crash detection/restart, and no JVM left behind.

One module-wide env (one JVM) serves most tests: a JVM start and a first load cost seconds here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

import madopd_envs
from madopd_envs.jvm import EngineCrashed, child_jvms, java_process
from madopd_envs.scienceworld.tasks import (
    GOLD_MEASURED,
    LONGEST_GOLD,
    STEP_LIMITS,
    TASKS,
    check_with_engine,
    parse_simplifications,
    parse_task_id,
    split_of,
    step_limit_rule,
    task_ids,
    variations,
)

pytest.importorskip("scienceworld")

SHORT = "lifespan-longest-lived/93"  # a test variation whose gold path is 4 actions
LONG = "boil/22"  # a test variation whose gold path (162 actions; won after more than 100) exceeds the paper's 100 steps


@pytest.fixture(scope="module")
def env():
    e = madopd_envs.make("madopd/ScienceWorld-v0", expert=True, split="test")
    yield e
    e.close()


# -- the task table (no JVM) ---------------------------------------------------------------------
def test_table_holds_30_tasks_and_7207_contiguous_variations():
    assert len(TASKS) == 30
    sizes = {s: len(task_ids(s)) for s in ("train", "valid", "test")}
    assert sizes == {"train": 3592, "valid": 1796, "test": 1819} and sum(sizes.values()) == 7207
    assert madopd_envs.spec("madopd/ScienceWorld-v0").card.splits == sizes
    for task in TASKS:
        tr, dv, te = (variations(task, s) for s in ("train", "valid", "test"))
        assert tr.start == 0 and tr.stop == dv.start and dv.stop == te.start
    assert split_of("boil", 13) == "train" and split_of("boil", 14) == "valid" and split_of("boil", 29) == "test"


def test_every_task_has_a_step_limit_that_its_longest_gold_path_fits():
    assert set(LONGEST_GOLD) == set(TASKS) == set(STEP_LIMITS)
    for task, longest in LONGEST_GOLD.items():
        assert STEP_LIMITS[task] == step_limit_rule(longest) >= max(100, longest), task
    assert LONGEST_GOLD["boil"] > 100  # the paper's fixed 100 steps cannot win every variation
    assert all(0 < k <= sum(TASKS[t][1:]) for t, (_, k) in GOLD_MEASURED.items())  # variations measured
    spec = madopd_envs.spec("madopd/ScienceWorld-v0")
    assert spec.max_episode_steps == max(STEP_LIMITS.values())  # the eval's cap; each task ends at its own
    assert "max(100, 10 * ceil(1.25 * longest gold path / 10))" in spec.card.metrics


def test_bad_task_ids_and_simplifications_fail_in_words():
    assert parse_task_id("boil/17") == ("boil", 17)
    with pytest.raises(ValueError, match="Did you mean 'boil'"):
        parse_task_id("boill/3")
    with pytest.raises(ValueError, match="0..29"):
        parse_task_id("boil/30")
    with pytest.raises(ValueError, match="look like"):
        parse_task_id("boil")
    assert parse_simplifications("easy") == "easy"
    assert parse_simplifications(["openDoors", "teleportAction"]) == "openDoors,teleportAction"
    with pytest.raises(ValueError, match="Did you mean 'openDoors'"):
        parse_simplifications("openDoor")
    with pytest.raises(ValueError, match="connect"):
        madopd_envs.make("madopd/ScienceWorld-v0", simplification="noElectricalAction")
    with pytest.raises(ValueError, match="unknown ScienceWorld task"):
        madopd_envs.make("madopd/ScienceWorld-v0", tasks=["boiling"])


def test_task_outside_the_split_is_refused_before_any_jvm_starts():
    e = madopd_envs.make("madopd/ScienceWorld-v0", split="test")
    with pytest.raises(ValueError, match="is in split 'train', not 'test'"):
        e.reset(options={"task_id": "boil/0"})
    assert e._engine is None
    e.close()


# -- the engine ------------------------------------------------------------------------------
def test_table_matches_the_engine(env):
    env.reset(options={"task_id": SHORT})
    assert check_with_engine(env._engine, tasks=["boil", "find-plant", "mendelian-genetics-unknown-plant"]) == []


def test_jvm_runs_with_capped_heap_and_deterministic_hashes(env):
    env.reset(options={"task_id": SHORT})
    options = psutil.Process(java_process(env._engine).pid).environ()["JAVA_TOOL_OPTIONS"]
    assert "-Xmx384m" in options and "-XX:hashCode=2" in options


def test_gold_path_expert_wins_with_full_score(env):
    obs, info = env.reset(options={"task_id": SHORT})
    assert "longest life span" in info["task"] and info["raw_score"] == 0.0
    total, steps, term = 0.0, 0, False
    while not term:
        assert info["expert_action"], f"expert ran out at step {steps}"
        obs, reward, term, trunc, info = env.step(info["expert_action"])
        total, steps = total + reward, steps + 1
        assert not trunc
    assert info["won"] and info["score"] == 1.0 and info["raw_score"] == 100.0
    assert total == pytest.approx(1.0)  # rewards are score deltas
    assert steps <= 4
    assert info["expert_action"] is None  # the episode is over: no next action (was a stale "wait1")


def test_expert_wins_a_gold_path_longer_than_100_steps_within_the_task_limit(env):
    env.admissible = False  # 102 steps: skip the listing
    try:
        _, info = env.reset(options={"task_id": LONG})
        assert env.max_episode_steps == STEP_LIMITS["boil"] > 100
        steps, term, trunc = 0, False, False
        while not (term or trunc):
            _, _, term, trunc, info = env.step(info["expert_action"])
            steps += 1
    finally:
        env.admissible = True
    assert info["won"] and not trunc and steps > 100
    assert info["expert_action"] is None


def test_step_limit_cap_truncates_and_withdraws_the_expert(env):
    cap, env.step_cap = env.step_cap, 2  # as make(..., max_episode_steps=2)
    try:
        _, info = env.reset(options={"task_id": SHORT})
        assert env.max_episode_steps == 2  # min(the cap, the task's limit)
        _, _, term, trunc, info = env.step(info["expert_action"])
        assert not (term or trunc) and info["expert_action"]
        _, _, term, trunc, info = env.step(info["expert_action"])
        assert trunc and not term and info["expert_action"] is None
    finally:
        env.step_cap = cap


def test_failure_is_minus_100_raw_zero_score_and_ends_the_episode(env):
    env.reset(options={"task_id": SHORT})
    env.step("open door to outside")
    _, _, _, _, info = env.step("go to outside")
    assert info["raw_score"] == 50.0 and info["score"] == 0.5
    obs, reward, term, trunc, info = env.step("focus on baby baby mouse")  # the wrong animal
    assert term and not info["won"]
    assert info["raw_score"] == -100.0 and info["score"] == 0.0 and reward == pytest.approx(-0.5)


def test_leaving_the_gold_path_withdraws_the_expert(env):
    _, info = env.reset(options={"task_id": SHORT})
    assert info["expert_action"] == "open door to outside"
    _, _, _, _, info = env.step("look around")
    assert info["expert_action"] is None


def test_unparsed_action_is_invalid_and_answered(env):
    env.reset(options={"task_id": SHORT})
    obs, reward, term, trunc, info = env.step("fly to the moon")
    assert obs.startswith("No known action") and info["action_valid"] is False and not term


def test_valid_actions_joined_on_the_java_side_equal_the_packages_list(env):
    # The wrapper fetches the listing as one joined string; the package iterates py4j's list proxy.
    # boil/22's first state lists the same 417 actions in the same order on every call.
    env.reset(options={"task_id": LONG})
    joined = env.admissible_actions()
    assert joined == list(env._engine.server.getValidActionObjectCombinations())
    assert len(joined) > 300 and all(a and "\x1e" not in a for a in joined)


def test_valid_action_listing_is_optional_and_changes_nothing_else(env):
    actions = ["open door to outside", "go to outside", "look around"]
    traces = {}
    for admissible in (True, False):
        env.admissible = admissible
        obs, info = env.reset(options={"task_id": SHORT})
        trace = [(obs, info["raw_score"])]
        for a in actions:
            obs, r, term, trunc, info = env.step(a)
            trace.append((obs, r, term, info["raw_score"], info["action_valid"]))
        traces[admissible] = (trace, info["admissible_actions"], env.admissible_actions())
    env.admissible = True
    assert traces[True][0] == traces[False][0]
    assert traces[False][1] is None
    assert traces[True][1] == traces[False][2] and "focus on crocodile" in traces[True][1]


def test_reloads_are_deterministic_whatever_was_loaded_before(env):
    # With the engine's default identity hashes these render their objects in varying orders.
    seen: dict[str, set[str]] = {"find-animal/263": set(), "chemistry-mix/24": set()}
    env.admissible = False  # not needed here, and each listing costs tens of ms
    try:
        for task_id in list(seen) * 3:
            obs, _ = env.reset(options={"task_id": task_id})
            seen[task_id].add(obs)
    finally:
        env.admissible = True
    assert all(len(s) == 1 for s in seen.values()), seen


def test_simplification_as_a_reset_option(env):
    plain_obs, plain = env.reset(options={"task_id": "find-animal/263"})
    easy_obs, easy = env.reset(options={"task_id": "find-animal/263", "simplification": "easy"})
    assert not any(a.startswith("teleport to") for a in plain["admissible_actions"])
    assert "teleport to kitchen" in easy["admissible_actions"]
    assert "hallway (that is closed)" in plain_obs and "hallway (that is open)" in easy_obs
    _, after = env.reset(options={"task_id": "find-animal/263"})  # one episode only
    assert after["admissible_actions"] == plain["admissible_actions"]


def test_crashed_jvm_is_reported_and_replaced_on_reset(env):
    env.reset(options={"task_id": SHORT})
    proc = java_process(env._engine)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    with pytest.raises(EngineCrashed, match=r"exited with code -9.*next reset\(\) starts a new JVM"):
        env.step("open door to outside")
    with pytest.raises(EngineCrashed, match=r"call reset\(\)"):
        env.step("open door to outside")
    obs, info = env.reset(options={"task_id": SHORT})
    assert "greenhouse" in obs and java_process(env._engine).pid != proc.pid
    _, _, _, _, info = env.step(info["expert_action"])
    assert info["action_valid"]


CRASH_SCRIPT = textwrap.dedent("""
    import logging, os, signal
    import madopd_envs
    from madopd_envs.jvm import EngineCrashed, java_process
    e = madopd_envs.make("madopd/ScienceWorld-v0", split="test", admissible=False)
    e.reset(options={"task_id": "%s"})
    proc = java_process(e._engine)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    try:
        e.step("look around")
    except EngineCrashed as exc:
        print("CRASH", exc)
    e.close()
    print("ROOT", logging.getLogger().handlers)
""" % SHORT)


def test_a_jvm_crash_is_one_line_and_leaves_the_root_logger_alone():
    # A fresh interpreter: pytest configures the root logger of its own process.
    out = subprocess.run([sys.executable, "-c", CRASH_SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr == ""  # py4j printed ~190 lines of tracebacks here
    lines = out.stdout.splitlines()
    assert len([ln for ln in lines if ln.startswith("CRASH")]) == 1 and "exited with code -9" in lines[0]
    assert lines[-1] == "ROOT []"  # py4j's logging.info() used to basicConfig() the user's root logger


def test_close_is_idempotent_and_ends_the_jvm(env):  # last user of the module's env
    env.reset(options={"task_id": SHORT})
    proc = java_process(env._engine)
    assert proc.pid in child_jvms()
    env.close()
    env.close()
    assert proc.poll() is not None and proc.pid not in child_jvms()


# -- full runs (make test-slow) ----------------------------------------------------------------
@pytest.mark.slow
def test_table_matches_the_engine_for_every_task():
    assert check_with_engine() == []


@pytest.mark.slow
def test_gold_path_expert_wins_one_test_variation_of_every_task(tmp_path):
    import json

    from madopd_envs.eval.config import Entry
    from madopd_envs.eval.runner import evaluate

    env = madopd_envs.make("madopd/ScienceWorld-v0", split="test")
    first: dict[str, str] = {}
    for task_id in env.tasks("test"):
        first.setdefault(task_id.split("/")[0], task_id)
    env.close()
    # The registered cap: each episode ends at its task's own limit, which its gold path fits.
    cap = madopd_envs.spec("madopd/ScienceWorld-v0").max_episode_steps
    entry = Entry(env="madopd/ScienceWorld-v0", split="test", episodes=len(first), task_ids=tuple(first.values()),
                  max_steps=cap, env_kwargs=(("admissible", False),))
    evaluate(agent_name="expert", agent_args={}, entries=[entry], output=tmp_path / "run", num_envs=2,
             progress=False, log=lambda _: None)
    records = [json.loads(line) for line in (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()]
    assert len(records) == 30
    lost = [(r["task_id"], r["raw_score"], r["steps"]) for r in records if not r["won"]]
    assert not lost, lost
