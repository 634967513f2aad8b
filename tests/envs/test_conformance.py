"""Every registered environment passes the conformance suite (madopd_envs.testing)."""

import pytest

import madopd_envs
from madopd_envs.testing import child_pids, check_text_env

IDS = [s.id for s in madopd_envs.registered()]


@pytest.mark.parametrize("env_id", IDS)
def test_registered_env_conforms(env_id):
    spec = madopd_envs.spec(env_id)
    if not spec.card.available:
        pytest.skip(f"{env_id}: engine not installed ({', '.join(spec.card.missing_modules())}); "
                    f"`make setup` installs it (pip install 'madopd[{spec.card.extra}]')")
    before = child_pids()
    check_text_env(madopd_envs.make(env_id))
    assert child_pids() <= before, f"{env_id} left child processes behind"


ONE_PER_FAMILY = list({s.card.family: s.id for s in reversed(madopd_envs.registered())}.values())


@pytest.mark.parametrize("env_id", ONE_PER_FAMILY)
def test_expert_mode_conforms(env_id):
    """Privileged mode keeps the contract too (expert_action is the only extra)."""
    if not madopd_envs.spec(env_id).card.available:
        pytest.skip(f"{env_id}: engine not installed")
    env = madopd_envs.make(env_id, expert=True)
    _, info = env.reset(seed=0)
    assert isinstance(info.get("expert_action"), str) and info["expert_action"], "no expert action at reset"
    check_text_env(env, run_gymnasium_checker=False)
