"""Generate ALFWorld games offline, in upstream's layout, keeping only games the expert solves.

    python -m madopd_envs.alfworld.generate --out DIR --split valid_unseen --n 134 --seed 0 --workers 2

writes ``DIR/json_2.1.1/<split>/<task>-<obj>-None-<parent>-<scene>/trial_G<seed>_<index>/`` with a
``game.tw-pddl`` and a ``traj_data.json`` per game, which upstream's ``AlfredTWEnv`` and
``madopd/ALFWorld-v0`` (``data_path=DIR``) both load. ``--cache`` writes them where
``madopd/ALFWorld-v0`` looks for generated games (train games are otherwise made on first use);
``--bundle FILE`` writes one gzipped JSON-lines file (how the default eval sets ship in the package).

Game ``index`` of a split is a pure function of (seed, split, index): its task (type, object,
receptacle, room) is drawn first and names the game; then scenes are drawn for that task until
upstream's handcoded expert solves one (upstream marks games ``solvable`` the same way), so the
walkthrough is stored with the game. Workers only change the speed, never the games.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import multiprocessing
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from madopd_envs.alfworld import scenes
from madopd_envs.alfworld.engine import alfworld_version, game_data, open_game

GENERATOR_VERSION = 1  # bump when generated games change (cache directories carry it)
MAX_SCENE_ATTEMPTS = 16
OPEN_VIEW_AFTER = 8  # later attempts keep the task's objects out of closed receptacles
EXPERT_STEP_LIMIT = 50  # the episode cap of madopd/ALFWorld-v0 and upstream (max_nb_steps_per_episode)
GAME_TIME_LIMIT_S = 120.0


class GenerationError(RuntimeError):
    pass


def cache_root() -> Path:
    """Where games generated on demand are cached: ``$MADOPD_CACHE/alfworld`` (default ``~/.cache/madopd``)."""
    base = os.environ.get("MADOPD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "madopd")
    return Path(base) / "alfworld"


def generated_cache(seed: int, base: Path | None = None) -> Path:
    """The ``json_2.1.1`` root of cached games of ``seed`` (the generator and alfworld versions name it)."""
    return Path(base or cache_root()) / f"gen{GENERATOR_VERSION}-alfworld{alfworld_version()}-seed{seed}" / "json_2.1.1"


def solve_with_expert(game: dict[str, Any], traj: dict[str, Any], *, seed: int,
                      step_limit: int = EXPERT_STEP_LIMIT, time_limit_s: float = GAME_TIME_LIMIT_S) -> list[str] | None:
    """Play ``game`` with the handcoded expert; the command list if it wins, else ``None``."""
    from madopd_envs.alfworld import fastgrammar
    from madopd_envs.alfworld.expert import HandcodedExpert

    fastgrammar.install()  # identical traces, ~3x faster (see fastgrammar)
    env = open_game(game, facts=True)
    state = env.reset()
    expert = HandcodedExpert(traj, seed=seed)
    action: str | None = expert.first(state)
    walkthrough: list[str] = []
    start = time.monotonic()
    while action is not None and len(walkthrough) < step_limit and time.monotonic() - start < time_limit_s:
        state, _, done = env.step(action)
        walkthrough.append(action)
        if state["won"]:
            return walkthrough
        action = expert.next(state, action)
    return None


def make_game(split: str, index: int, seed: int) -> dict[str, Any]:
    """Game ``index`` of ``split``: ``{"id", "pddl_problem", "task_desc", "traj_data", "walkthrough"}``."""
    spec = scenes.task_spec(split, index, seed)
    gid = scenes.game_id(split, index, seed)
    for attempt in range(MAX_SCENE_ATTEMPTS):
        rng = random.Random(f"madopd-alfworld:{seed}:{split}:{index}:scene:{attempt}")
        placement = scenes.populate(spec, rng, open_view=attempt >= OPEN_VIEW_AFTER)
        problem = scenes.pddl_problem(spec, placement, rng, name=f"plan_trial_G{seed}_{index:05d}")
        desc = scenes.task_description(spec, rng)
        traj = scenes.traj_data(spec, desc, gid, seed, index)
        traj["madopd"]["scene_attempt"] = attempt
        walkthrough = solve_with_expert(game_data(problem, desc), traj, seed=index)
        if walkthrough is not None:
            return {"id": gid, "pddl_problem": problem, "task_desc": desc, "traj_data": traj, "walkthrough": walkthrough}
    raise GenerationError(f"the expert solved none of {MAX_SCENE_ATTEMPTS} scenes for {gid}")


# -- the two on-disk forms ----------------------------------------------------------------------
def write_official(record: dict[str, Any], json_root: Path) -> Path:
    """Write one game in upstream's layout under ``json_root`` (a ``json_2.1.1`` directory)."""
    game_dir = json_root / record["id"]
    game_dir.mkdir(parents=True, exist_ok=True)
    doc = game_data(record["pddl_problem"], record["task_desc"], solvable=True, walkthrough=record["walkthrough"])
    # Write to a temporary name and rename: a reader never sees half a game.
    for name, payload in (("traj_data.json", record["traj_data"]), ("game.tw-pddl", doc)):
        tmp = game_dir / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(payload, indent=None, sort_keys=True))
        tmp.replace(game_dir / name)
    return game_dir


