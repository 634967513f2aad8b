"""``--profile`` on the eval CLI: a real HF agent on a real engine, the time split into phases."""

from __future__ import annotations

import re

import pytest

import madopd_envs
from madopd_envs.eval.__main__ import main
from madopd_envs.profile import Profile

ENV = "madopd/TWX-Coin-v0"


def _phases(text: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^\| ([^|*]+?) \| ([0-9.]+) \| [0-9.]+%? \|$", text, re.M)}


@pytest.mark.skipif(not madopd_envs.spec(ENV).card.available, reason="textworld-express not installed")
def test_eval_profile_splits_env_prefill_decode_and_io(tmp_path, capsys):
    from madopd_agents.zoo import tiny_model_dir

    args = f"model={tiny_model_dir('S')},max_new_tokens=4"
    assert main(["--agent", "smollm2-135m", "--agent-args", args, "--env", ENV, "--episodes", "2", "--max-steps", "2",
                 "--num-envs", "2", "--output", str(tmp_path / "run"), "--no-progress", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "where the time went" in out
    phases = _phases(out.split("where the time went")[1])
    for name in ("env start-up", "env", "prompt", "prefill", "decode", "I/O", "env shutdown"):
        assert name in phases, (name, out)
    assert phases["env"] > 0 and phases["prefill"] > 0 and phases["decode"] > 0


def test_profile_table_accounts_for_the_total():
    prof = Profile()
    prof.add("env", 1.0)
    prof.add("env", 0.5)

    class Agent:
        timings = {"prefill": 0.0, "decode": 0.0}

    agent = Agent()
    with prof.agent(agent):
        agent.timings = {"prefill": 2.0, "decode": 3.0}
    table = prof.table(total=10.0)
    phases = _phases(table)
    assert phases["env"] == 1.5 and phases["prefill"] == 2.0 and phases["decode"] == 3.0
    assert phases["other"] == pytest.approx(10.0 - 6.5 - phases["agent (other)"], abs=0.01)
    assert "| **total** | 10.00 | 100% |" in table
