"""madopd/ALFWorld-v0 on the real engine: conformance, shipped sets, expert, official layout, train cache."""

import collections
import json
import shutil

import pytest

pytest.importorskip("alfworld")
pytest.importorskip("textworld")

import madopd_envs  # noqa: E402
from madopd_envs.alfworld import data, generate, scenes  # noqa: E402
from madopd_envs.testing import check_text_env  # noqa: E402

ENV_ID = "madopd/ALFWorld-v0"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    # Tests never read a user's ALFWORLD_DATA nor write to their cache.
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    monkeypatch.setenv("MADOPD_CACHE", str(tmp_path / "cache"))


def test_conformance_valid_seen():
    # valid_unseen is the default split: tests/envs/test_conformance.py checks it (plain and expert mode).
    check_text_env(madopd_envs.make(ENV_ID, split="valid_seen"))


@pytest.mark.parametrize("split", ["valid_seen", "valid_unseen"])
def test_shipped_eval_sets_match_the_generator_and_upstreams_mix(split):
    records = list(generate.read_bundle(data.BUNDLE_DIR / f"{split}.jsonl.gz"))
    ids = [r["id"] for r in records]
    assert ids == madopd_envs.make(ENV_ID).tasks(split) == sorted(scenes.game_id(split, i, 0)
                                                                 for i in range(data.SPLIT_SIZES[split]))
    counts = collections.Counter(r["traj_data"]["task_type"] for r in records)
    assert counts == scenes.UPSTREAM_MIX[split]
    assert all(0 < len(r["walkthrough"]) <= generate.EXPERT_STEP_LIMIT for r in records)
    if split == "valid_unseen":
        assert {r["traj_data"]["scene"]["scene_num"] for r in records} <= set(scenes.UNSEEN_ROOMS)


def _expert_episode(env, task_id):
    obs, info = env.reset(seed=0, options={"task_id": task_id})
    trace, actions = [(obs, info)], []
    while True:
        actions.append(info["expert_action"])
        obs, reward, term, trunc, info = env.step(actions[-1])
        trace.append((obs, reward, term, trunc, info))
        if term or trunc:
            return trace, actions


def test_expert_solves_one_game_of_each_type_with_its_stored_walkthrough():
    records = {r["id"]: r for r in generate.read_bundle(data.BUNDLE_DIR / "valid_unseen.jsonl.gz")}
    env = madopd_envs.make(ENV_ID, expert=True)
    shortest = {}  # per task type, the game with the shortest walkthrough (keeps the test quick)
    for task_id, r in sorted(records.items(), key=lambda kv: (len(kv[1]["walkthrough"]), kv[0])):
        shortest.setdefault(r["traj_data"]["task_type"], task_id)
    assert set(shortest) == set(scenes.TASK_TYPES)
    for task_type, task_id in shortest.items():
        trace, actions = _expert_episode(env, task_id)
        final = trace[-1][4]
        assert final["won"] and final["score"] == 1.0 and trace[-1][1] == 1.0 and trace[-1][2], task_id
        assert final["task_type"] == task_type and final["alfworld_version"] == "0.4.2"
        assert actions == records[task_id]["walkthrough"]  # deterministic expert, same as at generation
        assert all(t[4]["action_valid"] for t in trace[1:])
    env.close()


def test_invalid_actions_are_answered_by_the_engine_and_marked_invalid():
    env = madopd_envs.make(ENV_ID)
    obs, info = env.reset(seed=1)
    assert "Your task is to: " in obs and info["task"] and info["task_type"] in scenes.TASK_TYPES
    assert "expert_action" not in info
    for action in ("put the moon in the fridge", "move apple 1 to nowhere 9"):
        obs, reward, term, trunc, info = env.step(action)
        assert obs == "Nothing happens." and info["action_valid"] is False and reward == 0.0 and not term
    obs, _, _, _, info = env.step(f"  {info['admissible_actions'][0]}  ")
    assert info["action_valid"] is True and obs != "Nothing happens."
    env.close()


