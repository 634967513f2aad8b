"""Can a zoo v2 recipe work on an env the papers use? What the expert's transcripts allow, before any training.

A zoo v2 teacher learns the env's expert from transcripts (``madopd_distill.zoo.data.collect_states``), so
its held-out success is bounded by what the expert's actions can be told from the prompt it sees. For
ALFWorld (the bundled generated games) and WebShop (the bundled catalogue) this measures, on the expert's
own episodes:

- episode length, prompt size and env speed (what a build and a study would cost);
- *what the prompt shows*: for a window of ``h`` past turns, the share of expert actions whose every
  argument (``shelf 3``, a product id, an option) is written somewhere in the prompt, i.e. could be
  copied from it (the rest needs a turn the window dropped; every prompt of both corpora is unique,
  so an exact-prompt ceiling says nothing);
- WebShop only: the success of three policies that read only the page and the instruction, as a
  teacher must (the env's default expert knows the target product): upstream's rule baseline (first
  result, buy), a title match (the result sharing most words with the instruction, then every option the
  instruction names, then buy) and the env's shopper (``expert_policy="shopper"``: the engine's order,
  price and option checks; ``madopd_envs/webshop/oracle.py``).

    .venv/bin/python leaderboards/pilots/paper_envs.py [--alfworld 60] [--webshop 200]   (~7 min on shared cores;
    --alfworld 0: WebShop only, seconds)
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import time
from typing import Any

import madopd_envs
from madopd_distill.rollout import RolloutPrompt
from madopd_envs.prompts import Turn
from madopd_envs.webshop.engine import BACK_TO_SEARCH, BUY_NOW, NEXT_PAGE, PREV_PAGE
from madopd_envs.webshop.oracle import instruction_query, rule_action, shopper_action

WINDOWS = (0, 1, 2, None)  # past turns in the prompt; None = the whole episode
MAX_TURNS = 50


def expert_corpus(env_id: str, split: str, n: int, **env_kwargs: Any) -> dict[str, Any]:
    """Play the expert on the first ``n`` tasks of ``split``; the prompt of every state per window."""
    env = madopd_envs.make(env_id, expert=True, **env_kwargs)
    prompts = {h: RolloutPrompt.for_env(env_id, show_actions=False, history=h) for h in WINDOWS}
    rendered: dict[Any, list[tuple[str, str]]] = {h: [] for h in WINDOWS}
    lengths, won, steps, t0 = [], 0, 0, time.time()
    chars: dict[Any, list[int]] = {h: [] for h in WINDOWS}
    try:
        for task_id in env.unwrapped.tasks(split)[:n]:
            obs, info = env.reset(seed=0, options={"task_id": task_id, "split": split})
            histories = {h: p.new_history() for h, p in prompts.items()}
            for turn in range(MAX_TURNS):
                action = info.get("expert_action")
                if action is None:
                    break
                for h, history in histories.items():
                    history.task = info.get("task", "")
                    history.turns.append(Turn(observation=obs))
                    text = "\n".join(m["content"] for m in prompts[h].conversation(history))
                    rendered[h].append((text, action))
                    chars[h].append(len(text))
                obs, _, term, trunc, info = env.step(action)
                steps += 1
                for h, history in histories.items():
                    history.turns[-1].reply, history.turns[-1].action = prompts[h].format_action(action), action
                if term or trunc:
                    break
            lengths.append(turn + 1)
            won += bool(info.get("won"))
    finally:
        env.close()
    return {"episodes": len(lengths), "expert_won": won, "turns_median": statistics.median(lengths),
            "turns_max": max(lengths),
            "prompt_chars_median_max": {("all" if h is None else h): (statistics.median(c), max(c)) for h, c in chars.items()},
            "steps_per_s": steps / (time.time() - t0),
            "arguments_in_prompt": {("all" if h is None else h): round(arguments_in_prompt(rendered[h]), 3)
                                    for h in WINDOWS}}


def action_arguments(action: str) -> list[str]:
    """What an action names: ALFWorld's numbered objects and receptacles (``shelf 3``), else the text
    inside WebShop's brackets."""
    numbered = re.findall(r"[a-z]+ \d+", action)
    if numbered:
        return numbered
    inside = re.fullmatch(r"(?:click|search)\[(.*)\]", action)
    return [inside.group(1)] if inside else []


def arguments_in_prompt(states: list[tuple[str, str]]) -> float:
    return sum(all(arg in text.lower() for arg in action_arguments(action)) for text, action in states) / len(states)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


