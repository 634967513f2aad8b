"""WebShop speed and baselines: start-up, bm25s search latency, env steps/s, oracle/random/rule scores.

    .venv/bin/python benchmarks/bench_webshop.py                 # bundled catalogue, 500 test goals
    .venv/bin/python benchmarks/bench_webshop.py --scale 100000  # + search over a 100k-product corpus

- start-up: importing bm25s, generating the bundled catalogue, building goals, indexing (cold);
- search: latency of ``SearchIndex.search`` for the 500 test instructions (the queries the oracle
  issues first), on the bundled index and, with ``--scale N``, on N products made by copying the
  bundled ones under new asins (same vocabulary, N documents: how latency grows with the corpus);
- policies: every test goal played in-process by the oracle (``expert_action``), the random policy
  and upstream's rule baseline: mean score, success rate, mean episode length and env steps/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from dataclasses import replace

os.environ.setdefault("OMP_NUM_THREADS", "1")

import madopd_envs  # noqa: E402
from madopd_envs.webshop.catalogue import bundled_catalogue, generate_raw  # noqa: E402
from madopd_envs.webshop.data import build_catalogue  # noqa: E402
from madopd_envs.webshop.oracle import instruction_query, random_action, rule_action  # noqa: E402
from madopd_envs.webshop.search import SearchIndex  # noqa: E402


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def latency_ms(index: SearchIndex, queries: list[str]) -> dict[str, float]:
    index.search(queries[0])  # warm-up
    times = []
    for q in queries:
        t = time.perf_counter()
        index.search(q)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"mean_ms": statistics.fmean(times), "p50_ms": times[len(times) // 2],
            "p95_ms": times[int(len(times) * 0.95)], "queries": len(times)}


def play_all(env, policy: str, tasks: list[str], seed: int = 0) -> dict[str, float]:
    rng = random.Random(seed)
    scores, wins, lengths, steps, elapsed = [], 0, [], 0, 0.0
    for task in tasks:
        t = time.perf_counter()
        _, info = env.reset(options={"task_id": task, "split": "test"})
        while True:
            if policy == "oracle":
                action = info["expert_action"]
            elif policy == "random":
                action = random_action(info["admissible_actions"], info["task"], rng)
            else:
                action = rule_action(info["admissible_actions"], info["task"])
            _, _, term, trunc, info = env.step(action)
            steps += 1
            if term or trunc:
                break
        elapsed += time.perf_counter() - t
        scores.append(info["score"])
        wins += info["won"]
        lengths.append(info["step"])
    return {"mean_score": statistics.fmean(scores), "success_rate": wins / len(tasks),
            "mean_steps": statistics.fmean(lengths), "steps_per_s": steps / elapsed, "episodes": len(tasks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=0, help="also time search over this many products")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    out: dict[str, object] = {}

    t = time.perf_counter()
    import bm25s, Stemmer  # noqa: E401,F401  (timed apart: the first import is a fixed cost)
    t_import = time.perf_counter() - t
    raw, t_gen = timed(generate_raw)
    catalogue, t_build = timed(lambda: build_catalogue(*raw))
    index, t_index = timed(SearchIndex.build, catalogue.products)
    out["startup_s"] = {"import_bm25s": t_import, "generate": t_gen, "build_goals": t_build, "index": t_index,
                        "products": len(catalogue.products), "goals": len(catalogue.goals)}

    queries = [instruction_query(catalogue.goals[i].instruction_text) for i in catalogue.split_indices("test")]
    out["search_bundled"] = latency_ms(index, queries)
    if args.scale:
        base = bundled_catalogue().products
        many = [replace(base[i % len(base)], asin=f"S{i:09d}") for i in range(args.scale)]
        big, t_big = timed(SearchIndex.build, many)
        out[f"search_{args.scale}"] = {**latency_ms(big, queries), "index_s": t_big}

    for policy in ("oracle", "random", "rule"):
        # Only the oracle needs expert_action (computing it every step costs a little).
        env = madopd_envs.make("madopd/WebShop-v0", expert=policy == "oracle")
        out[policy] = play_all(env, policy, env.tasks("test"))
        env.close()

    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
