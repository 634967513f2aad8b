"""Steps/s of the JVM engines: madopd's wrappers against the raw engines, side by side in one run.

    .venv/bin/python benchmarks/bench_jvm.py                 # both families
    .venv/bin/python benchmarks/bench_jvm.py --only twx --rounds 7

Each engine variant runs in its own JVM, all started up front; the same recorded action sequences
are replayed by every variant, episode by episode (order rotated), so a burst of load from other
jobs hits them alike. Reported: median steps/s (step calls only; resets timed apart) and the median
of paired per-episode ratios against the raw engine call.

TextWorldExpress (cookingworld, the registered small parameters, test seeds):
  package   textworld_express.TextWorldExpressEnv.step (what users of the package call)
  raw       server.stepJSON + orjson.loads: the bare JVM call, the floor for any wrapper
  wrapper   madopd TWXEnv.step (full info contract: admissible actions, score, expert tracking)

ScienceWorld (random valid-action walks in test variations of several tasks):
  package        scienceworld.ScienceWorldEnv.step (always lists valid actions, look, inventory)
  raw            server.step + getScore + getCompleted (the engine's own step speed)
  wrapper+valid  madopd ScienceWorldEnv, admissible=True (the default)
  wrapper        madopd ScienceWorldEnv, admissible=False (admissible_actions=None)
  raw-native     the raw call in a JVM without the deterministic-hash option (its cost)
and how many different first observations 12 reloads of boil/27 (each after another task) give.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from typing import Any, Callable

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import madopd_envs  # noqa: E402
from madopd_envs.jvm import DEFAULT_JAVA_OPTIONS, java_process, start_engine, stop_engine  # noqa: E402

Episode = tuple[str, list[str]]  # (task id, actions)


def record(env: Any, task_ids: list[str], steps: int, seed: int, avoid: tuple[str, ...] = ()) -> list[Episode]:
    """Random walks over admissible actions (the wrapper with listing on), to replay everywhere.
    Actions starting with ``avoid`` are skipped (ScienceWorld's "focus on" ends most walks at once)."""
    rng = random.Random(seed)
    out = []
    for task_id in task_ids:
        _, info = env.reset(options={"task_id": task_id})
        actions: list[str] = []
        for _ in range(steps):
            a = rng.choice([a for a in info["admissible_actions"] if not a.startswith(avoid)])
            actions.append(a)
            _, _, term, trunc, info = env.step(a)
            if term or trunc:
                break
        out.append((task_id, actions))
    return out


def rounds(variants: dict[str, tuple[Callable[[str], None], Callable[[str], Any]]], episodes: list[Episode],
           n_rounds: int, base: str) -> dict[str, dict[str, float]]:
    """Replay every episode with every variant back to back (order rotated), ``n_rounds`` times.

    Pairing per episode makes the ratios robust to load from other jobs, which changes over
    seconds while one episode replays in milliseconds: ``ratio`` is the median over episodes and
    rounds of (variant steps/s) / (``base`` steps/s) on the same actions.
    """
    names = list(variants)
    rate: dict[str, list[float]] = {k: [] for k in names}
    reset_time: dict[str, list[float]] = {k: [] for k in names}
    ratio: dict[str, list[float]] = {k: [] for k in names}
    turn = 0
    for _ in range(n_rounds):
        for task_id, actions in episodes:
            if not actions:
                continue
            here = {}
            for name in names[turn % len(names):] + names[:turn % len(names)]:
                reset, step = variants[name]
                t0 = time.perf_counter()
                reset(task_id)
                t1 = time.perf_counter()
                for a in actions:
                    step(a)
                here[name] = len(actions) / (time.perf_counter() - t1)
                rate[name].append(here[name])
                reset_time[name].append(t1 - t0)
            turn += 1
            for name in names:
                ratio[name].append(here[name] / here[base])
    return {k: {"steps_per_s": statistics.median(rate[k]), "ratio": statistics.median(ratio[k]),
                "ratio_p25": statistics.quantiles(ratio[k], n=4)[0], "ratio_p75": statistics.quantiles(ratio[k], n=4)[2],
                "resets_per_s": 1 / statistics.median(reset_time[k])} for k in names}


def rss_mb(engine: Any) -> float:
    return psutil.Process(java_process(engine).pid).memory_info().rss / 2**20


def bench_twx(n_rounds: int, n_episodes: int, steps: int) -> dict[str, Any]:
    import orjson
    from textworld_express import TextWorldExpressEnv

    env_id = "madopd/TWX-CookingWorld-v0"
    wrapper = madopd_envs.make(env_id, split="test", max_episode_steps=None)
    episodes = record(wrapper, wrapper.tasks("test")[:n_episodes], steps, seed=0)
    pkg = start_engine(lambda: TextWorldExpressEnv(envStepLimit=100_000))
    raw = start_engine(lambda: TextWorldExpressEnv(envStepLimit=100_000))
    raw.load("cookingworld", wrapper.game_params)
    params = wrapper.game_params
    try:
        variants = {
            "package": (lambda t: pkg.reset(seed=int(t.split("-")[1]), gameFold="test", gameName="cookingworld",
                                            gameParams=params), pkg.step),
            "raw": (lambda t: raw.server.generateNewGameJSON(int(t.split("-")[1]), "test", False),
                    lambda a: orjson.loads(raw.server.stepJSON(a))),
            "wrapper": (lambda t: wrapper.reset(options={"task_id": t}), wrapper.step),
        }
        result = rounds(variants, episodes, n_rounds, "raw")
        result["jvm_rss_mb"] = {"package": rss_mb(pkg), "raw": rss_mb(raw), "wrapper": rss_mb(wrapper._engine)}
    finally:
        for e in (pkg, raw):
            stop_engine(e)
        wrapper.close()
    result["steps_replayed_per_round"] = sum(len(a) for _, a in episodes)
    return result


def bench_scienceworld(n_rounds: int, steps: int) -> dict[str, Any]:
    from scienceworld import ScienceWorldEnv as Engine

    from madopd_envs.scienceworld.env import JAVA_OPTIONS
    from madopd_envs.scienceworld.tasks import task_ids

    tasks = ["boil/21", "find-animal/263", "chemistry-mix/24", "use-thermometer/405", "test-conductivity/675"]
    listing = madopd_envs.make("madopd/ScienceWorld-v0", split="test", max_episode_steps=None)
    lean = madopd_envs.make("madopd/ScienceWorld-v0", split="test", max_episode_steps=None, admissible=False)
    episodes = record(listing, tasks, steps, seed=0, avoid=("focus on",))
    pkg = start_engine(lambda: Engine("", envStepLimit=100_000), JAVA_OPTIONS)
    raw = start_engine(lambda: Engine("", envStepLimit=100_000), JAVA_OPTIONS)
    native = start_engine(lambda: Engine("", envStepLimit=100_000), DEFAULT_JAVA_OPTIONS)

    def pkg_reset(task_id: str) -> None:
        task, var = task_id.split("/")
        pkg.load(task, int(var), "")
        pkg.reset()

    def raw_reset(engine: Any) -> Callable[[str], None]:
        def reset(task_id: str) -> None:
            task, var = task_id.split("/")
            engine.server.load(task, int(var), "", False)
            engine.server.step("look around")
        return reset

    def distinct_reloads(engine: Any, task_id: str = "boil/27", n: int = 12) -> int:
        """Distinct first observations of ``task_id`` over ``n`` reloads, each after another task."""
        rng = random.Random(0)
        others = task_ids("test")
        seen = set()
        for _ in range(n):
            raw_reset(engine)(rng.choice(others))
            task, var = task_id.split("/")
            engine.server.load(task, int(var), "", False)
            seen.add(engine.server.step("look around"))
        return len(seen)

    def raw_step(engine: Any) -> Callable[[str], None]:
        server = engine.server

        def step(a: str) -> None:
            server.step(a)
            server.getScore()
            server.getCompleted()
        return step

    try:
        variants = {
            "package": (pkg_reset, pkg.step),
            "raw": (raw_reset(raw), raw_step(raw)),
            "wrapper+valid": (lambda t: listing.reset(options={"task_id": t}), listing.step),
            "wrapper": (lambda t: lean.reset(options={"task_id": t}), lean.step),
            "raw-native": (raw_reset(native), raw_step(native)),
        }
        result = rounds(variants, episodes, n_rounds, "raw")
        # Reloads of one variation should render identically; the native JVM's do not.
        result["distinct_first_observations_of_boil/27_in_12_reloads"] = {
            "raw": distinct_reloads(raw), "raw-native": distinct_reloads(native)}
        result["jvm_rss_mb"] = {"package": rss_mb(pkg), "raw": rss_mb(raw), "raw-native": rss_mb(native),
                                "wrapper+valid": rss_mb(listing._engine), "wrapper": rss_mb(lean._engine)}
        # What one valid-action listing costs at the start of boil/21, in both JVMs (interleaved).
        times: dict[str, list[float]] = {"raw": [], "raw-native": []}
        for engine in (raw, native):
            raw_reset(engine)(tasks[0])
        for _ in range(20):
            for name, engine in (("raw", raw), ("raw-native", native)):
                t0 = time.perf_counter()
                list(engine.server.getValidActionObjectCombinations())
                times[name].append(time.perf_counter() - t0)
        result["valid_listing_ms"] = {k: statistics.median(v) * 1000 for k, v in times.items()}
    finally:
        for e in (pkg, raw, native):
            stop_engine(e)
        listing.close()
        lean.close()
    result["steps_replayed_per_round"] = sum(len(a) for _, a in episodes)
    return result


def report(title: str, result: dict[str, Any], base: str) -> None:
    rows = {k: v for k, v in result.items() if isinstance(v, dict) and "steps_per_s" in v}
    print(f"\n{title} ({result['steps_replayed_per_round']} steps per round; medians over episodes x rounds)")
    print(f"{'variant':14} {'steps/s':>8} {'us/step':>8} {'x ' + base + ' (p25-p75)':>22} {'resets/s':>9} {'JVM MB':>7}")
    for k, v in rows.items():
        spread = f"{v['ratio']:.2f} ({v['ratio_p25']:.2f}-{v['ratio_p75']:.2f})"
        print(f"{k:14} {v['steps_per_s']:8.0f} {1e6 / v['steps_per_s']:8.0f} {spread:>22} "
              f"{v['resets_per_s']:9.1f} {result['jvm_rss_mb'].get(k, float('nan')):7.0f}")
    for name, ms in result.get("valid_listing_ms", {}).items():
        print(f"one valid-action listing at the start of boil/21, {name} JVM: {ms:.1f} ms (median of 20)")
    for key, counts in result.items():
        if key.startswith("distinct_first"):
            print(f"{key.replace('_', ' ')}: {counts}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=["twx", "scienceworld"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--twx-episodes", type=int, default=40)
    p.add_argument("--twx-steps", type=int, default=50)
    p.add_argument("--sw-steps", type=int, default=40)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    out: dict[str, Any] = {}
    if args.only in (None, "twx"):
        out["twx"] = bench_twx(args.rounds, args.twx_episodes, args.twx_steps)
        report("TextWorldExpress cookingworld", out["twx"], "raw")
    if args.only in (None, "scienceworld"):
        out["scienceworld"] = bench_scienceworld(args.rounds, args.sw_steps)
        report("ScienceWorld", out["scienceworld"], "raw")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
