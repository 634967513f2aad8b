"""Worker-layer overhead: the same engine stepped in-process vs through make_vec workers.

    .venv/bin/python benchmarks/bench_vector.py --env madopd/TWX-CookingWorld-v0 --steps 2000
    .venv/bin/python benchmarks/bench_vector.py --env madopd/ScienceWorld-v0 --steps 200

Both sides replay the same seeded random-admissible action sequence, so they do the same engine
work; the difference per step is the cost of isolation (pickling + a pipe round trip). Then the
aggregate throughput of 1, 2, 4 workers stepping in lockstep.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import madopd_envs  # noqa: E402


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


def run_in_process(env_id: str, script) -> float:
    env = madopd_envs.make(env_id, max_episode_steps=None)
    env.reset(seed=0)  # warm up the engine
    t = time.perf_counter()
    for kind, arg in script:
        env.reset(seed=arg) if kind == "reset" else env.step(arg)
    elapsed = time.perf_counter() - t
    env.close()
    return elapsed


def run_workers(env_id: str, script, num_envs: int) -> float:
    with madopd_envs.make_vec(env_id, num_envs, max_episode_steps=None) as vec:
        vec.reset(seed=0)
        t = time.perf_counter()
        for kind, arg in script:
            vec.reset(seed=arg) if kind == "reset" else vec.step([arg] * num_envs)
        # group_size 1: env i plays seed + i, so actions may not be admissible there; the engine
        # still does one step of work per env, which is what throughput counts.
        return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="madopd/TWX-CookingWorld-v0")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scaling", default="1,2,4")
    args = parser.parse_args()

    script = plan_actions(args.env, args.steps, args.seed)
    n_steps = sum(kind == "step" for kind, _ in script)
    ops = len(script)
    t_in = run_in_process(args.env, script)
    t_w1 = run_workers(args.env, script, 1)
    per_op_in, per_op_w = t_in / ops * 1e3, t_w1 / ops * 1e3
    result = {
        "env": args.env, "steps": n_steps, "resets": ops - n_steps,
        "in_process_ms_per_op": round(per_op_in, 3), "worker_ms_per_op": round(per_op_w, 3),
        "overhead_ms_per_op": round(per_op_w - per_op_in, 3), "overhead_pct": round(100 * (t_w1 / t_in - 1), 1),
        "scaling_ops_per_s": {},
    }
    for n in map(int, args.scaling.split(",")):
        t = t_w1 if n == 1 else run_workers(args.env, script, n)
        result["scaling_ops_per_s"][n] = round(n * ops / t, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
