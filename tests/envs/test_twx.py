"""TextWorldExpress on the real engine: fold seeds, game parameters, gold-path experts on all 8
games, invalid actions, the wrapper against the package's own step, crash detection in process and
in a vector worker, and no JVM left behind."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

import madopd_envs
from madopd_envs.jvm import EngineCrashed, java_process
from madopd_envs.textworldexpress.env import DEFAULT_PARAMS, FOLDS, GAMES, parse_params

pytest.importorskip("textworld_express")

IDS = {s.kwargs["game"]: s.id for s in madopd_envs.registered() if s.card.family == "textworldexpress"}


@pytest.fixture
def cooking():
    e = madopd_envs.make(IDS["cookingworld"], expert=True, split="test")
    yield e
    e.close()


def test_all_eight_games_are_registered():
    assert sorted(IDS) == sorted(GAMES)


def test_game_parameters_as_kwargs_strings_or_mappings():
    e = madopd_envs.make(IDS["coin"], numLocations=5)
    assert e.params == {**DEFAULT_PARAMS["coin"], "numLocations": 5}
    assert "numLocations=5" in e.game_params
    assert madopd_envs.make(IDS["coin"], game_params="numLocations=4").params == {"numLocations": 4}
    assert madopd_envs.make(IDS["coin"], game_params={"includeDoors": 1}).params == {"includeDoors": 1}
    assert madopd_envs.make(IDS["arithmetic"]).game_params == ""
    with pytest.raises(ValueError, match="coin has no parameter 'numIngredients'; its parameters: numLocations"):
        madopd_envs.make(IDS["coin"], numIngredients=3)
    with pytest.raises(ValueError, match="must be an integer"):
        parse_params("coin", "numLocations=many")
    with pytest.raises(ValueError, match="unknown TextWorldExpress game"):
        madopd_envs.make(IDS["coin"], game="chess")


def test_splits_are_the_engines_seed_folds(cooking):
    obs_train, _ = cooking.reset(options={"task_id": "train-0", "split": "train"})
    obs_test, info = cooking.reset(options={"task_id": "test-20000"})
    assert info["split"] == "test" and obs_train != obs_test
    engine = cooking._engine
    for split, getter in [("train", engine.getValidSeedsTrain), ("valid", engine.getValidSeedsDev),
                          ("test", engine.getValidSeedsTest)]:
        assert [f"{split}-{s}" for s in getter()] == cooking.tasks(split), split
    assert FOLDS["valid"] == ("dev", 10_000)
    with pytest.raises(ValueError, match="seed in 20000..20999"):
        cooking.reset(options={"task_id": "test-5"})


def test_impossible_parameters_fail_in_words():
    e = madopd_envs.make(IDS["mapreader"], numLocations=2, maxDistanceApart=3)
    with pytest.raises(ValueError, match="could not generate mapreader seed"):
        e.reset(options={"task_id": "test-20000"})
    e.close()


@pytest.mark.parametrize("game", GAMES)
def test_gold_path_expert_wins(game):
    e = madopd_envs.make(IDS[game], expert=True, split="test")
    try:
        for task_id in e.tasks("test")[:2]:  # 20 per game: python -m madopd_envs.eval --agent expert --agent random --leaderboard twx --episodes 20
            _, info = e.reset(options={"task_id": task_id})
            term = trunc = False
            total = 0.0
            while not (term or trunc):
                assert info["expert_action"], f"{game} {task_id}: expert ran out"
                _, reward, term, trunc, info = e.step(info["expert_action"])
                total += reward
                assert info["action_valid"]
            assert term and info["won"] and info["score"] == 1.0, (game, task_id, info)
            assert total == pytest.approx(1.0)
    finally:
        e.close()


def test_invalid_action_and_leaving_the_gold_path(cooking):
    _, info = cooking.reset(options={"task_id": "test-20001"})
    assert info["expert_action"] and info["admissible_actions"] == sorted(info["admissible_actions"])
    obs, reward, term, trunc, info = cooking.step("xyzzy plugh")
    assert "Unknown action" in obs and info["action_valid"] is False and not term
    assert info["expert_action"] is None  # off the gold path for good


def test_wrapper_matches_the_packages_own_step(cooking):
    """Same seed, same actions: observations, scores and done flags equal textworld_express's."""
    from textworld_express import TextWorldExpressEnv

    from madopd_envs.jvm import start_engine, stop_engine

    ref = start_engine(lambda: TextWorldExpressEnv(envStepLimit=1000))
    try:
        obs, infos = ref.reset(seed=20002, gameFold="test", gameName="cookingworld",
                               gameParams=cooking.game_params, generateGoldPath=True)
        gold = ref.getGoldActionSequence()
        mine, info = cooking.reset(options={"task_id": "test-20002"})
        assert mine == obs and info["task"] == infos["taskDescription"]
        for action in gold[1:]:
            obs, reward, done, infos = ref.step(action)
            mine, my_reward, term, _, info = cooking.step(action)
            assert (mine, my_reward, term) == (obs, reward, done)
            assert info["admissible_actions"] == sorted(infos["validActions"])
            assert info["raw_score"] == infos["scoreRaw"] and info["won"] == infos["tasksuccess"]
        assert done
    finally:
        stop_engine(ref)


def test_crashed_jvm_is_reported_and_replaced_on_reset(cooking):
    _, info = cooking.reset(options={"task_id": "test-20003"})
    proc = java_process(cooking._engine)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    with pytest.raises(EngineCrashed, match=r"TextWorldExpress JVM .* exited with code -9"):
        cooking.step(info["expert_action"])
    _, info = cooking.reset(options={"task_id": "test-20003"})
    assert java_process(cooking._engine).pid != proc.pid
    _, _, _, _, info = cooking.step(info["expert_action"])
    assert info["action_valid"]


def test_vector_worker_survives_its_jvm_crashing():
    with madopd_envs.make_vec(IDS["coin"], 1, split="test") as vec:
        vec.reset(seed=0)
        worker = psutil.Process(vec.pids()[0])
        (jvm,) = [p for p in worker.children(recursive=True) if p.name() == "java"]
        jvm.kill()
        jvm.wait(timeout=10)
        obs, _, _, truncated, infos = vec.step(["look around"])
        assert truncated[0] and "EngineCrashed" in infos[0]["error"]
        assert "next reset() starts a new JVM" in infos[0]["error"]
        obs, infos = vec.reset(seed=1)
        assert obs[0] and "error" not in infos[0]
        assert vec.pids()[0] == worker.pid  # the same worker, with a new JVM
        assert len([p for p in worker.children(recursive=True) if p.name() == "java"]) == 1
