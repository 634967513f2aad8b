"""Ray actors vs process workers vs the raw engine: per-step overhead (same run) and throughput as
workers grow, plus what a local Ray cluster costs to start and to keep in memory.

    .venv/bin/python benchmarks/bench_ray.py --env madopd/TWX-CookingWorld-v0 --steps 500 --rounds 3

All three replay the same seeded random-admissible script (as benchmarks/bench_vector.py), so they do
the same engine work; the differences per operation are the transport (in-process call; pickle +
pipe; Ray task + object store). Each keeps one engine for the whole run; after a warm-up round the
three are measured in alternation, ``--rounds`` times, and the medians reported, so a machine shared with other jobs slows all three alike. Scaling: ``n`` envs
stepped in lockstep (aggregate operations/s) for both backends; the Ray actors reserve
``cpus_per_env = cores / max(n)`` so all fit on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import psutil  # noqa: E402

import madopd_envs  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vector import plan_actions  # noqa: E402


def run_raw(env, script) -> float:
    env.reset(seed=0)
    t = time.perf_counter()
    for kind, arg in script:
        env.reset(seed=arg) if kind == "reset" else env.step(arg)
    return time.perf_counter() - t


def run_vec(vec, script) -> float:
    vec.reset(seed=0)
    t = time.perf_counter()
    n = vec.num_envs
    for kind, arg in script:
        vec.reset(seed=arg) if kind == "reset" else vec.step([arg] * n)
    return time.perf_counter() - t


def ray_rss_mb() -> float:
    """Resident memory of this machine's Ray processes (gcs, raylet, agents, idle workers, actors)."""
    total = 0
    for p in psutil.process_iter(["cmdline", "memory_info", "name"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "ray" in (p.info["name"] or "") or "/ray/" in cmd or cmd.startswith("ray::"):
            total += p.info["memory_info"].rss if p.info["memory_info"] else 0
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="madopd/TWX-CookingWorld-v0")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scaling", default="1,2,4")
    args = parser.parse_args()
    import ray

    from madopd_envs.vector_ray import connect

    script = plan_actions(args.env, args.steps, 0)
    ops = len(script)
    sizes = [int(n) for n in args.scaling.split(",")]
    cores = os.cpu_count() or 1

    t = time.perf_counter()
    connect(None, num_cpus=cores)
    start_cluster_s = time.perf_counter() - t
    mem_idle = ray_rss_mb()
    t = time.perf_counter()
    ray_vec = madopd_envs.make_vec(args.env, 1, backend="ray", max_episode_steps=None)
    start_actor_s = time.perf_counter() - t
    proc_vec = madopd_envs.make_vec(args.env, 1, max_episode_steps=None)
    raw = madopd_envs.make(args.env, max_episode_steps=None)
    times: dict[str, list[float]] = {"raw": [], "process": [], "ray": []}
    for r in range(args.rounds + 1):  # round 0 warms every engine's JIT up and is not counted
        for name, t in (("raw", run_raw(raw, script)), ("process", run_vec(proc_vec, script)),
                        ("ray", run_vec(ray_vec, script))):
            if r:
                times[name].append(t)
    raw.close()
    mem_one_actor = ray_rss_mb()
    proc_vec.close()
    ray_vec.close()
    ms = {k: statistics.median(v) / ops * 1e3 for k, v in times.items()}
    result = {
        "env": args.env, "ops": ops, "rounds": args.rounds, "cores": cores,
        "ms_per_op": {k: round(v, 3) for k, v in ms.items()},
        "overhead_ms_per_op": {"process": round(ms["process"] - ms["raw"], 3), "ray": round(ms["ray"] - ms["raw"], 3)},
        "ratio_to_raw": {"process": round(ms["process"] / ms["raw"], 2), "ray": round(ms["ray"] / ms["raw"], 2)},
        "ray_over_process": round(ms["ray"] / ms["process"], 2),
        "ray_local_cluster_start_s": round(start_cluster_s, 1), "ray_first_actor_start_s": round(start_actor_s, 1),
        "ray_rss_mb_idle_cluster": round(mem_idle), "ray_rss_mb_with_one_actor": round(mem_one_actor),
        "scaling_ops_per_s": {"process": {}, "ray": {}},
    }
    for n in sizes:
        with madopd_envs.make_vec(args.env, n, max_episode_steps=None) as vec:
            result["scaling_ops_per_s"]["process"][n] = round(n * ops / run_vec(vec, script), 1)
        with madopd_envs.make_vec(args.env, n, backend="ray", cpus_per_env=cores / max(sizes),
                                  max_episode_steps=None) as vec:
            result["scaling_ops_per_s"]["ray"][n] = round(n * ops / run_vec(vec, script), 1)
    ray.shutdown()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
