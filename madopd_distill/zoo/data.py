"""What the zoo's models learn from: expert states of the recipe's env, and the texts of each protocol.

A *state* is one turn of an expert episode: the conversation the student would see there (rendered
by the project's prompt layer, so teachers learn in exactly the context OPD gives them), the expert's
action, the state's kind, and the actions that led there (to replay it). Each state also carries
*judge candidates*: student replies played from that state with the env's answer and a ground-truth
judgement defined by the env:

- ``skip``: the action is the expert's (the expert's solution stays on track);
- ``strong``: the action was invalid, or the episode ended without a win;
- ``weak``: a valid action off the expert's path that the episode survives.

The protocol texts (debate proposal, revision, scoring context, judgement) are built with the
methods' own prompt functions (``madopd_distill.methods.debate``/``sage``), so the zoo always trains
on what the methods ask.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from madopd_distill.methods import debate, sage
from madopd_distill.rollout import RolloutPrompt
from madopd_distill.zoo.recipe import Recipe, TaskRange

Conversation = list[dict[str, str]]
GARBAGE_ACTIONS = ("look at the ceiling", "xyzzy", "take the moon", "")


@dataclass
class JudgeCandidate:
    reply: str  # the student's reply, as the prompt format writes it
    feedback: str  # the env's answer to it
    label: str  # skip / weak / strong


@dataclass
class State:
    task_id: str
    turn: int
    context: Conversation
    expert_action: str
    kind: str
    candidates: list[JudgeCandidate] = field(default_factory=list)


def collect_states(recipe: Recipe, tasks: TaskRange, *, judge_candidates: int = 2, seed: int = 0) -> list[State]:
    """Play the expert on ``tasks`` in one in-process env; return every expert state (in order).

    ``judge_candidates`` non-expert replies per state (a valid off-path action where there is one, else
    a garbage action) are replayed from the state's prefix to get the env's answer.
    """
    import madopd_envs

    prompt = RolloutPrompt.for_env(recipe.env, **recipe.prompt)
    rng = random.Random(seed)
    env = madopd_envs.make(recipe.env, expert=True, **recipe.env_kwargs)
    states: list[State] = []
    try:
        ids = tasks.ids(env.unwrapped.tasks(tasks.split))
        for task_id in ids:
            obs, info = env.reset(seed=0, options={"task_id": task_id, "split": tasks.split})
            history = prompt.new_history()
            history.task = info.get("task", "")
            prefix: list[str] = []
            episode: list[tuple[State, list[str], list[str]]] = []
            for turn in range(recipe.max_env_steps):
                action = info.get("expert_action")
                if action is None:
                    break
                history.turns.append(_turn(obs))
                history.admissible_actions = info.get("admissible_actions")
                state = State(task_id, turn, prompt.conversation(history), action, recipe.kind_of(obs))
                others = [a for a in (info.get("admissible_actions") or []) if a != action]
                episode.append((state, list(prefix), others))
                obs, _, term, trunc, info = env.step(action)
                history.turns[-1].reply, history.turns[-1].action = prompt.format_action(action), action
                prefix.append(action)
                if term or trunc:
                    break
            # Candidates replay the episode's prefix, so they come after the expert has played it out.
            for state, state_prefix, others in episode:
                state.candidates = _candidates(env, prompt, task_id, tasks.split, state_prefix, state.expert_action,
                                               others, judge_candidates, rng)
                states.append(state)
    finally:
        env.close()
    return states


def _turn(observation: str) -> Any:
    from madopd_envs.prompts import Turn

    return Turn(observation=observation)


def _candidates(env: Any, prompt: RolloutPrompt, task_id: str, split: str, prefix: list[str],
                expert_action: str, others: list[str], n: int, rng: random.Random) -> list[JudgeCandidate]:
    if n == 0:
        return []
    actions = [expert_action]
    for _ in range(n):
        pool = [a for a in others if a not in actions]
        actions.append(rng.choice(pool) if pool and rng.random() < 0.7 else rng.choice(GARBAGE_ACTIONS))
    out = []
    for action in actions:
        env.reset(seed=0, options={"task_id": task_id, "split": split})
        for a in prefix:
            env.step(a)
        obs, _, term, trunc, info = env.step(action)
        if action == expert_action:
            label = "skip"
        elif not info.get("action_valid", True) or ((term or trunc) and not info.get("won")):
            label = "strong"
        else:
            label = "weak"
        out.append(JudgeCandidate(prompt.format_action(action), obs, label))
    return out


# -- protocol texts ----------------------------------------------------------------------------------
def action_reply(action: str) -> str:
    """An action written as the reply the prompt layer asks for (one place defines that format)."""
    return RolloutPrompt().format_action(action)


def proposal(action: str, confidence: int) -> str:
    """A debate reply: the action, then the confidence tag the debate parses."""
    return f"{action_reply(action)} <<CONFIDENCE={confidence}>>"


def transcript(replies: Sequence[Sequence[str]]) -> str:
    d = debate.Debate(replies=[list(r) for r in replies])
    return d.transcript()


def debate_samples(state: State, k: int, own: list[str], confs: list[int], rounds: int) -> list[tuple[Conversation, str]]:
    """Teacher ``k``'s debate texts at ``state`` given every teacher's action (``own[j]``) and stated
    confidence (``confs[j]``): the blind proposal, each revision, and the scoring context.

    Teachers keep their proposal when they revise (no teacher here knows better than its own measured
    reliability); the weights of the debate then come from their calibrated confidences.
    """
    replies = [proposal(a, c) for a, c in zip(own, confs)]
    out = [(debate.round1_prompt(state.context, "agentic", True, "last_user"), replies[k])]
    history = [replies]
    for _ in range(2, rounds + 1):
        out.append((debate.revision_prompt(state.context, transcript(history), k, "agentic", True, "last_user"),
                    replies[k]))
        history.append(replies)
    out.append((debate.scoring_context(state.context, transcript(history), k, "agentic", "last_user"),
                action_reply(own[k])))
    return out


def judge_samples(state: State, scheme: str) -> list[tuple[Conversation, str]]:
    """The judge's texts under SAGE's ``scheme`` (``two``: skip / intervene, ``three``: skip / weak /
    strong), one per candidate, answering with the method's tag."""
    out = []
    for c in state.candidates:
        label = c.label if c.label in sage.LEVELS[scheme] else ("skip" if c.label == "skip" else "intervene")
        out.append((sage.judge_prompt(state.context, c.reply, c.feedback, scheme), f"<<JUDGE={label}>>"))
    return out
