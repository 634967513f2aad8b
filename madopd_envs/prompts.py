"""The prompt/action layer: an episode's history -> a ReAct-style chat, and a model's reply -> an action.

One place turns environment text into model conversations and back, for every family, so agents stay
env-agnostic and envs stay model-agnostic (the failure to avoid: prompts welded to env managers).

- ``render_conversation(history, fmt)``: system instructions for the env family (with the task), then
  the episode as alternating user (observation) / assistant (reply) turns, the last ``fmt.history``
  turns only; the newest observation lists the admissible actions where the env has them.
- ``extract_action(reply, ...)``: the text inside the last ``<action>...</action>``; without tags the
  first line that is an admissible action, else the last non-empty line, is used and the turn counts
  as *invalid format* (reported by the eval). ``<think>...</think>`` blocks (Qwen3 thinking) are
  removed first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ACTION_TAG = re.compile(r"<action>(.*?)</action>", re.DOTALL | re.IGNORECASE)
OPEN_TAG = re.compile(r"<action>(.*)$", re.DOTALL | re.IGNORECASE)  # reply cut off before </action>
THINK_BLOCK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
CODE_FENCE = re.compile(r"```[a-zA-Z0-9_+-]*\n(.*?)(```|$)", re.DOTALL)
LINE_PREFIX = re.compile(r"^\s*(action|act|command)\s*[:>]\s*", re.IGNORECASE)

# The reply format goes at the END of the newest user message: small models follow the last
# instruction they read and tend to echo the observation when it is only in the system message.
ASK_ACTION = "Which action do you take next? Answer with one action inside <action></action> tags."
ASK_ANSWER = "Reply with your complete solution in a ```python code block."
REACT_HINT = "Before each action, think in one or two short sentences (Thought: ...), then give the action."

FAMILY_INSTRUCTIONS: dict[str, str] = {
    "alfworld": (
        "You are an agent in a household. You interact with the room by typing text commands "
        "(go to X, open X, take X from Y, move X to Y, heat X with Y, clean X with Y, cool X with Y, "
        "use X, examine X, inventory, look). Complete the task in as few steps as you can."
    ),
    "scienceworld": (
        "You are an agent in a simulated science world. You interact by typing text commands "
        "(look around, go to X, pick up X, move X to Y, open X, activate X, focus on X, wait, ...). "
        "Focus only on the object the task asks for: focusing on a wrong object ends the task."
    ),
    "textworldexpress": (
        "You are playing a text adventure. You interact by typing text commands. "
        "Complete the task in as few steps as you can."
    ),
    "webshop": (
        "You are shopping on a website for an item that matches an instruction. Actions are "
        "search[keywords] and click[button or product]. Buy the best matching item with the right options."
    ),
    "code": (
        "You are a programmer. Write a complete, correct Python solution to the problem in a ```python "
        "code block. You will see the test results and may revise."
    ),
    "text": "You are an agent in a text environment. You interact by typing text commands.",
}


@dataclass(frozen=True)
class PromptFormat:
    """How an episode is shown to a model.

    Attributes:
        history: number of past (observation, reply) turns kept besides the newest observation;
            ``None`` keeps all (long episodes grow the prompt without bound).
        show_actions: list the admissible actions (where the env has them) under the newest observation.
        max_actions: at most this many admissible actions are listed (ScienceWorld lists hundreds).
        max_observation_chars: longer observations keep their head and tail.
        react: ask for a short thought before each action (ReAct); off for very small models.
        layout: ``chat`` shows past turns as user/assistant messages; ``single`` folds them into one
            user message as an "Observation/Action" log (tiny models tend to echo observations
            when the episode is a long chat).
        instructions: per-family overrides of ``FAMILY_INSTRUCTIONS``.
        system_extra: appended to the system message (e.g. few-shot examples).
    """

    history: int | None = 8
    show_actions: bool = True
    max_actions: int = 50
    max_observation_chars: int = 4000
    react: bool = True
    layout: str = "chat"
    instructions: dict[str, str] = field(default_factory=dict)
    system_extra: str = ""

    def __post_init__(self) -> None:
        if self.history is not None and self.history < 0:
            raise ValueError(f"history must be >= 0 or None, got {self.history}")
        if self.max_actions < 0 or self.max_observation_chars < 100:
            raise ValueError("max_actions must be >= 0 and max_observation_chars >= 100")
        if self.layout not in ("chat", "single"):
            raise ValueError(f"layout must be 'chat' or 'single', got {self.layout!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PromptFormat:
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown prompt settings {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


@dataclass
class Turn:
    observation: str
    reply: str | None = None  # the model's full reply (thoughts + action); None for the newest turn
    action: str | None = None  # the action taken from the reply


@dataclass
class EpisodeHistory:
    """What the prompt needs from an episode: the family, the task, the turns, the current actions."""

    family: str
    open_ended: bool = False  # the env takes free-form answers (code), not commands
    task: str = ""
    turns: list[Turn] = field(default_factory=list)
    admissible_actions: list[str] | None = None

    def observe(self, observation: str, info: dict[str, Any]) -> None:
        self.turns.append(Turn(observation))
        self.task = info.get("task") or self.task
        self.admissible_actions = info.get("admissible_actions")

    def reply(self, text: str, action: str | None = None) -> None:
        self.turns[-1].reply, self.turns[-1].action = text, action


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters omitted ...]\n{text[-half:]}"


def system_message(family: str, task: str, fmt: PromptFormat) -> str:
    parts = [fmt.instructions.get(family) or FAMILY_INSTRUCTIONS.get(family) or FAMILY_INSTRUCTIONS["text"]]
    if task:
        parts.append(f"Your task: {task}")
    if fmt.react:
        parts.append(REACT_HINT)
    if fmt.system_extra:
        parts.append(fmt.system_extra)
    return "\n\n".join(parts)


def render_conversation(history: EpisodeHistory, fmt: PromptFormat) -> list[dict[str, str]]:
    """The chat for the next reply: system, then the windowed turns, ending with a user message."""
    if not history.turns or history.turns[-1].reply is not None:
        raise ValueError("render_conversation needs a newest observation without a reply")
    messages = [{"role": "system", "content": system_message(history.family, history.task, fmt)}]
    past = history.turns[:-1]
    if fmt.history is not None:
        omitted = max(0, len(past) - fmt.history)
        past = past[omitted:] if fmt.history else []
    else:
        omitted = 0
    log = []
    for i, turn in enumerate(past):
        obs = _clip(turn.observation, fmt.max_observation_chars)
        if i == 0 and omitted:
            obs = f"[{omitted} earlier steps omitted]\n{obs}"
        if fmt.layout == "single":
            log.append(f"Observation: {obs}\nAction: {turn.action if turn.action is not None else turn.reply}")
        else:
            messages.append({"role": "user", "content": obs})
            messages.append({"role": "assistant", "content": turn.reply or ""})
    newest = _clip(history.turns[-1].observation, fmt.max_observation_chars)
    if omitted and not past:
        newest = f"[{omitted} earlier steps omitted]\n{newest}"
    if fmt.layout == "single":
        newest = ("Previous steps:\n" + "\n\n".join(log) + "\n\nCurrent observation: " if log
                  else "Observation: ") + newest
    actions = history.admissible_actions
    if fmt.show_actions and actions:
        shown = actions[: fmt.max_actions]
        more = f"\n(and {len(actions) - len(shown)} more)" if len(actions) > len(shown) else ""
        newest += "\n\nAdmissible actions:\n" + "\n".join(f"- {a}" for a in shown) + more
    newest += "\n\n" + (ASK_ANSWER if history.open_ended else ASK_ACTION)
    messages.append({"role": "user", "content": newest})
    return messages


def extract_action(reply: str, *, open_ended: bool = False,
                   admissible: list[str] | None = None) -> tuple[str, bool]:
    """``(action, format_ok)`` from a model reply.

    ``format_ok`` is False when the reply had no ``<action>`` tag; the action is then the first line
    that is exactly an admissible action (list bullets stripped), else the last non-empty line (or
    nothing: an empty action, which the env answers in words). For open-ended envs (code) a ```python
    block is the expected format (inside tags or not); without one the whole reply is the answer
    (invalid format).
    """
    text = THINK_BLOCK.sub("", reply or "")
    tagged = ACTION_TAG.findall(text)
    if tagged:
        action, ok = tagged[-1], True
    else:
        opened = OPEN_TAG.search(text)  # a reply cut by max_new_tokens inside its action still counts
        if opened:
            action, ok = opened.group(1), True
        elif open_ended and CODE_FENCE.search(text):  # the format code envs ask for
            action, ok = CODE_FENCE.findall(text)[-1][0], True
        else:
            lines = [LINE_PREFIX.sub("", ln.strip().lstrip("-*").strip()) for ln in text.splitlines() if ln.strip()]
            known = {" ".join(a.split()).lower() for a in admissible or []}
            matching = [ln for ln in lines if " ".join(ln.split()).lower() in known]
            action, ok = (matching[0] if matching else lines[-1] if lines else ""), False
            if open_ended:
                action = text.strip()
    if open_ended:
        fenced = CODE_FENCE.search(action)
        if fenced:
            action = fenced.group(1)
        return action.strip("\n"), ok
    return " ".join(action.split()), ok
