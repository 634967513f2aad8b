"""``python -m madopd_envs.eval``: evaluate agents on a leaderboard or one env, resumably.

    python -m madopd_envs.eval --agent expert --env madopd/TWX-Coin-v0 --episodes 5 --output runs/x
    python -m madopd_envs.eval --agent smollm2-135m --agent random --leaderboard default --output runs/d --resume

With several ``--agent``s each writes to ``OUTPUT/<agent>/``. Exit codes: 0 done; 2 bad arguments,
configuration or output (missing weights, unknown env/agent/split, missing data, a different run, other
data or other weights in OUTPUT (``--rerun-changed`` plays such an agent again), an output that cannot be
written: read-only, full, a file), checked before any model loads where possible and always said in one
line; 3 done, but some episodes errored (a dead or hung worker, an agent that raised, answered garbage or
timed out: see ``errors`` in summary.json; rerun with ``--resume --retry-errored``); 130 interrupted (the
finished episodes are on disk; rerun with ``--resume``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from madopd_envs.eval.config import ConfigError, Entry, load_leaderboard


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m madopd_envs.eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", action="append", required=True,
                   help="agent card name (leaderboards/conf/agent/<name>.yaml); repeat for several agents")
    p.add_argument("--agent-args", default="", metavar="K=V,...",
                   help="card overrides: model=..., backend=..., temperature=..., history=..., batch_size=...")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--leaderboard", help="leaderboard config name (leaderboards/conf/leaderboard/<name>.yaml)")
    where.add_argument("--env", help="one registered env id (python -m madopd_envs list)")
    p.add_argument("--split", help="with --env: the split (default: test, else the env's last split)")
    p.add_argument("--episodes", type=int, help="episodes per env and seed (default 10 with --env; "
                                                "overrides the leaderboard's when given)")
    p.add_argument("--max-steps", type=int, help="actions per episode (default: the env's registered limit)")
    p.add_argument("--seed", type=int, help="episode seed (default 0 with --env; overrides the leaderboard's)")
    p.add_argument("--num-envs", type=int, default=4, help="episodes played at once, each in its own worker")
    p.add_argument("--output", type=Path, help="results folder (default runs/eval/<agent>-<leaderboard|env>)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUTPUT, skipping finished episodes")
    p.add_argument("--retry-errored", action="store_true",
                   help="with --resume (implied): play the run's errored episodes again")
    p.add_argument("--rerun-changed", action="store_true",
                   help="with --resume (implied): an agent whose weights changed since its run is played again")
    p.add_argument("--step-timeout", type=float, default=120.0, help="seconds before a step counts as hung")
    p.add_argument("--agent-timeout", type=float, default=1800.0,
                   help="seconds one batched agent.act may take before its episodes count as errored (0: no limit)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--profile", action="store_true",
                   help="print where the time went (env, prompt, prefill, decode, I/O...) after each agent's table")
    p.add_argument("--backend", choices=("process", "ray"), default=None,
                   help="env workers: local processes, or Ray actors (needs the `ray` extra); default: the "
                        "leaderboard's `workers: {backend: ...}`, else process")
    p.add_argument("--envs-per-worker", type=int, default=1, metavar="K",
                   help="process workers: K envs per worker process, one message per worker per turn (fast "
                        "engines; a dead worker errors its K episodes). Default 1")
    p.add_argument("--ray-address", help="with --backend ray: a running cluster's head (host:port); "
                                         "default: a local cluster started for this run")
    return p


def entries_from_args(args: argparse.Namespace) -> tuple[list[Entry], str | None]:
    if args.leaderboard:
        board = load_leaderboard(args.leaderboard)
        entries = []
        for e in board.entries:
            over = {}
            if args.episodes is not None:
                over["episodes"] = args.episodes
            if args.max_steps is not None:
                over["max_steps"] = args.max_steps
            if args.seed is not None:
                over["seeds"] = (args.seed,)
            entries.append(Entry(**{**e.__dict__, **over}))
        return entries, board.name
    from madopd_envs.registry import spec

    card = spec(args.env).card  # unknown ids fail here, with suggestions
    splits = list(card.splits) or ["test"]
    split = args.split or ("test" if "test" in splits else splits[-1])
    if card.splits and split not in card.splits:
        raise ConfigError(f"{args.env} has no split {split!r}; known: {', '.join(splits)}")
    return [Entry(env=args.env, split=split, episodes=args.episodes or 10, max_steps=args.max_steps,
                  seeds=(0 if args.seed is None else args.seed,))], None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from madopd_envs.eval.results import OutputError
    from madopd_envs.eval.runner import ResumeError, check_output, evaluate
    from madopd_envs.eval.tables import leaderboard_table, summary_table

    command = "python -m madopd_envs.eval " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        from madopd_agents.registry import parse_agent_args
        from madopd_agents.zoo import ModelUnavailableError
    except ImportError as e:  # the agent layer is part of the madopd distribution; say so plainly
        print(f"error: the agent layer (madopd_agents) cannot be imported: {e}", file=sys.stderr)
        return 2
    from madopd_envs.registry import MissingEngineError, UnknownEnvError

    if args.num_envs < 1 or (args.episodes is not None and args.episodes < 1):
        print("error: --num-envs and --episodes must be >= 1", file=sys.stderr)
        return 2
    if args.seed is not None and args.seed < 0:  # env engines take unsigned seeds: refuse it before any episode
        print(f"error: --seed must be >= 0, got {args.seed}", file=sys.stderr)
        return 2
    if args.step_timeout <= 0 or args.agent_timeout < 0:
        print("error: --step-timeout must be > 0 and --agent-timeout >= 0 (0: no limit)", file=sys.stderr)
        return 2
    from madopd_envs.vector_ray import RayBackendError, import_ray

    summaries = []
    try:
        workers = load_leaderboard(args.leaderboard).workers if args.leaderboard else {}
        backend = args.backend or workers.get("backend") or "process"
        vec_options = {"backend": backend}
        if backend == "ray":
            vec_options["ray_address"] = args.ray_address or workers.get("ray_address")
            import_ray()  # a missing extra fails here, before any model loads
        elif args.ray_address:
            raise ConfigError("--ray-address needs --backend ray")
        if args.envs_per_worker < 1 or (backend == "ray" and args.envs_per_worker != 1):
            raise ConfigError("--envs-per-worker must be >= 1, and 1 with --backend ray (an actor hosts one env)")
        if args.envs_per_worker > 1:
            vec_options["envs_per_worker"] = args.envs_per_worker
        try:
            agent_args = parse_agent_args(args.agent_args)
        except ValueError:
            raise
        except Exception as e:  # yaml's errors for a value such as `stop=[a` span lines: one line here
            raise ConfigError(f"--agent-args {args.agent_args!r}: a value is not valid YAML: "
                              f"{' '.join(str(e).split())}") from e
        entries, board = entries_from_args(args)
        where = board or args.env.split("/")[-1]
        outputs = {}
        for name in args.agent:
            output = args.output or Path("runs/eval") / f"{name}-{where}"
            outputs[name] = output / name if len(args.agent) > 1 else output
            check_output(outputs[name])  # every agent's output, before the first model loads
        for name, output in outputs.items():
            from madopd_envs.profile import Profile

            profile = Profile() if args.profile else None
            summary = evaluate(agent_name=name, agent_args=agent_args, entries=entries, output=output,
                               leaderboard=board, num_envs=args.num_envs,
                               resume=args.resume or args.retry_errored or args.rerun_changed,
                               retry_errored=args.retry_errored, rerun_changed=args.rerun_changed,
                               progress=not args.no_progress,
                               step_timeout=args.step_timeout, agent_timeout=args.agent_timeout or None,
                               command=command, log=lambda m: print(m, file=sys.stderr), vec_options=vec_options,
                               profile=profile)
            summaries.append(summary)
            print(f"\n## {summary['agent']}" + (f" on {board}" if board else "") + f"  ({output})\n")
            print(summary_table(summary))
            if profile is not None:
                print(f"\n### where the time went ({summary['agent']})\n")
                print(profile.table())
    except KeyboardInterrupt:
        print("\ninterrupted: finished episodes are saved; rerun the same command with --resume", file=sys.stderr)
        return 130
    except (ModelUnavailableError, ConfigError, ResumeError, UnknownEnvError, MissingEngineError, OutputError,
            RayBackendError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    if len(summaries) > 1:
        print("\n## success rate ± stderr\n")
        print(leaderboard_table(summaries))
    errored = {s["agent"]: s["errored"] for s in summaries if s["errored"]}
    if errored:
        causes = {}
        for s in summaries:
            for kind, n in s.get("errors", {}).items():
                causes[kind] = causes.get(kind, 0) + n
        print(f"error: {sum(errored.values())} episode(s) errored after a retry "
              f"({', '.join(f'{n} {k}' for k, n in causes.items())}; per agent: "
              f"{', '.join(f'{a} {n}' for a, n in errored.items())}); they are left out of the rates. Rerun with "
              f"--resume --retry-errored to play them again", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
