"""Which of the expert's actions a pilot model gets right, by kind of WebShop action.

Reads a ``zoo_v2.py`` work folder (its ``states.pkl`` and a saved model) and prints greedy accuracy on the
first ``--states`` held-out states, grouped by the expert action: ``search[...]``, a product id, ``buy now``,
page navigation, an option; then a few (expert -> model) pairs.

    OMP_NUM_THREADS=1 .venv/bin/python leaderboards/pilots/by_action.py --work /work/ws_pilot --model teacher
"""

from __future__ import annotations

import argparse
import collections
import pickle
import re

import torch

from madopd_agents.hf import HFAgent
from madopd_distill.trainer import load_causal_lm
from madopd_distill.zoo.build import generate, parse_action


def action_kind(action: str) -> str:
    if action.startswith("search["):
        return "search"
    if re.fullmatch(r"click\[b0[a-z0-9]{8}\]", action):
        return "product id"
    if action == "click[buy now]":
        return "buy now"
    if action in ("click[< prev]", "click[next >]", "click[back to search]"):
        return "navigation"
    return "option"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--model", default="teacher")
    ap.add_argument("--states", type=int, default=200)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    a = ap.parse_args()
    torch.set_num_threads(1)
    with open(f"{a.work}/states.pkl", "rb") as f:
        held = pickle.load(f)["held"][: a.states]
    model, tok = load_causal_lm(f"{a.work}/{a.model}")
    agent = HFAgent(model, tok, name=a.model, batch_size=32)
    actions = [parse_action(r) for r in generate(agent, [s.context for s in held], a.max_new_tokens)]
    right: dict[str, list[bool]] = collections.defaultdict(list)
    for action, s in zip(actions, held):
        right[action_kind(s.expert_action)].append(action == s.expert_action)
    for kind, hits in right.items():
        print(f"{kind}: {sum(hits)}/{len(hits)}")
    for action, s in list(zip(actions, held))[:8]:
        print(f"{s.expert_action!r} -> {action!r}")


if __name__ == "__main__":
    main()
