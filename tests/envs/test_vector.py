"""Worker processes on a real engine (TextWorldExpress): batching, groups, death, hangs, orphans."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import madopd_envs

ENV = "madopd/TWX-Coin-v0"
pytestmark = pytest.mark.skipif(not madopd_envs.spec(ENV).card.available, reason="textworld-express not installed")


def _alive(pids):
    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def _group_pids(vec):
    """Worker pids plus their engines (each worker leads its own process group)."""
    pids = []
    for w in vec.pids():
        pids.append(w)
        pids += [c.pid for c in psutil.Process(w).children(recursive=True)]
    return pids


def test_batched_reset_and_step_match_in_process_env():
    with madopd_envs.make_vec(ENV, 2) as vec:
        obs, infos = vec.reset(seed=5)
        env = madopd_envs.make(ENV)
        ref_obs, ref_info = env.reset(seed=6)  # env 1 of 2 with group_size 1 gets seed + 1
        assert obs[1] == ref_obs and infos[1]["task_id"] == ref_info["task_id"]
        action = ref_info["admissible_actions"][0]
        obs, rew, term, trunc, infos = vec.step([None, action])
        assert obs[0] is None and infos[0] == {}  # env 0 sat the step out
        assert obs[1] == env.step(action)[0]
        env.close()


def test_group_members_play_the_same_task():
    with madopd_envs.make_vec(ENV, 4, group_size=2) as vec:
        _, infos = vec.reset(seed=11)
        ids = [i["task_id"] for i in infos]
        assert ids[0] == ids[1] and ids[2] == ids[3] and ids[0] != ids[2]


def test_killed_worker_is_reported_restarted_and_leaves_no_orphan():
    with madopd_envs.make_vec(ENV, 2, step_timeout=20) as vec:
        _, infos = vec.reset(seed=0)
        victim = vec.pids()[0]
        victim_group = _group_pids(vec)[:1] + [c.pid for c in psutil.Process(victim).children(recursive=True)]
        os.kill(victim, signal.SIGKILL)
        actions = [i["admissible_actions"][0] for i in infos]
        obs, _, term, trunc, infos = vec.step(actions)
        assert "error" in infos[0] and "died" in infos[0]["error"] and trunc[0]
        assert "error" not in infos[1] and obs[1]  # the rest of the batch goes on
        assert vec.pids()[0] != victim
        obs, infos = vec.reset(seed=1, indices=[0])
        assert obs[0] and "error" not in infos[0]
        time.sleep(0.5)
        assert not _alive(victim_group), "the killed worker's engine outlived it"
        all_pids = _group_pids(vec)
    time.sleep(0.5)
    assert not _alive(all_pids), "close() left worker or engine processes"


def test_hung_worker_times_out_and_is_replaced():
    with madopd_envs.make_vec(ENV, 1, step_timeout=60) as vec:
        _, infos = vec.reset(seed=0)  # the JVM starts here: give it time on a busy machine
        vec.step_timeout = 2
        hung = vec.pids()[0]
        os.kill(hung, signal.SIGSTOP)  # a real hang: the process exists but never answers
        t = time.monotonic()
        _, _, _, trunc, infos = vec.step([infos[0]["admissible_actions"][0]])
        assert time.monotonic() - t < 15 and trunc[0] and "hung" in infos[0]["error"]
        assert vec.pids()[0] != hung and not _alive([hung])
        vec.step_timeout = 60  # the replacement's first reset starts a new JVM
        assert vec.reset(seed=0)[0][0]


def test_envs_sharing_a_worker_play_as_if_alone():
    with madopd_envs.make_vec(ENV, 4, group_size=2) as alone, \
            madopd_envs.make_vec(ENV, 4, group_size=2, envs_per_worker=2) as shared:
        assert len(set(shared.pids())) == 2 and len(set(alone.pids())) == 4
        traces = []
        for vec in (alone, shared):
            obs, infos = vec.reset(seed=3)
            trace = [obs]
            for turn in range(4):  # env 3 sits out every other step
                actions = [i["admissible_actions"][k % len(i["admissible_actions"])] if i else None
                           for k, i in enumerate(infos)]
                actions[3] = actions[3] if turn % 2 else None
                obs, rew, term, trunc, step_infos = vec.step(actions)
                trace.append((obs, rew.tolist(), term.tolist()))
                infos = [x if x else infos[k] for k, x in enumerate(step_infos)]
            traces.append(trace)
        assert traces[0] == traces[1]


def test_a_dead_shared_worker_errors_each_of_its_episodes():
    with madopd_envs.make_vec(ENV, 3, envs_per_worker=2, step_timeout=20) as vec:
        _, infos = vec.reset(seed=0)
        victim = vec.pids()[0]
        assert vec.pids()[1] == victim != vec.pids()[2]
        os.kill(victim, signal.SIGKILL)
        acts = [i["admissible_actions"][0] for i in infos]
        obs, _, _, trunc, out = vec.step([acts[0], None, acts[2]])
        assert trunc[0] and "died" in out[0]["error"] and "error" not in out[2] and obs[2]
        assert out[1] == {} and vec.pids()[0] == vec.pids()[1] != victim
        # env 1 sat that step out, but its episode died with the worker: said on its next step, once
        _, _, _, trunc, out = vec.step([None, acts[1], None])
        assert trunc[1] and "lost its episode" in out[1]["error"]
        obs, out = vec.reset(seed=1, indices=[1])  # answers in the order of indices
        assert obs[0] and "error" not in out[0]
        assert "error" not in vec.step([None, out[0]["admissible_actions"][0], None])[4][1]


def test_shared_workers_recycle_only_when_none_of_their_episodes_is_in_flight():
    with madopd_envs.make_vec(ENV, 2, envs_per_worker=2, recycle_after=1) as vec:
        first = vec.pids()[0]
        vec.reset(seed=0)
        vec.reset(seed=1, indices=[0])
        vec.reset(seed=2, indices=[0])  # env 1's episode is in flight: no recycling
        assert vec.pids()[0] == first
        vec.reset(seed=3)
        assert vec.pids()[0] != first


def test_recycling_restarts_workers_after_n_episodes():
    with madopd_envs.make_vec(ENV, 1, recycle_after=2) as vec:
        first = vec.pids()[0]
        vec.reset(seed=0)
        vec.reset(seed=1)
        assert vec.pids()[0] == first
        vec.reset(seed=2)
        assert vec.pids()[0] != first


def test_call_reaches_env_methods():
    with madopd_envs.make_vec(ENV, 1) as vec:
        env = madopd_envs.make(ENV)
        assert vec.call("tasks", "valid")[0] == env.tasks("valid")
        env.close()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_parent_killed_or_interrupted_takes_workers_and_engines_down(sig):
    script = textwrap.dedent(f"""
        import sys, time, psutil, madopd_envs
        vec = madopd_envs.make_vec({ENV!r}, 2)
        vec.reset(seed=0)
        pids = [p for w in vec.pids() for p in [w] + [c.pid for c in psutil.Process(w).children(recursive=True)]]
        print(" ".join(map(str, pids)), flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) >= 4, "expected two workers, each with its JVM"
    proc.send_signal(sig)  # SIGKILL: no cleanup code in the parent runs; SIGINT: KeyboardInterrupt
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pids), f"orphans after the parent was killed: {_alive(pids)}"


def test_bad_group_size_is_a_clear_error():
    with pytest.raises(ValueError, match="multiple of group_size"):
        madopd_envs.make_vec(ENV, 3, group_size=2)
