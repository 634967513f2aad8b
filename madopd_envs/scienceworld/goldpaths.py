"""Measure the engine's gold path of every ScienceWorld variation: its length, and whether playing it wins.

The per-task step limits in :mod:`madopd_envs.scienceworld.tasks` (``STEP_LIMITS``) come from these
lengths. Re-measure after an engine upgrade or a change of JVM options::

    python -m madopd_envs.scienceworld.goldpaths --out goldpaths.jsonl [--tasks boil,melt] [--shard 0/2]
    python -m madopd_envs.scienceworld.goldpaths --summarise goldpaths.jsonl

Each line of the output is ``{"task", "variation", "split", "gold_len", "won", "raw_score", "steps",
"seconds"}``; a run that stops can be restarted with the same ``--out`` (finished variations are
skipped). ``--summarise`` prints the longest gold path per task, the limits the rule gives and the
variations the engine's own gold agent does not win.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from madopd_envs.scienceworld.tasks import SPLITS, TASKS, split_of, step_limit_rule, variations


def measure(task: str, variation: int, engine: Any, play: bool = True) -> dict[str, Any]:
    """Load ``task/variation`` with its gold path, play the path with raw engine steps (unless
    ``play`` is false: half the time, ``won`` is then ``None``), report."""
    t0 = time.perf_counter()
    server = engine.server
    error = server.load(task, variation, "", True)
    if error:
        raise RuntimeError(f"{task}/{variation}: {error}")
    gold = [str(a) for a in server.getGoldActionSequence()]
    server.step("look around")
    raw, completed, steps = 0, False, 0
    for action in gold if play else ():
        server.step(action)
        steps += 1
        raw = int(round(100 * server.getScore()))
        completed = bool(server.getCompleted())
        if completed or raw < 0:
            break
    return {"task": task, "variation": variation, "split": split_of(task, variation), "gold_len": len(gold),
            "won": (completed and raw >= 0) if play else None, "raw_score": raw, "steps": steps,
            "seconds": round(time.perf_counter() - t0, 3)}


def run(out: Path, tasks: Iterable[str], shard: tuple[int, int] = (0, 1), play: bool = True) -> None:
    from scienceworld import ScienceWorldEnv as Engine

    from madopd_envs.jvm import start_engine, stop_engine
    from madopd_envs.scienceworld.env import JAVA_OPTIONS

    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done.add((r["task"], r["variation"]))
    todo = [(t, v) for t in tasks for s in SPLITS for v in variations(t, s) if (t, v) not in done]
    todo = todo[shard[0]::shard[1]]
    engine = start_engine(lambda: Engine("", envStepLimit=1_000_000), JAVA_OPTIONS)
    try:
        with open(out, "a") as fh:
            for i, (task, variation) in enumerate(todo):
                fh.write(json.dumps(measure(task, variation, engine, play)) + "\n")
                fh.flush()
                if i % 200 == 0:
                    print(f"{i}/{len(todo)} {task}/{variation}", file=sys.stderr, flush=True)
    finally:
        stop_engine(engine)


def summarise(paths: Iterable[Path]) -> dict[str, Any]:
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    longest: dict[str, int] = {}
    for r in rows:
        longest[r["task"]] = max(longest.get(r["task"], 0), r["gold_len"])
    missing = sum(sum(v[1:]) for v in TASKS.values()) - len({(r["task"], r["variation"]) for r in rows})
    return {
        "variations": len(rows),
        "missing": missing,
        "longest": {t: longest.get(t) for t in TASKS},
        "limits": {t: step_limit_rule(longest[t]) for t in TASKS if t in longest},
        "not_won": sorted(f"{r['task']}/{r['variation']} ({r['split']}, raw {r['raw_score']} after {r['steps']} "
                          f"of {r['gold_len']})" for r in rows if r["won"] is False),
        "played": sum(r["won"] is not None for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--tasks", default=None, help="comma-separated task names (default: all 30)")
    ap.add_argument("--shard", default="0/1", help="i/n: measure every n-th variation from the i-th")
    ap.add_argument("--no-play", action="store_true", help="lengths only: do not play the paths to check wins")
    ap.add_argument("--summarise", nargs="*", type=Path)
    args = ap.parse_args(argv)
    if args.summarise:
        print(json.dumps(summarise(args.summarise), indent=1))
        return 0
    if args.out is None:
        ap.error("--out is needed to measure (or --summarise FILES)")
    i, n = (int(x) for x in args.shard.split("/"))
    run(args.out, args.tasks.split(",") if args.tasks else list(TASKS), (i, n), play=not args.no_play)
    return 0


if __name__ == "__main__":
    sys.exit(main())
