"""ScienceWorld steps/s: AgentGym's FastAPI env server + HTTP clients vs madopd's ``make_vec``, side by side.

    .venv/bin/python benchmarks/bench_agentgym.py --agentgym PATH --quick       # 1 and 8 envs
    .venv/bin/python benchmarks/bench_agentgym.py --agentgym PATH --concurrency 1 8 32

``PATH`` is a clone of https://github.com/WooooDyy/AgentGym (a checkout or a bare mirror). Its
``agentenv-sciworld`` folder is ``git archive``d into a temporary directory and pip-installed, with
``scienceworld==1.2.3`` (the engine madopd pins), into a separate virtualenv (default
``benchmarks/.venvs/agentgym``, created when missing). No AgentGym code enters this repository or
madopd's own virtualenv.

The two sides play the same episodes: fixed ScienceWorld test variations, each replaying the engine's
gold action sequence (generated once with madopd's JVM options and cached under ``benchmarks/.cache``).
With N concurrent environments, slot ``i`` plays ``k`` consecutive episodes of the list from its
``i``-th (wrapping around).

  agentgym  the server (``sciworld --host 127.0.0.1``, started here) and N threads each issuing the
            requests AgentGym's ``SciworldEnvClient`` issues: POST /create, /reset {data_idx},
            /step {action} (``requests.post``, a new connection each call, as the client does), /close.
            The threads send bare actions: the client's parsing of a model's reply is not timed.
  madopd    ``make_vec("madopd/ScienceWorld-v0", N)`` (one worker process and JVM per env) stepping
            the same actions in lockstep; envs whose episode ended are reset to their next one.
            ``lean``: ``admissible=False`` -- a step returns what AgentGym's /step returns (observation,
            score, done); ``default``: ``admissible=True`` -- also lists the valid actions every step.

Timed: from every env being created and reset to its first episode (start-up is reported apart)
to the last step of the last episode, later resets included. steps/s = env steps / wall seconds.
Both sides' JVMs run with madopd's options (384 MB heap, deterministic identity hashes) unless
``--agentgym-native-jvm``; without the hash option, object order in ScienceWorld 1.2.3 varies between
loads and so do the observations.

Observations compared per step (after the runs, every side against the first): reset = AgentGym's
``observation`` and ``task_description`` vs madopd's first observation and ``info["task"]`` (the
AgentGym client concatenates the two; madopd keeps them apart); step = the observation string as is,
the engine score (AgentGym ``score`` vs ``info["raw_score"]``) and the done flag (AgentGym ``done`` vs
``terminated``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import requests  # noqa: E402

from madopd_envs.scienceworld.env import JAVA_OPTIONS  # noqa: E402
from madopd_envs.scienceworld.tasks import TASKS, variations  # noqa: E402

SCIENCEWORLD = "scienceworld==1.2.3"
DEFAULT_VENV = ROOT / "benchmarks" / ".venvs" / "agentgym"
CACHE = ROOT / "benchmarks" / ".cache" / "agentgym_gold.json"
# AgentGym's server leaves these tasks (paper ids) out of its data_idx enumeration.
AGENTGYM_EXCLUDED = {"5-1", "5-2", "9-1", "9-2", "9-3", "10-1", "10-2"}
# (task, k): the k-th test variation. Tasks AgentGym serves, gold paths of 11-19 actions (so that the
# envs of a lockstep batch finish their episodes at about the same time), a spread of topics.
EPISODES: list[tuple[str, int]] = [
    ("find-living-thing", 0), ("use-thermometer", 0), ("test-conductivity", 0), ("chemistry-mix", 0),
    ("find-plant", 1), ("power-component-renewable-vs-nonrenewable-energy", 0),
    ("test-conductivity-of-unknown-substances", 0), ("find-animal", 2), ("identify-life-stages-2", 0),
    ("chemistry-mix-paint-tertiary-color", 0),
]
GB = 1024 ** 3
PER_ENV_BYTES = int(0.45 * GB)  # one JVM + its Python side: 0.25-0.31 GiB measured at 1 env, with room


# -- the AgentGym side: install, server, clients --------------------------------------------------
def fail(msg: str) -> None:
    """A one-line error for bad input, exit status 2."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def ensure_venv(agentgym: Path, venv: Path) -> Path:
    """The AgentGym server's virtualenv; built (git archive + pip from PyPI) when missing."""
    sciworld = venv / "bin" / "sciworld"
    if sciworld.exists():
        return sciworld
    if not agentgym.exists():
        fail(f"--agentgym {agentgym} does not exist; clone https://github.com/WooooDyy/AgentGym there")
    tmp = Path(tempfile.mkdtemp(prefix="agentgym-"))
    try:
        archive = subprocess.run(["git", "-C", str(agentgym), "archive", "HEAD", "agentenv-sciworld"],
                                 capture_output=True)
        if archive.returncode == 0:
            subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
            commit = subprocess.run(["git", "-C", str(agentgym), "rev-parse", "HEAD"], capture_output=True,
                                    text=True).stdout.strip()
        elif (agentgym / "agentenv-sciworld").is_dir():  # a plain copy without git
            shutil.copytree(agentgym / "agentenv-sciworld", tmp / "agentenv-sciworld")
            commit = "unknown (not a git repository)"
        else:
            fail(f"{agentgym} holds no agentenv-sciworld folder (git said: "
                 f"{archive.stderr.decode().strip()}); give a clone of WooooDyy/AgentGym")
        print(f"installing AgentGym's agentenv-sciworld @ {commit} into {venv} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt")]
        subprocess.run(pip + [str(tmp / "agentenv-sciworld"), SCIENCEWORLD], check=True)
        (venv / "agentgym-commit.txt").write_text(commit + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sciworld


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """AgentGym's ``sciworld`` server on 127.0.0.1, in its own process group (its JVMs die with it)."""

    def __init__(self, sciworld: Path, native_jvm: bool, log: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("JAVA_TOOL_OPTIONS", None)
        if not native_jvm:
            env["JAVA_TOOL_OPTIONS"] = JAVA_OPTIONS
        self.log = open(log, "w")
        self.proc = subprocess.Popen([str(sciworld), "--host", "127.0.0.1", "--port", str(self.port)], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while True:  # poll until it answers (its start-up enumerates every task in a JVM)
            if self.proc.poll() is not None:
                raise RuntimeError(f"AgentGym server exited with {self.proc.returncode}; see {log}")
            try:
                if requests.get(self.base + "/", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"AgentGym server did not answer within 300 s; see {log}")
            time.sleep(0.2)

    def rss(self) -> int:
        return tree_rss(self.proc.pid)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        self.log.close()


def tree_rss(pid: int) -> int:
    try:
        p = psutil.Process(pid)
        procs = [p] + p.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def data_index() -> dict[tuple[str, int], int]:
    """(task, variation) -> AgentGym's ``data_idx``: its server enumerates every variation of every task
    in the engine's task order (``scienceworld.constants.ID2TASK``), minus the excluded ids."""
    from scienceworld.constants import ID2TASK

    out, i = {}, 0
    for task_id, name in ID2TASK.items():
        if task_id in AGENTGYM_EXCLUDED:
            continue
        for v in range(sum(TASKS[name][1:])):
            out[(name, v)] = i
            i += 1
    return out


Trace = list[list[Any]]  # per episode: [reset record, step records...]


def agentgym_run(base: str, schedule: list[list[dict]], rss_of: Any,
                 timeout: float = 300) -> tuple[float, list[Trace], int, float]:
    """N threads, one AgentGym env each (the client's requests). Returns (seconds, traces per slot, RSS of
    the server and its JVMs before /close, start-up seconds)."""
    n = len(schedule)
    traces: list[Trace] = [[] for _ in range(n)]
    ids: list[int] = [0] * n
    errors: list[str] = []
    ready, go = threading.Barrier(n + 1), threading.Barrier(n + 1)

    def post(path: str, data: dict) -> dict:
        res = requests.post(f"{base}/{path}", json=data, timeout=timeout)
        res.raise_for_status()
        out = res.json()
        if isinstance(out, dict) and "error" in out:
            raise RuntimeError(f"/{path}: {out['error']}")
        return out

    def reset(slot: int, ep: dict) -> None:
        r = post("reset", {"id": ids[slot], "data_idx": ep["data_idx"]})
        assert (r["task_name"], r["var_num"]) == (ep["task"], ep["variation"]), (r["task_name"], r["var_num"], ep)
        traces[slot].append([["reset", r["observation"], r["task_description"]]])

    def slot_main(slot: int) -> None:
        try:
            res = requests.post(f"{base}/create", timeout=timeout)  # as the client: no body
            ids[slot] = res.json()["id"]
            reset(slot, schedule[slot][0])
        except Exception as e:
            errors.append(f"slot {slot} start: {e}")
        ready.wait()
        go.wait()
        if errors:
            return
        try:
            for k, ep in enumerate(schedule[slot]):
                if k:
                    reset(slot, ep)
                for action in ep["actions"]:
                    r = post("step", {"id": ids[slot], "action": action})
                    traces[slot][-1].append([r["observation"], r["score"], r["done"]])
                    if r["done"]:
                        break
        except Exception as e:
            errors.append(f"slot {slot}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=slot_main, args=(i,), daemon=True) for i in range(n)]
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    ready.wait()
    startup = time.perf_counter() - t_start
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    rss = rss_of()
    for i in range(n):
        try:
            requests.post(f"{base}/close", json={"id": ids[i]}, timeout=timeout)
        except requests.RequestException:
            pass
    if errors:
        raise RuntimeError("AgentGym side failed: " + "; ".join(errors[:3]))
    return seconds, traces, rss, startup


# -- the madopd side ----------------------------------------------------------------------------
def madopd_run(schedule: list[list[dict]], admissible: bool) -> tuple[float, list[Trace], int, float]:
    """make_vec over N worker processes, lockstep. Returns (seconds, traces per slot, RSS, start-up s)."""
    from madopd_envs import make_vec

    n = len(schedule)
    traces: list[Trace] = [[] for _ in range(n)]
    t_start = time.perf_counter()
    vec = make_vec("madopd/ScienceWorld-v0", n, admissible=admissible, step_timeout=600)
    try:
        def reset(indices: list[int], k: list[int]) -> None:
            eps = [schedule[i][k[i]] for i in indices]
            obs, infos = vec.reset(indices=indices, options=[{"task_id": f"{e['task']}/{e['variation']}",
                                                               "split": e["split"]} for e in eps])
            for i, o, info in zip(indices, obs, infos):
                if o is None:
                    raise RuntimeError(f"madopd reset failed: {info.get('error')}")
                traces[i].append([["reset", o, info["task"]]])

        k = [0] * n  # episode index per slot
        pos = [0] * n  # action index in the episode
        reset(list(range(n)), k)
        startup = time.perf_counter() - t_start
        t0 = time.perf_counter()
        while True:
            actions = [schedule[i][k[i]]["actions"][pos[i]] if k[i] < len(schedule[i]) else None for i in range(n)]
            if all(a is None for a in actions):
                break
            obs, _, term, trunc, infos = vec.step(actions)
            again = []
            for i, a in enumerate(actions):
                if a is None:
                    continue
                if "error" in infos[i]:
                    raise RuntimeError(f"madopd step failed: {infos[i]['error']}")
                traces[i][-1].append([obs[i], int(infos[i]["raw_score"]), bool(term[i])])
                pos[i] += 1
                if term[i] or trunc[i] or pos[i] == len(schedule[i][k[i]]["actions"]):
                    k[i], pos[i] = k[i] + 1, 0
                    if k[i] < len(schedule[i]):
                        again.append(i)
            if again:
                reset(again, k)
        seconds = time.perf_counter() - t0
        rss = sum(tree_rss(p) for p in vec.pids())
    finally:
        vec.close()
    return seconds, traces, rss, startup


# -- workload -----------------------------------------------------------------------------------
def gold_paths(episodes: list[tuple[str, int]]) -> dict[str, list[str]]:
    """The engine's gold action sequence of each episode (madopd's JVM options), cached on disk."""
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    key = f"{SCIENCEWORLD} {JAVA_OPTIONS}"
    got = cache.setdefault(key, {})
    todo = [(t, variations(t, "test")[k]) for t, k in episodes if f"{t}/{variations(t, 'test')[k]}" not in got]
    if todo:
        from scienceworld import ScienceWorldEnv as Engine

        from madopd_envs.jvm import start_engine, stop_engine

        engine = start_engine(lambda: Engine("", envStepLimit=1_000_000), JAVA_OPTIONS)
        try:
            for task, v in todo:
                t0 = time.perf_counter()
                err = engine.server.load(task, v, "", True)
                if err:
                    raise RuntimeError(f"{task}/{v}: {err}")
                got[f"{task}/{v}"] = [str(a) for a in engine.server.getGoldActionSequence()]
                print(f"gold path {task}/{v}: {len(got[f'{task}/{v}'])} actions "
                      f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
        finally:
            stop_engine(engine)
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        CACHE.write_text(json.dumps(cache, indent=1))
    return got


def build_schedule(n: int, episodes_per_env: int, min_episodes: int) -> list[list[dict]]:
    gold = gold_paths(EPISODES)
    idx = data_index()
    per_slot = max(episodes_per_env, -(-min_episodes // n))
    out = []
    for i in range(n):  # slot i: per_slot consecutive episodes of the list, starting at its i-th
        eps = []
        for j in range(i, i + per_slot):
            task, k = EPISODES[j % len(EPISODES)]
            v = variations(task, "test")[k]
            eps.append({"task": task, "variation": v, "split": "test", "data_idx": idx[(task, v)],
                        "actions": gold[f"{task}/{v}"]})
        out.append(eps)
    return out


def compare(a: list[Trace], b: list[Trace]) -> tuple[int, int, int, list[str]]:
    """(records compared, observation mismatches, score/done mismatches, first few differences)."""
    total = obs_bad = other_bad = 0
    examples: list[str] = []
    for slot, (ta, tb) in enumerate(zip(a, b)):
        if len(ta) != len(tb):
            obs_bad += 1
            examples.append(f"slot {slot}: {len(ta)} vs {len(tb)} episodes")
        for e, (ea, eb) in enumerate(zip(ta, tb)):
            if len(ea) != len(eb):
                other_bad += 1
                examples.append(f"slot {slot} episode {e}: {len(ea) - 1} vs {len(eb) - 1} steps")
            for s, (ra, rb) in enumerate(zip(ea, eb)):
                total += 1
                if ra[1] != rb[1] or (s == 0 and ra[2] != rb[2]):
                    obs_bad += 1
                    if len(examples) < 5:
                        examples.append(f"slot {slot} episode {e} step {s}: {str(ra)[:160]!r} vs {str(rb)[:160]!r}")
                elif s and ra[1:] != rb[1:]:
                    other_bad += 1
                    if len(examples) < 5:
                        examples.append(f"slot {slot} episode {e} step {s}: score/done {ra[2:]} vs {rb[2:]}")
    return total, obs_bad, other_bad, examples


def steps_of(traces: list[Trace]) -> int:
    return sum(len(ep) - 1 for t in traces for ep in t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agentgym", type=Path, required=True, help="a clone (checkout or bare) of WooooDyy/AgentGym")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the AgentGym server's virtualenv (made if missing)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--quick", action="store_true", help="1 and 8 envs, one round, two episodes per env")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of both sides per concurrency (order alternates)")
    ap.add_argument("--episodes-per-env", type=int, default=2)
    ap.add_argument("--min-episodes", type=int, default=4, help="at least this many episodes per run (1 env)")
    ap.add_argument("--madopd", default="lean,default", help="madopd variants: lean (admissible=False), default")
    ap.add_argument("--agentgym-native-jvm", action="store_true",
                    help="run AgentGym's JVMs with their default options instead of madopd's")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.quick:
        args.concurrency, args.rounds, args.episodes_per_env = [1, 8], 1, 2
    variants = [v.strip() for v in args.madopd.split(",") if v.strip()]
    if not variants or any(v not in ("lean", "default") for v in variants):
        fail("--madopd takes lean and/or default (comma-separated)")

    sciworld = ensure_venv(args.agentgym, args.venv)
    commit_file = args.venv / "agentgym-commit.txt"
    commit = commit_file.read_text().strip() if commit_file.exists() else "unknown"
    log = Path(tempfile.gettempdir()) / "bench_agentgym_server.log"
    t0 = time.perf_counter()
    server = Server(sciworld, args.agentgym_native_jvm, log)
    print(f"AgentGym @ {commit}: server up on {server.base} in {time.perf_counter() - t0:.1f} s "
          f"(log {log})", file=sys.stderr, flush=True)
    rows = []
    try:
        for n in args.concurrency:
            need = n * PER_ENV_BYTES + GB
            avail = psutil.virtual_memory().available
            if avail < need:
                msg = f"skipped: needs ~{need / GB:.0f} GiB, {avail / GB:.1f} GiB available"
                print(f"N={n}: {msg}", file=sys.stderr, flush=True)
                rows.append({"concurrency": n, "skipped": msg})
                continue
            schedule = build_schedule(n, args.episodes_per_env, args.min_episodes)
            sides = ["agentgym"] + [f"madopd-{v}" for v in variants]
            results: dict[str, list[dict]] = {s: [] for s in sides}
            traces: dict[str, list[Trace]] = {}
            load = [os.getloadavg()[0]]
            for r in range(args.rounds):
                order = sides if r % 2 == 0 else sides[::-1]
                for side in order:
                    if side == "agentgym":
                        secs, tr, rss, startup = agentgym_run(server.base, schedule, server.rss)
                    else:
                        secs, tr, rss, startup = madopd_run(schedule, admissible=side == "madopd-default")
                    res = {"seconds": secs, "rss": rss, "startup": startup}
                    res["steps"] = steps_of(tr)
                    res["steps_per_s"] = res["steps"] / secs
                    results[side].append(res)
                    traces.setdefault(side, tr)
                    print(f"N={n} round {r} {side}: {res['steps']} steps in {secs:.1f} s = "
                          f"{res['steps_per_s']:.1f} steps/s (start-up {startup:.1f} s, RSS {rss / GB:.2f} GiB)",
                          file=sys.stderr, flush=True)
                    load.append(os.getloadavg()[0])
            row: dict[str, Any] = {"concurrency": n, "episodes": sum(len(s) for s in schedule),
                                   "load": [min(load), max(load)], "sides": results}
            ref = traces["agentgym"]
            for side in sides[1:]:
                total, obs_bad, other_bad, ex = compare(ref, traces[side])
                row[f"{side}_compared"] = {"records": total, "obs_mismatches": obs_bad,
                                           "score_done_mismatches": other_bad, "examples": ex}
            wins = sum(1 for t in ref for ep in t if len(ep) > 1 and ep[-1][1] == 100)
            row["agentgym_wins"] = wins
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.stop()
    print("\n| envs | AgentGym steps/s | " + " | ".join(f"madopd {v} steps/s | ratio" for v in variants)
          + " | obs mismatches | load |")
    print("|---" * (4 + 2 * len(variants)) + "|")
    for row in rows:
        if "skipped" in row:
            print(f"| {row['concurrency']} | {row['skipped']} |")
            continue
        med = {s: sorted(x["steps_per_s"] for x in v)[len(v) // 2] for s, v in row["sides"].items()}
        cells = [f"{med['madopd-' + v]:.1f} | {med['madopd-' + v] / med['agentgym']:.2f}x" for v in variants]
        mism = ", ".join(f"{row[f'madopd-{v}_compared']['obs_mismatches']}+{row[f'madopd-{v}_compared']['score_done_mismatches']}"
                         f"/{row[f'madopd-{v}_compared']['records']}" for v in variants)
        print(f"| {row['concurrency']} | {med['agentgym']:.1f} | " + " | ".join(cells)
              + f" | {mism} | {row['load'][0]:.1f}-{row['load'][1]:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"agentgym_commit": commit, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