def read_official(game_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(game.tw-pddl document, traj_data) of one game directory."""
    return (json.loads((game_dir / "game.tw-pddl").read_text()), json.loads((game_dir / "traj_data.json").read_text()))


def write_bundle(records: list[dict[str, Any]], path: Path) -> None:
    """Games as gzipped JSON lines, byte-for-byte reproducible (no timestamp in the gzip header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for record in sorted(records, key=lambda r: r["id"]):
            gz.write((json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def read_bundle(path: Path) -> Iterator[dict[str, Any]]:
    with gzip.open(path, "rt") as f:
        for line in f:
            yield json.loads(line)


# -- parallel generation ------------------------------------------------------------------------
def _worker(job: tuple[str, int, int]) -> dict[str, Any]:
    try:
        return make_game(*job)
    except GenerationError as e:  # reported by the caller; the other games go on
        return {"error": str(e), "index": job[1]}


def generate(split: str, indices: range | list[int], seed: int, *, workers: int = 1,
             json_root: Path | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """Make games ``indices`` of ``split``; with ``json_root``, games already there are reused and
    new ones are written as they finish (an interrupted run resumes where it stopped)."""
    records: dict[int, dict[str, Any]] = {}
    todo = []
    for i in indices:
        gid = scenes.game_id(split, i, seed)
        if json_root is not None and (json_root / gid / "game.tw-pddl").exists():
            doc, traj = read_official(json_root / gid)
            records[i] = {"id": gid, "pddl_problem": doc["pddl_problem"], "task_desc": traj["template_task_desc"],
                          "traj_data": traj, "walkthrough": doc["walkthrough"]}
        else:
            todo.append((split, i, seed))
    start = time.monotonic()
    failed: list[str] = []

    def done(record: dict[str, Any], n: int) -> None:
        if "error" in record:
            failed.append(record["error"])
            print(f"[{n}/{len(todo)}] FAILED: {record['error']}", file=sys.stderr, flush=True)
            return
        if json_root is not None:
            write_official(record, json_root)
        if progress:
            rate = n / max(time.monotonic() - start, 1e-9)
            print(f"[{n}/{len(todo)}] {record['id']} ({len(record['walkthrough'])} expert steps, {rate:.2f} games/s)",
                  file=sys.stderr, flush=True)

    if workers <= 1 or len(todo) <= 1:
        for n, job in enumerate(todo, 1):
            record = _worker(job)
            done(record, n)
            if "error" not in record:
                records[job[1]] = record
    else:
        # Fresh worker processes (spawn): the engine is not fork- or thread-safe and leaks over long runs.
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, maxtasksperchild=50) as pool:
            for n, record in enumerate(pool.imap(_worker, todo), 1):
                done(record, n)
                if "error" not in record:
                    records[int(record["traj_data"]["madopd"]["index"])] = record
    if failed:
        raise GenerationError(f"{len(failed)} of {len(indices)} games failed (the others are kept"
                              f"{' in ' + str(json_root) if json_root else ''}): {failed[0]}")
    return [records[i] for i in indices]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m madopd_envs.alfworld.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", required=True, choices=scenes.SPLITS)
    parser.add_argument("--n", type=int, required=True, help="number of games (indices start..start+n-1)")
    parser.add_argument("--start", type=int, default=0, help="first game index (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="generation seed (default 0, the default sets' seed)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", type=Path, help="data root: games go to OUT/json_2.1.1/<split>/... (upstream layout)")
    out.add_argument("--bundle", type=Path, help="write one gzipped JSON-lines file instead")
    out.add_argument("--cache", action="store_true",
                     help="fill the cache madopd/ALFWorld-v0 plays generated games from ($MADOPD_CACHE/alfworld)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.start < 0 or args.workers < 1:
        parser.error("--n and --workers must be >= 1 and --start >= 0")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # A SIGTERM unwinds like Ctrl-C, so the worker pool is terminated instead of orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    indices = range(args.start, args.start + args.n)
    json_root = args.out / "json_2.1.1" if args.out else None
    if args.cache or args.bundle:
        # A bundle is packed from the cache, so an interrupted run resumes instead of starting over.
        json_root = generated_cache(args.seed)
    t0 = time.monotonic()
    try:
        records = generate(args.split, indices, args.seed, workers=args.workers, json_root=json_root, progress=True)
    except GenerationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.bundle:
        write_bundle(records, args.bundle)
    where = args.bundle or json_root / args.split
    print(f"{len(records)} {args.split} games (seed {args.seed}, alfworld {alfworld_version()}, generator "
          f"v{GENERATOR_VERSION}) in {where} after {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