def _official_fixture(root):
    """Two games written by the generator CLI in upstream's layout, plus what upstream skips."""
    assert generate.main(["--out", str(root), "--split", "valid_unseen", "--n", "2", "--workers", "1"]) == 0
    split_dir = root / "json_2.1.1" / "valid_unseen"
    games = sorted(p.parent for p in split_dir.rglob("game.tw-pddl"))
    assert len(games) == 2
    # Directories upstream's loader skips: movable and sliced tasks, games not marked solvable.
    shutil.copytree(games[0], split_dir / "pick_and_place_with_movable_recep-Apple-Bowl-Fridge-10" / "trial_X")
    shutil.copytree(games[0], split_dir / "pick_and_place_simple-AppleSliced-None-Fridge-10" / "trial_X")
    unsolvable = split_dir / "pick_and_place_simple-Apple-None-Fridge-10" / "trial_X"
    shutil.copytree(games[0], unsolvable)
    doc = json.loads((unsolvable / "game.tw-pddl").read_text())
    doc["solvable"] = False
    (unsolvable / "game.tw-pddl").write_text(json.dumps(doc))
    return [g.relative_to(root / "json_2.1.1").as_posix() for g in games]


def test_official_layout_fixture_gives_the_same_games_and_traces(tmp_path, monkeypatch):
    ids = _official_fixture(tmp_path / "alfworld_data")
    assert sorted(ids) == sorted(scenes.game_id("valid_unseen", i, 0) for i in range(2))
    official = madopd_envs.make(ENV_ID, expert=True, data_path=str(tmp_path / "alfworld_data"))
    assert official.tasks("valid_unseen") == sorted(ids)
    assert official.tasks("train") == [] and official.tasks("valid_seen") == []
    default = madopd_envs.make(ENV_ID, expert=True)
    for task_id in ids:
        assert _expert_episode(official, task_id) == _expert_episode(default, task_id)
    # ALFWORLD_DATA selects the same data; the official data passes the conformance suite.
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "alfworld_data"))
    env = madopd_envs.make(ENV_ID)
    assert env.tasks("valid_unseen") == sorted(ids)
    check_text_env(env, run_gymnasium_checker=False)


def test_bad_data_path_fails_with_a_clear_message(tmp_path):
    with pytest.raises(data.DataError, match="ALFWorld data not found"):
        madopd_envs.make(ENV_ID, data_path=str(tmp_path))
    env = madopd_envs.make(ENV_ID)
    with pytest.raises(data.DataError, match="not a generated ALFWorld game"):
        env.reset(options={"task_id": "valid_unseen/pick_and_place_simple-Apple-None-Fridge-10/trial_G0_99999"})
    with pytest.raises(ValueError, match="not in split"):
        env.reset(options={"task_id": env.tasks("valid_seen")[0]})


def test_train_games_are_generated_on_demand_and_cached(tmp_path):
    env = madopd_envs.make(ENV_ID, split="train", num_train_games=1000)
    ids = env.tasks("train")
    assert len(ids) == 1000 and ids == sorted(ids)
    obs, info = env.reset(options={"task_id": ids[0]})
    cached = tmp_path / "cache" / "alfworld"
    assert len(list(cached.rglob("game.tw-pddl"))) == 1
    again = madopd_envs.make(ENV_ID, split="train")
    assert again.reset(options={"task_id": ids[0]}) == (obs, info)
    # The cache is itself upstream-layout data.
    root = next(cached.iterdir())
    assert data.OfficialData(root).tasks("train") == [ids[0]]


def test_alfworld_workers_recycle_by_default(monkeypatch):
    """The engine keeps ~2 MB per game load, so a vector env restarts ALFWorld workers by default."""
    from madopd_envs.alfworld.env import ALFWorldEnv
    from madopd_envs.vector import default_recycle_after

    assert default_recycle_after(ENV_ID) == ALFWorldEnv.recycle_after == 50
    assert default_recycle_after("madopd/TWX-Coin-v0") is None  # engines that do not leak: never
    monkeypatch.setattr(ALFWorldEnv, "recycle_after", 1)  # the parent decides when to restart
    with madopd_envs.make_vec(ENV_ID, 1) as vec:
        assert vec.recycle_after == 1
        first = vec.pids()[0]
        obs, _ = vec.reset(options={"task_id": vec.call("tasks", "valid_unseen")[0][0]})
        assert obs[0] and vec.pids()[0] == first
        vec.reset(options={"task_id": vec.call("tasks", "valid_unseen")[0][1]})
        assert vec.pids()[0] != first
    with madopd_envs.make_vec(ENV_ID, 1, recycle_after=None) as vec:  # an explicit choice wins
        assert vec.recycle_after is None
