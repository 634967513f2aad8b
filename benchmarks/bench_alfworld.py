"""ALFWorld: memoised vs stock grammar parsing (speed, identical traces), and the baselines table.

    .venv/bin/python benchmarks/bench_alfworld.py speed --games 4 --steps 40
    .venv/bin/python benchmarks/bench_alfworld.py baselines --split valid_unseen
    .venv/bin/python benchmarks/bench_alfworld.py load

``speed`` replays the same seeded random-admissible actions on the same games three times in one
process: stock TextWorld, the grammar parse memoised, and parse memoised + shallow derivation
contexts (``madopd_envs.alfworld.fastgrammar``'s default, what ALFWorldEnv uses), timing only
``step`` (loading and resetting a game is fast-downward's grounding, which the patch does not touch).
Every observation, admissible list and score of both runs is hashed; the run fails if they differ.
Games: the first ``--games`` default valid_unseen games, the kitchen one first.

``load`` times loading a game, resetting it twice and loading it again (one game per unseen room),
on stock TextWorld and with the fast-downward grounding cache.

``baselines`` plays every game of a split with the scripted expert (``info["expert_action"]``) and a
uniform random admissible policy (``madopd_agents.scripted``), 50 steps per episode, and prints the
per-task-type success table in markdown.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import random
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import madopd_envs  # noqa: E402
from madopd_envs.alfworld import fastgrammar  # noqa: E402
from madopd_envs.alfworld.scenes import TASK_TYPES  # noqa: E402


def replay(env, task_id: str, steps: int, seed: int) -> tuple[str, int, float]:
    """(trace hash, steps, seconds in step) of a seeded random-admissible walk on ``task_id``."""
    obs, info = env.reset(seed=0, options={"task_id": task_id})
    digest = hashlib.sha256(repr((obs, info)).encode())
    rng = random.Random(seed)
    elapsed, n = 0.0, 0
    for _ in range(steps):
        action = rng.choice(sorted(info["admissible_actions"]))
        t = time.perf_counter()
        obs, reward, term, trunc, info = env.step(action)
        elapsed += time.perf_counter() - t
        n += 1
        digest.update(repr((action, obs, reward, term, trunc, info)).encode())
        if term or trunc:
            break
    return digest.hexdigest(), n, elapsed


def speed(args: argparse.Namespace) -> int:
    env = madopd_envs.make("madopd/ALFWorld-v0", split="valid_unseen", max_episode_steps=None, fast=None)
    ids = env.tasks("valid_unseen")
    kitchens = [t for t in ids if t.split("/")[1].endswith("-10")]
    games = (kitchens[:1] + [t for t in ids if t not in kitchens[:1]])[: args.games]
    # stock; parse memoised only; parse memoised + shallow contexts (the default of ALFWorldEnv)
    variants = {"stock": None, "memo": {"contexts": False}, "memo+ctx": {"contexts": True}}
    print("| game | steps | stock steps/s | parse memoised | + shallow contexts (default) | ratio | traces identical |")
    print("|---|---|---|---|---|---|---|")
    totals = {v: [0, 0.0] for v in variants}
    all_same = True
    for k, task_id in enumerate(games):
        rates, hashes = {}, set()
        for name, install_kwargs in variants.items():
            fastgrammar.uninstall()
            if install_kwargs is not None:
                fastgrammar.install(**install_kwargs)
            h, n, t = replay(env, task_id, args.steps, seed=k)
            fastgrammar.uninstall()
            hashes.add((h, n))
            totals[name][0] += n
            totals[name][1] += t
            rates[name] = n / t
        same = len(hashes) == 1
        all_same &= same
        print(f"| {task_id.split('/', 1)[1]} | {n} | {rates['stock']:.1f} | {rates['memo']:.1f} | {rates['memo+ctx']:.1f} "
              f"| {rates['memo+ctx'] / rates['stock']:.2f} | {same} |", flush=True)
    r = {name: n / t for name, (n, t) in totals.items()}
    print(f"| **all** | {totals['stock'][0]} | {r['stock']:.1f} | {r['memo']:.1f} ({r['memo'] / r['stock']:.2f}x) "
          f"| {r['memo+ctx']:.1f} | **{r['memo+ctx'] / r['stock']:.2f}** | {all_same} |")
    env.close()
    if not all_same:
        print("FAIL: memoised traces differ from stock", file=sys.stderr)
        return 1
    if r["memo+ctx"] / r["stock"] < args.min_ratio:
        print(f"FAIL: ratio {r['memo+ctx'] / r['stock']:.2f} < {args.min_ratio}", file=sys.stderr)
        return 1
    return 0


def load(args: argparse.Namespace) -> int:
    """Load + reset + a second reset of the same games, stock vs the grounding cache."""
    from madopd_envs.alfworld.data import GeneratedData
    from madopd_envs.alfworld.engine import open_game

    source = GeneratedData()
    ids = source.tasks("valid_unseen")
    games = [next(t for t in ids if t.split("/")[1].endswith(f"-{room}")) for room in (10, 219, 308, 424)]
    print("| game | variant | load s | reset s | second reset s | reload s |\n|---|---|---|---|---|---|")
    for task_id in games:
        game, _ = source.load(task_id)
        for variant in ("stock", "cached"):
            fastgrammar.uninstall()
            if variant == "cached":
                fastgrammar.install()
            t0 = time.perf_counter()
            engine = open_game(game)
            t1 = time.perf_counter()
            first = engine.reset()["feedback"]
            t2 = time.perf_counter()
            assert engine.reset()["feedback"] == first
            t3 = time.perf_counter()
            open_game(game).reset()
            t4 = time.perf_counter()
            print(f"| {task_id.split('/')[1]} | {variant} | {t1 - t0:.2f} | {t2 - t1:.2f} | {t3 - t2:.2f} | {t4 - t3:.2f} |",
                  flush=True)
    fastgrammar.uninstall()
    return 0


def play(env, agent, task_id: str, max_steps: int) -> bool:
    from madopd_agents.base import SamplingParams

    _, info = env.reset(seed=0, options={"task_id": task_id})
    for _ in range(max_steps):
        action = agent.act([[]], SamplingParams(), infos=[info])[0].text
        _, _, term, trunc, info = env.step(action)
        if term or trunc:
            break
    return bool(info["won"])


def baselines(args: argparse.Namespace) -> int:
    from madopd_agents.scripted import ExpertAgent, RandomAgent

    rows = {}
    for name, agent in (("expert", ExpertAgent()), ("random", RandomAgent(seed=args.seed))):
        env = madopd_envs.make("madopd/ALFWorld-v0", split=args.split, expert=agent.needs_expert)
        ids = env.tasks(args.split)[: args.limit or None]
        wins, counts = collections.Counter(), collections.Counter()
        t0 = time.perf_counter()
        for task_id in ids:
            task_type = task_id.split("/")[1].split("-")[0]
            counts[task_type] += 1
            wins[task_type] += play(env, agent, task_id, args.max_steps)
        env.close()
        rows[name] = (wins, counts)
        print(f"{name}: {sum(wins.values())}/{len(ids)} won in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    short = {"pick_and_place_simple": "Pick", "pick_clean_then_place_in_recep": "Clean",
             "pick_heat_then_place_in_recep": "Heat", "pick_cool_then_place_in_recep": "Cool",
             "look_at_obj_in_light": "Look", "pick_two_obj_and_place": "Pick2"}
    order = ["pick_and_place_simple", "pick_clean_then_place_in_recep", "pick_heat_then_place_in_recep",
             "pick_cool_then_place_in_recep", "look_at_obj_in_light", "pick_two_obj_and_place"]
    assert set(order) == set(TASK_TYPES)
    counts = rows["expert"][1]
    print(f"{args.split}, {sum(counts.values())} games, {args.max_steps} steps per episode (success %, wins/games):\n")
    print("| policy | " + " | ".join(f"{short[t]} ({counts[t]})" for t in order) + " | All |")
    print("|---" * (len(order) + 2) + "|")
    for name, (wins, cnt) in rows.items():
        cells = [f"{100 * wins[t] / cnt[t]:.0f} ({wins[t]}/{cnt[t]})" if cnt[t] else "-" for t in order]
        total = sum(cnt.values())
        print(f"| {name} | " + " | ".join(cells) + f" | {100 * sum(wins.values()) / total:.1f} |")
    expert_wins, expert_counts = rows["expert"]
    return 0 if sum(expert_wins.values()) == sum(expert_counts.values()) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("speed", help="memoised vs stock steps/s on the same games")
    sp.add_argument("--games", type=int, default=4)
    sp.add_argument("--steps", type=int, default=40)
    sp.add_argument("--min-ratio", type=float, default=3.0)
    bp = sub.add_parser("baselines", help="expert and random success per task type")
    bp.add_argument("--split", default="valid_unseen", choices=("train", "valid_seen", "valid_unseen"))
    bp.add_argument("--max-steps", type=int, default=50)
    bp.add_argument("--limit", type=int, default=0, help="first N games only (0: all)")
    bp.add_argument("--seed", type=int, default=0)
    sub.add_parser("load", help="load/reset times, stock vs the grounding cache")
    args = parser.parse_args()
    return {"speed": speed, "baselines": baselines, "load": load}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
