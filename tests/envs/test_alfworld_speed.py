"""The memoised grammar gives byte-identical ALFWorld traces to stock TextWorld, faster; and the
expert solves every default valid_unseen game (slow)."""

import hashlib
import random
import time

import pytest

pytest.importorskip("alfworld")

import madopd_envs  # noqa: E402
from madopd_envs.alfworld import fastgrammar  # noqa: E402

ENV_ID = "madopd/ALFWorld-v0"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    monkeypatch.setenv("MADOPD_CACHE", str(tmp_path / "cache"))


def _walk(env, task_id, steps, seed):
    obs, info = env.reset(seed=0, options={"task_id": task_id})
    digest = hashlib.sha256(repr((obs, info)).encode())
    rng, elapsed, n = random.Random(seed), 0.0, 0
    for _ in range(steps):
        action = rng.choice(sorted(info["admissible_actions"]))
        t = time.perf_counter()
        out = env.step(action)
        elapsed += time.perf_counter() - t
        n += 1
        info = out[4]
        digest.update(repr((action,) + out).encode())
        if out[2] or out[3]:
            break
    return digest.hexdigest(), n, elapsed


@pytest.fixture
def env():
    was = fastgrammar.installed()
    env = madopd_envs.make(ENV_ID, fast=None, max_episode_steps=None, expert=True)  # parsing as install() says
    yield env
    env.close()
    (fastgrammar.install if was else fastgrammar.uninstall)()


def _kitchen(env):
    return next(t for t in env.tasks("valid_unseen") if t.split("/")[1].endswith("-10"))


def _small_room(env):
    return next(t for t in env.tasks("valid_unseen") if t.split("/")[1].endswith("-424"))


def test_memoised_traces_are_identical_to_stock(env):
    """Full traces (observations, admissible lists, facts-driven expert actions) hash the same."""
    task_id = _small_room(env)  # a bathroom: stock TextWorld is slow, the full check runs in the bench
    with fastgrammar.stock():
        stock = _walk(env, task_id, 10, seed=3)
    for contexts in (False, True):
        fastgrammar.uninstall()
        fastgrammar.install(contexts=contexts)
        assert _walk(env, task_id, 10, seed=3)[:2] == stock[:2], f"contexts={contexts}"
    import textworld.envs.pddl.textgen as textgen

    assert textgen._parse_and_convert.cache  # the memo was used


def test_install_is_idempotent_and_reversible():
    import textworld.envs.pddl.textgen as textgen

    was = fastgrammar.installed()
    fastgrammar.uninstall()
    stock, stock_copy = textgen._parse_and_convert, textgen.copy_context
    fastgrammar.install()
    fastgrammar.install()
    assert textgen._parse_and_convert.__wrapped__ is stock and textgen.copy_context is not stock_copy
    with fastgrammar.stock():
        assert textgen._parse_and_convert is stock and textgen.copy_context is stock_copy
    assert textgen._parse_and_convert is not stock
    (fastgrammar.install if was else fastgrammar.uninstall)()


def test_fast_false_is_stock_even_after_a_fast_env_in_the_same_process():
    import fast_downward
    import textworld.envs.pddl.textgen as textgen

    was = fastgrammar.installed()
    fast = madopd_envs.make(ENV_ID, fast=True, max_episode_steps=None)
    task_id = _small_room(fast)
    fast_trace = _walk(fast, task_id, 5, seed=3)[:2]  # installs the patches, process-wide
    assert fastgrammar.installed() and textgen._parse_and_convert.cache
    memo, grounding = textgen._parse_and_convert.cache, fast_downward.pddl2sas.cache
    memo.clear()
    grounding.clear()
    plain = madopd_envs.make(ENV_ID, fast=False, max_episode_steps=None)
    assert _walk(plain, task_id, 5, seed=3)[:2] == fast_trace
    assert not memo and not grounding  # neither the parse memo nor the grounding cache was touched
    fast.reset(seed=0, options={"task_id": task_id})
    assert memo  # the fast env still memoises
    fast.close()
    plain.close()
    (fastgrammar.install if was else fastgrammar.uninstall)()


@pytest.mark.slow
def test_memoised_is_at_least_3x_stock(env):
    task_id = _kitchen(env)
    with fastgrammar.stock():
        _, n_stock, t_stock = _walk(env, task_id, 40, seed=1)
    fastgrammar.install()
    _, n_memo, t_memo = _walk(env, task_id, 40, seed=1)
    assert (n_memo / t_memo) / (n_stock / t_stock) >= 3.0


@pytest.mark.slow
def test_expert_solves_every_default_valid_unseen_game():
    env = madopd_envs.make(ENV_ID, expert=True)
    lost = []
    for task_id in env.tasks("valid_unseen"):
        _, info = env.reset(options={"task_id": task_id})
        term = trunc = False
        while not (term or trunc):
            _, _, term, trunc, info = env.step(info["expert_action"])
        if not info["won"]:
            lost.append(task_id)
    env.close()
    assert not lost, f"expert lost {len(lost)} games: {lost[:5]}"
