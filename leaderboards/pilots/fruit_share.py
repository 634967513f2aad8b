"""How many PeckingOrder episodes name each fruit: the share a team member loses when it mistakes one fruit
for another (why leaderboards/conf/zoo/peckingorder.yaml sets min_teacher_success 0.5).

    .venv/bin/python leaderboards/pilots/fruit_share.py [--tasks 200]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses

from madopd_distill.zoo import load_recipe
from madopd_distill.zoo.data import collect_states


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=200, help="the first N train tasks of the recipe")
    args = p.parse_args()
    recipe = load_recipe("peckingorder")
    states = collect_states(recipe, dataclasses.replace(recipe.train_tasks, count=args.tasks), judge_candidates=0)
    taken: dict[str, set[str]] = collections.defaultdict(set)
    for s in states:
        if s.expert_action.startswith("take "):
            taken[s.task_id].add(s.expert_action.split()[-1])
    counts = collections.Counter(fruit for fruits in taken.values() for fruit in fruits)
    for fruit, n in sorted(counts.items(), key=lambda x: x[1]):
        print(f"{fruit:12} {n:4d} / {len(taken)} episodes ({n / len(taken):.2f})")


if __name__ == "__main__":
    main()