PAGE_BUTTONS = (*(b.lower() for b in (BUY_NOW, BACK_TO_SEARCH, PREV_PAGE, NEXT_PAGE)), "description", "features", "reviews")


def title_match_action(obs: str, admissible: list[str], instruction: str, clicked: list[str]) -> str:
    """Search the instruction; click the result whose title shares most words with it; click each option
    the instruction names (once); buy."""
    if any(a.startswith("search[") for a in admissible):
        return f"search[{instruction_query(instruction)}]"
    if "click[buy now]" in admissible:
        options = [a[6:-1] for a in admissible if a.startswith("click[") and a[6:-1] not in PAGE_BUTTONS]
        wanted = [o for o in options if o not in clicked and re.search(rf"\b{re.escape(o)}\b", instruction.lower())]
        return f"click[{wanted[0]}]" if wanted else "click[buy now]"
    parts = [p.strip() for p in obs.split("[SEP]")]
    query = _words(instruction_query(instruction))
    results = [(len(_words(parts[i + 1]) & query), -i, p.lower()) for i, p in enumerate(parts[:-1])
               if re.fullmatch(r"B0[A-Z0-9]{8}", p)]
    return f"click[{max(results)[2]}]" if results else "click[back to search]"


def webshop_policies(n: int) -> dict[str, float]:
    """Success on the first ``n`` train goals of upstream's rule, the title match and the env's shopper
    (``expert_policy="shopper"``), none of which knows the target."""
    env = madopd_envs.make("madopd/WebShop-v0", expert=True, expert_policy="shopper")
    wins = collections.Counter()
    policies = ("rule", "title_match", "shopper")
    try:
        task_ids = env.unwrapped.tasks("train")[:n]
        for task_id in task_ids:
            for name in policies:
                obs, info = env.reset(seed=0, options={"task_id": task_id, "split": "train"})
                clicked: list[str] = []
                for _ in range(15):
                    admissible = info.get("admissible_actions") or []
                    if name == "rule":
                        action = rule_action(admissible, info["task"])
                    elif name == "title_match":
                        action = title_match_action(obs, admissible, info["task"], clicked)
                        clicked.append(action[6:-1])
                    else:
                        action = info["expert_action"]
                    obs, _, term, trunc, info = env.step(action)
                    if term or trunc:
                        break
                wins[name] += bool(info.get("won"))
    finally:
        env.close()
    return {name: wins[name] / len(task_ids) for name in policies}


def shopper_memory(n: int) -> dict[str, float]:
    """Per window of ``h`` past turns: the share of the shopper's states whose action would change if it
    remembered only the products opened within those turns (it skips every product opened before)."""
    env = madopd_envs.make("madopd/WebShop-v0", expert=True, expert_policy="shopper")
    engine, changed, states = env.unwrapped.engine, collections.Counter(), 0
    try:
        for task_id in env.unwrapped.tasks("train")[:n]:
            obs, info = env.reset(seed=0, options={"task_id": task_id, "split": "train"})
            actions: list[str] = []
            while info.get("expert_action"):
                states += 1
                visited = engine.s.visited
                for h in WINDOWS:
                    seen = actions if h is None else actions[len(actions) - h:] if h else []
                    engine.s.visited = [a for a in visited if f"click[{a.lower()}]" in seen]
                    changed[h] += shopper_action(engine) != info["expert_action"]
                engine.s.visited = visited
                actions.append(info["expert_action"])
                obs, _, term, trunc, info = env.step(info["expert_action"])
                if term or trunc:
                    break
    finally:
        env.close()
    return {("all" if h is None else h): round(changed[h] / states, 3) for h in WINDOWS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alfworld", type=int, default=60, help="generated valid_seen games (140 ship; 0: skip ALFWorld)")
    p.add_argument("--webshop", type=int, default=200, help="train tasks of the bundled catalogue")
    args = p.parse_args()
    if args.alfworld:
        print("ALFWorld (generated valid_seen):", expert_corpus("madopd/ALFWorld-v0", "valid_seen", args.alfworld))
    print("WebShop (bundled train):", expert_corpus("madopd/WebShop-v0", "train", args.webshop))
    print("WebShop success without the target's identity:", webshop_policies(args.webshop))
    print("WebShop shopper (bundled train):", expert_corpus("madopd/WebShop-v0", "train", args.webshop,
                                                             expert_policy="shopper"))
    print("WebShop shopper, share of states needing an older turn:", shopper_memory(args.webshop))


if __name__ == "__main__":
    main()
