"""Expert and random reference rows for an env family, per task group.

    python -m madopd_envs.baselines scienceworld --per-group 3          # 30 tasks x 3 test variations
    python -m madopd_envs.baselines textworldexpress --per-group 20     # 8 games x 20 test seeds

The *expert* follows ``info["expert_action"]`` (envs made with ``expert=True``: the engine's gold
path); the *random* agent picks uniformly among ``info["admissible_actions"]`` with a seeded RNG.
Both play the same sampled tasks of a split under the registered episode limit. A task id
``"<group>/<instance>"`` (ScienceWorld's ``"boil/17"``) is grouped by its prefix; any other id by
its env (one TWX game per env id). Prints a markdown table; ``--json`` also writes every episode.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from madopd_envs.registry import make, registered


@dataclass
class Episode:
    env_id: str
    group: str
    task_id: str
    policy: str
    won: bool
    score: float
    raw_score: float
    steps: int
    truncated: bool
    seconds: float


def group_of(env_id: str, task_id: str) -> str:
    return task_id.split("/")[0] if "/" in task_id else env_id.removeprefix("madopd/")


def sample_tasks(env_id: str, task_ids: Sequence[str], per_group: int, seed: int) -> dict[str, list[str]]:
    """``per_group`` task ids of each group, drawn with ``seed`` (all of a smaller group)."""
    groups: dict[str, list[str]] = {}
    for t in task_ids:
        groups.setdefault(group_of(env_id, t), []).append(t)
    rng = random.Random(seed)
    return {g: sorted(rng.sample(ids, min(per_group, len(ids))), key=ids.index) for g, ids in groups.items()}


def play(env: Any, env_id: str, task_id: str, split: str, policy: str, seed: int) -> Episode:
    """One episode of ``policy`` ("expert" or "random") on ``task_id``."""
    rng = random.Random(seed)
    start = time.perf_counter()
    _, info = env.reset(seed=seed, options={"task_id": task_id, "split": split})
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        if policy == "expert":
            action = info.get("expert_action")
            if action is None:  # gold path exhausted (or left) without the engine saying done
                break
        else:
            choices = info["admissible_actions"]
            if not choices:
                raise RuntimeError(f"{env_id} gives no admissible actions; the random agent needs them")
            action = rng.choice(choices)
        _, _, terminated, truncated, info = env.step(action)
        steps += 1
    return Episode(env_id, group_of(env_id, task_id), task_id, policy, info["won"], info["score"],
                   info["raw_score"], steps, truncated, time.perf_counter() - start)


def run(env_ids: Sequence[str], *, split: str, per_group: int, seed: int, policies: Sequence[str],
        max_episode_steps: int | None = None, groups: Sequence[str] | None = None,
        env_kwargs: dict[str, Any] | None = None, log: Any = sys.stderr) -> list[Episode]:
    episodes = []
    for env_id in env_ids:
        for policy in policies:
            kwargs: dict[str, Any] = {**(env_kwargs or {}), "split": split, "expert": policy == "expert"}
            if max_episode_steps is not None:
                kwargs["max_episode_steps"] = max_episode_steps
            env = make(env_id, **kwargs)
            try:
                for group, ids in sample_tasks(env_id, env.tasks(split), per_group, seed).items():
                    if groups and group not in groups:
                        continue
                    for i, task_id in enumerate(ids):
                        ep = play(env, env_id, task_id, split, policy, seed + i)
                        episodes.append(ep)
                        print(f"{policy:6} {env_id} {task_id:50} won={ep.won!s:5} raw={ep.raw_score:6.1f} steps={ep.steps:3} "
                              f"{ep.seconds:5.1f}s", file=log, flush=True)
            finally:
                env.close()
    return episodes


def table(episodes: Sequence[Episode]) -> str:
    """Markdown: one row per group, expert and random side by side, and an overall row."""
    def stats(eps: list[Episode]) -> str:
        if not eps:
            return "| - | - | - | - "
        n = len(eps)
        return (f"| {100 * sum(e.won for e in eps) / n:.0f} | {sum(e.score for e in eps) / n:.2f} "
                f"| {sum(e.raw_score for e in eps) / n:.1f} | {sum(e.steps for e in eps) / n:.0f} ")

    groups = list(dict.fromkeys(e.group for e in episodes))
    lines = ["| group | n | expert won % | expert score | expert raw | expert steps "
             "| random won % | random score | random raw | random steps |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for g in groups + ["**all**"]:
        eps = [e for e in episodes if g in ("**all**", e.group)]
        exp = [e for e in eps if e.policy == "expert"]
        rnd = [e for e in eps if e.policy == "random"]
        lines.append(f"| {g} | {max(len(exp), len(rnd))} {stats(exp)}{stats(rnd)}|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    families = sorted({s.card.family for s in registered()})
    p = argparse.ArgumentParser(prog="python -m madopd_envs.baselines", description=__doc__.split("\n\n")[0])
    p.add_argument("family", choices=families, help="env family (all its registered ids run)")
    p.add_argument("--split", default="test")
    p.add_argument("--per-group", type=int, default=3, help="tasks sampled per group")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policies", default="expert,random")
    p.add_argument("--max-episode-steps", type=int, default=None, help="override the registered limit")
    p.add_argument("--groups", help="comma-separated groups to run (default: all)")
    p.add_argument("--env-kwargs", default="{}", help='JSON keyword arguments for make, e.g. \'{"admissible": false}\'')
    p.add_argument("--json", help="write every episode here")
    args = p.parse_args(argv)
    env_ids = [s.id for s in registered() if s.card.family == args.family]
    start = time.perf_counter()
    episodes = run(env_ids, split=args.split, per_group=args.per_group, seed=args.seed,
                   policies=args.policies.split(","), max_episode_steps=args.max_episode_steps,
                   groups=args.groups.split(",") if args.groups else None, env_kwargs=json.loads(args.env_kwargs))
    print(table(episodes))
    print(f"\n{len(episodes)} episodes of {', '.join(env_ids)} ({args.split}, {args.per_group} per group, "
          f"seed {args.seed}) in {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(e) for e in episodes], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
