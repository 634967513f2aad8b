"""Worker-layer overhead: the same engine stepped in-process vs through make_vec workers.

    .venv/bin/python benchmarks/bench_vector.py --env madopd/TWX-CookingWorld-v0 --steps 2000
    .venv/bin/python benchmarks/bench_vector.py --env madopd/ScienceWorld-v0 --steps 200

Both sides replay the same seeded random-admissible action sequence, so they do the same engine
work; the difference per step is the cost of isolation (pickling + a pipe round trip). With
``--envs-per-worker k`` one worker hosts k envs (one message per batched step) against k envs stepped
in this process. Then the aggregate throughput of 1, 2, 4 workers stepping in lockstep.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import psutil  # noqa: E402

import madopd_envs  # noqa: E402


def tree_cpu() -> float:
    """CPU seconds of this process and every live descendant (workers, the engines' JVMs): on a shared
    machine the CPU a side spends is steadier than its wall time."""
    procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def plan_actions(env_id: str, steps: int, seed: int) -> list[tuple[str, object]]:
    """A replayable script: ("reset", seed) and ("step", action) records."""
    env = madopd_envs.make(env_id, max_episode_steps=None)
    rng = random.Random(seed)
    script, episode = [], seed
    _, info = env.reset(seed=episode)
    script.append(("reset", episode))
    for _ in range(steps):
        action = rng.choice(info["admissible_actions"])
        script.append(("step", action))
        _, _, term, trunc, info = env.step(action)
        if term or trunc:
            episode += 1
            _, info = env.reset(seed=episode)
            script.append(("reset", episode))
    env.close()
    return script


def run_in_process(env_id: str, script, k: int = 1) -> tuple[float, float]:
    """``k`` envs in this process, each replaying the script (the work a worker hosting k envs does)."""
    envs = [madopd_envs.make(env_id, max_episode_steps=None) for _ in range(k)]
    for env in envs:
        env.reset(seed=0)  # warm up the engine
    t, c = time.perf_counter(), tree_cpu()
    for kind, arg in script:
        for env in envs:
            env.reset(seed=arg) if kind == "reset" else env.step(arg)
    elapsed, cpu = time.perf_counter() - t, tree_cpu() - c
    for env in envs:
        env.close()
    return elapsed, cpu


def run_workers(env_id: str, script, num_envs: int, envs_per_worker: int = 1) -> tuple[float, float]:
    # group_size = envs_per_worker: a worker's envs play the same task, so the script's actions are
    # admissible in each (as in run_in_process); other workers play other seeds -- the engine still
    # does one step of work per env, which is what throughput counts.
    with madopd_envs.make_vec(env_id, num_envs, group_size=envs_per_worker, envs_per_worker=envs_per_worker,
                              max_episode_steps=None) as vec:
        vec.reset(seed=0)
        t, c = time.perf_counter(), tree_cpu()
        for kind, arg in script:
            vec.reset(seed=arg) if kind == "reset" else vec.step([arg] * num_envs)
        return time.perf_counter() - t, tree_cpu() - c


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="madopd/TWX-CookingWorld-v0")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scaling", default="1,2,4")
    parser.add_argument("--envs-per-worker", default="1,4", help="overhead of one worker hosting k envs, per k")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repeats; the best of each side")
    args = parser.parse_args()

    script = plan_actions(args.env, args.steps, args.seed)
    n_steps = sum(kind == "step" for kind, _ in script)
    ops = len(script)
    result = {"env": args.env, "steps": n_steps, "resets": ops - n_steps, "load_avg_1m": os.getloadavg()[0],
              "overhead": {}, "scaling_ops_per_s": {}}
    for k in map(int, args.envs_per_worker.split(",")):
        best = {"in": [float("inf")] * 2, "w": [float("inf")] * 2}  # (wall, cpu) seconds, best of repeats
        for _ in range(args.repeat):  # interleaved, so both sides see the same machine load
            for side, run in (("in", lambda: run_in_process(args.env, script, k)),
                              ("w", lambda: run_workers(args.env, script, k, envs_per_worker=k))):
                best[side] = [min(a, b) for a, b in zip(best[side], run())]
        row = {}
        for j, what in enumerate(("wall", "cpu")):
            per_in, per_w = best["in"][j] / (ops * k) * 1e3, best["w"][j] / (ops * k) * 1e3
            row[what] = {"in_process_ms_per_env_op": round(per_in, 3), "worker_ms_per_env_op": round(per_w, 3),
                         "overhead_ms": round(per_w - per_in, 4), "overhead_pct": round(100 * (per_w / per_in - 1), 1)}
        result["overhead"][k] = row
    result["load_avg_1m_after"] = os.getloadavg()[0]
    t_w1 = run_workers(args.env, script, 1)[0]
    for n in map(int, args.scaling.split(",")):
        t = t_w1 if n == 1 else run_workers(args.env, script, n)[0]
        result["scaling_ops_per_s"][n] = round(n * ops / t, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
