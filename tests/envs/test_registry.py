"""Registry: ids, gymnasium integration, typo suggestions, missing engines, the list CLI."""

import json
import subprocess
import sys

import gymnasium
import pytest

import madopd_envs
from madopd_envs.core import TextEnv
from madopd_envs.registry import EnvCard, MissingEngineError, UnknownEnvError


def test_unknown_id_suggests_close_matches():
    with pytest.raises(UnknownEnvError, match="Did you mean 'madopd/TWX-CookingWorld-v0'"):
        madopd_envs.make("madopd/TWX-CookingWorlds-v0")


def test_bad_id_is_rejected():
    with pytest.raises(ValueError, match="<namespace>/<Name>-v<N>"):
        madopd_envs.register("CookingWorld", "madopd_envs.core:TextEnv")


def test_missing_engine_names_the_install_command():
    madopd_envs.register("madopd/NeedsMissing-v0", TextEnv,
                         card=EnvCard(family="x", extra="nothere", requires=("no_such_engine_module",)))
    with pytest.raises(MissingEngineError, match=r"pip install 'madopd\[nothere\]'"):
        madopd_envs.make("madopd/NeedsMissing-v0")


def test_gymnasium_make_reaches_the_same_env():
    env = gymnasium.make("madopd/TWX-Coin-v0")
    try:
        obs, info = env.reset(seed=3)
        assert isinstance(env.unwrapped, TextEnv) and info["task_id"].startswith("test-")
        assert env.unwrapped.max_episode_steps == madopd_envs.spec("madopd/TWX-Coin-v0").max_episode_steps
    finally:
        env.close()


def test_list_json_names_every_registered_env():
    out = subprocess.run([sys.executable, "-m", "madopd_envs", "list", "--json"], capture_output=True, text=True,
                         check=True).stdout
    listing = json.loads(out)
    rows = listing["envs"]
    builtin = {s.id for s in madopd_envs.registered() if s.source == "built-in"}
    assert {r["id"] for r in rows} >= builtin  # plus any plugin installed in this environment
    for r in rows:
        assert set(r) == {"id", "family", "splits", "available", "package", "version", "source"}
        assert isinstance(r["available"], bool) and isinstance(r["splits"], dict)
    coin = next(r for r in rows if r["id"] == "madopd/TWX-Coin-v0")
    assert coin["package"] == "madopd" and coin["version"] and coin["source"] == "built-in"
    assert isinstance(listing["broken_plugins"], list)


def test_list_table_runs():
    out = subprocess.run([sys.executable, "-m", "madopd_envs", "list"], capture_output=True, text=True, check=True)
    assert "madopd/TWX-CookingWorld-v0" in out.stdout


def test_same_definition_twice_is_a_no_op_and_builtin_ids_cannot_be_taken():
    from madopd_envs.registry import DuplicateEnvError

    first = madopd_envs.register("mine/Same-v0", "madopd_envs.core:TextEnv")
    assert madopd_envs.register("mine/Same-v0", "madopd_envs.core:TextEnv") is first  # no warning, no change
    replaced = madopd_envs.register("mine/Same-v0", TextEnv, max_episode_steps=3)  # the same source replaces its own
    assert madopd_envs.spec("mine/Same-v0") is replaced and replaced.source == "user code"
    with pytest.raises(DuplicateEnvError, match="already registered by built-in"):
        madopd_envs.register("madopd/TWX-Coin-v0", TextEnv)
    assert madopd_envs.spec("madopd/TWX-Coin-v0").source == "built-in"


def test_module_form_imports_the_module_then_finds_the_id():
    from madopd_envs.registry import PluginError

    assert madopd_envs.spec("madopd_envs.core:madopd/TWX-Coin-v0").id == "madopd/TWX-Coin-v0"
    with pytest.raises(PluginError, match="importing 'no_such_bench' failed: ModuleNotFoundError"):
        madopd_envs.spec("no_such_bench:no_such_bench/Foo-v0")
    with pytest.raises(UnknownEnvError, match="'my_module:other/Foo-v0'"):
        madopd_envs.spec("other/Foo-v0")
