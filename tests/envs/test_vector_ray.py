"""Env workers as Ray actors on a real engine (TextWorldExpress) and a real Ray: a local cluster, a
two-node cluster on loopback (``ray start``), kills, hangs, recycling, Ctrl-C, bad input, and an eval
that gives the same summary over Ray as over processes.

Ray binds its servers on every interface and rewrites 127.0.0.1 to the host's network address
(ray/_private/services.py resolve_ip_for_localhost); nodes here are given 127.0.0.2 (``LOOPBACK``),
which it leaves alone. Ray's GCS still advertises this machine's own interface address to its
processes: every connection stays on this machine, none goes to another host.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest

import madopd_envs

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

from madopd_envs.vector_ray import LOOPBACK, RayBackendError  # noqa: E402

ENV = "madopd/TWX-Coin-v0"
REPO = Path(__file__).resolve().parents[2]
RAY_BIN = Path(sys.executable).with_name("ray")
pytestmark = pytest.mark.skipif(not madopd_envs.spec(ENV).card.available, reason="textworld-express not installed")
# Small clusters: no dashboard, a 100 MB object store (env traffic is a few KB of text per step).
INIT = {"include_dashboard": False, "log_to_driver": False, "object_store_memory": 100 * 2**20}


def _alive(pids):
    out = []
    for p in pids:
        try:
            if psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _tree(pids):
    """The actors plus everything below them (their reapers and the engines' JVMs)."""
    out = []
    for p in pids:
        out.append(p)
        try:
            out += [c.pid for c in psutil.Process(p).children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return out


def _java_below(pid):
    return [c.pid for c in psutil.Process(pid).children(recursive=True) if c.name() == "java"]


def _wait_dead(pids, timeout=15.0):
    deadline = time.monotonic() + timeout
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _alive(pids)


class TestLocalCluster:
    """One local cluster for the class (the vecs join it and leave it running)."""

    @pytest.fixture(autouse=True, scope="class")
    def cluster(self):
        ray.init(address="local", num_cpus=4, **INIT)
        yield
        ray.shutdown()

    def test_seeding_groups_and_sitting_out_match_the_process_backend(self):
        with madopd_envs.make_vec(ENV, 4, group_size=2, backend="ray") as vec:
            obs, infos = vec.reset(seed=11)
            ids = [i["task_id"] for i in infos]
            assert ids[0] == ids[1] and ids[2] == ids[3] and ids[0] != ids[2]
            env = madopd_envs.make(ENV)
            ref_obs, ref_info = env.reset(seed=12)  # env 2 = group 1 gets seed + 1
            assert obs[2] == ref_obs and ids[2] == ref_info["task_id"]
            action = ref_info["admissible_actions"][0]
            obs, _, _, _, infos = vec.step([None, None, action, None])
            assert obs[0] is None and infos[0] == {} and obs[2] == env.step(action)[0]
            env.close()
            assert vec.call("tasks", "valid", indices=[0])[0] == env.tasks("valid")
            with pytest.raises(Exception, match="failed during call"):  # the env's error; the actor lives on
                vec.call("no_such_method", indices=[1])
            before = vec.pids()
            assert vec.reset(seed=0, indices=[1])[0][0] and vec.pids() == before

    def test_killed_actor_is_reported_restarted_and_leaves_nothing(self):
        with madopd_envs.make_vec(ENV, 2, step_timeout=30, backend="ray") as vec:
            _, infos = vec.reset(seed=0)
            victim = vec.pids()[0]
            jvms = _java_below(victim)
            assert jvms, "the env's JVM should run below its actor"
            victim_tree = _tree([victim])
            os.kill(victim, signal.SIGKILL)  # mid-episode
            obs, _, _, trunc, infos = vec.step([i["admissible_actions"][0] for i in infos])
            assert "died" in infos[0]["error"] and trunc[0]
            assert "error" not in infos[1] and obs[1]  # the rest of the batch goes on
            assert vec.pids()[0] != victim
            assert vec.reset(seed=1, indices=[0])[0][0]
            assert not _wait_dead(victim_tree), "the killed actor's engine outlived it"
            everything = _tree(vec.pids())
        assert not _wait_dead(everything), "close() left actors, reapers or engines"

    def test_hung_actor_times_out_and_is_replaced(self):
        with madopd_envs.make_vec(ENV, 1, step_timeout=60, backend="ray") as vec:
            _, infos = vec.reset(seed=0)  # the JVM starts here: give it time on a busy machine
            vec.step_timeout = 2
            hung = vec.pids()[0]
            hung_tree = _tree([hung])
            os.kill(hung, signal.SIGSTOP)  # a real hang: the process exists but never answers
            t = time.monotonic()
            _, _, _, trunc, infos = vec.step([infos[0]["admissible_actions"][0]])
            assert time.monotonic() - t < 15 and trunc[0] and "hung" in infos[0]["error"]
            vec.step_timeout = 60
            assert vec.pids()[0] != hung and vec.reset(seed=0)[0][0]
            assert not _wait_dead(hung_tree), "the hung actor (or its engine) was not killed"

    def test_recycling_restarts_actors_after_n_episodes(self):
        with madopd_envs.make_vec(ENV, 1, recycle_after=2, backend="ray") as vec:
            first = vec.pids()[0]
            vec.reset(seed=0)
            vec.reset(seed=1)
            assert vec.pids()[0] == first
            vec.reset(seed=2)
            assert vec.pids()[0] != first

    def test_more_actors_than_cpus_asked_for_is_one_line_and_starts_nothing(self):
        with pytest.raises(RayBackendError, match=r"need 5 CPUs, the Ray cluster has 4") as e:
            madopd_envs.make_vec(ENV, 5, backend="ray", cpus_per_env=1.0)
        assert "\n" not in str(e.value)
        deadline = time.monotonic() + 15  # CPUs of the previous test's killed actors come back asynchronously
        while ray.available_resources().get("CPU") != 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ray.available_resources().get("CPU") == 4  # no actor of the refused vec holds a reservation


    def test_default_reservation_fits_the_cluster(self, capfd):
        with madopd_envs.make_vec(ENV, 5, backend="ray") as vec:  # 5 envs on a 4-CPU cluster: 0.8 CPU each
            assert vec.cpus_per_env == 0.8
            vec.reset(seed=0)
        assert "5 env actors share the cluster's 4 CPUs (0.8 each)" in capfd.readouterr().err


def test_unreachable_address_fails_fast_in_one_line():
    t = time.monotonic()
    with pytest.raises(RayBackendError, match="cannot reach a Ray cluster at 127.0.0.1:9") as e:
        madopd_envs.make_vec(ENV, 1, backend="ray", ray_address="127.0.0.1:9")
    assert time.monotonic() - t < 10 and "\n" not in str(e.value) and not ray.is_initialized()


@pytest.fixture
def two_nodes():
    """A head node and one worker node on this machine, joined over 127.0.0.2 (loopback); yields the address.

    Each node gets its own temp dir (short: Ray's socket paths must fit 107 bytes); teardown stops
    exactly the processes whose command line names those dirs.
    """
    root = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    port = _free_port()
    # Token auth (Ray's gRPC servers listen on every interface): nodes and driver share the user's
    # token file (~/.ray/auth_token, made here when missing, as a local ray.init does); the driver
    # turns token auth on by itself when it finds the file.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    subprocess.run([str(RAY_BIN), "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    common = ["--disable-usage-stats", f"--object-store-memory={100 * 2**20}", "--num-cpus=1"]
    try:
        # 127.0.0.2, not 127.0.0.1: Ray rewrites "127.0.0.1" to the host's network address.
        subprocess.run([str(RAY_BIN), "start", "--head", f"--port={port}", f"--temp-dir={root}/h",
                        "--include-dashboard=false", f"--node-ip-address={LOOPBACK}", *common],
                       env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([str(RAY_BIN), "start", f"--address={LOOPBACK}:{port}", f"--temp-dir={root}/w",
                        f"--node-ip-address={LOOPBACK}", *common], env=env, check=True, capture_output=True, timeout=120)
        yield f"{LOOPBACK}:{port}", root
    finally:
        _stop_cluster(root)
        shutil.rmtree(root, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_pids(root: Path) -> list[int]:
    """Processes of the nodes started by the fixture: their command lines name its temp dir, or are
    children of those (workers)."""
    found = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        if str(root) in " ".join(p.info["cmdline"] or []):
            found.add(p.info["pid"])
    for pid in list(found):
        found.update(_tree([pid]))
    return sorted(found)


def _stop_cluster(root: Path) -> None:
    pids = _cluster_pids(root)
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in _wait_dead(pids, timeout=2):  # raylet and gcs_server may ignore SIGTERM for long
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


_TWO_NODE_DRIVER = """
import json, os, signal, sys, time
import psutil, ray, madopd_envs

def tree(pids):
    return [q for p in pids for q in [p] + [c.pid for c in psutil.Process(p).children(recursive=True)]]

with madopd_envs.make_vec(%r, 2, backend="ray", ray_address=sys.argv[1], step_timeout=30) as vec:
    assert len(ray.nodes()) == 2 and len(set(vec.nodes())) == 2, "SPREAD should place one env on each node"
    _, infos = vec.reset(seed=3)
    head = ray.get_runtime_context().get_node_id()
    k = next(i for i, n in enumerate(vec.nodes()) if n != head)  # the env on the worker node
    victim = vec.pids()[k]
    victim_tree = tree([victim])
    assert any(psutil.Process(p).name() == "java" for p in victim_tree), "the engine runs below its actor"
    os.kill(victim, signal.SIGKILL)  # mid-episode
    _, _, _, trunc, out = vec.step([i["admissible_actions"][0] for i in infos])
    assert trunc[k] and "died" in out[k]["error"] and "error" not in out[1 - k], out
    assert vec.reset(seed=4, indices=[k])[0][0] and vec.pids()[k] != victim
    everything = victim_tree + tree(vec.pids())
print(json.dumps(everything))
"""


def test_two_node_cluster_on_loopback_survives_a_killed_actor(two_nodes):
    # The driver runs in its own process: with an explicit address, Ray reads RAY_AUTH_MODE at start-up.
    address, root = two_nodes
    r = subprocess.run([sys.executable, "-c", _TWO_NODE_DRIVER % ENV, address], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    pids = json.loads(r.stdout.strip().splitlines()[-1])
    assert not _wait_dead(pids), f"env actors, reapers or engines left on a node: {_alive(pids)}"
    _stop_cluster(root)
    assert not _wait_dead(_cluster_pids(root))


def test_ctrl_c_takes_actors_engines_and_the_local_cluster_down():
    script = textwrap.dedent(f"""
        import time, psutil, madopd_envs
        with madopd_envs.make_vec({ENV!r}, 2, backend="ray") as vec:
            vec.reset(seed=0)
            me = psutil.Process()
            pids = [c.pid for c in me.children(recursive=True)] + [p for w in vec.pids()
                    for p in [w] + [c.pid for c in psutil.Process(w).children(recursive=True)]]
            print(" ".join(map(str, sorted(set(pids)))), flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        java = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).name() == "java"]
        assert len(java) == 2 and any("raylet" in psutil.Process(p).name() for p in pids)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the driver's whole group
        proc.wait(timeout=60)
        assert not _wait_dead(pids, timeout=20), f"left running after Ctrl-C: {_alive(pids)}"
    finally:
        if proc.poll() is None:
            proc.kill()


def _eval(tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "madopd_envs.eval", "--agent", "random", "--env", ENV,
                           "--episodes", "6", "--num-envs", "2", "--max-steps", "8", "--seed", "3", "--no-progress",
                           "--output", str(tmp), *extra], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})


def test_eval_over_ray_gives_the_same_summary_as_over_processes(tmp_path):
    from madopd_envs.eval.__main__ import main

    assert main(["--agent", "random", "--env", ENV, "--episodes", "6", "--num-envs", "2", "--max-steps", "8",
                 "--seed", "3", "--no-progress", "--output", str(tmp_path / "proc")]) == 0
    assert main(["--agent", "random", "--env", ENV, "--episodes", "6", "--num-envs", "2", "--max-steps", "8",
                 "--seed", "3", "--no-progress", "--output", str(tmp_path / "ray"), "--backend", "ray"]) == 0
    assert not ray.is_initialized()  # the eval's own local cluster is stopped with its last env
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("proc", "ray"))
    assert a["finished_episodes"] == 6 and a["errored"] == 0
    assert {k: v for k, v in a.items() if k != "versions"} == {k: v for k, v in b.items() if k != "versions"}


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    # Ray missing: the import fails as on a machine without the extra (no other module is touched).
    code = ("import sys; sys.modules['ray'] = None; from madopd_envs.eval.__main__ import main; "
            f"sys.exit(main(['--agent', 'random', '--env', {ENV!r}, '--output', {str(tmp_path / 'a')!r}, "
            "'--backend', 'ray']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "madopd[ray]" in r.stderr
    r = _eval(tmp_path / "b", "--backend", "ray", "--ray-address", "127.0.0.1:9")
    assert r.returncode == 2 and "cannot reach a Ray cluster" in r.stderr, r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.strip()][-1].startswith("error:")
