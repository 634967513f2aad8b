"""MAD-OPD's teacher debate, as pure functions: prompts, transcript, confidence tags, weights.

Paper: MAD-OPD (arXiv 2605.01347), code chiefovoavicii/MAD-OPD@6c7a66a (read for semantics, not
copied). Protocol (``mad_opd/trainers/vllm_teacher_manager.py:786``,
``batch_blind_mad_debate_and_force_decode``; tag instruction at :844-849, uniform fallback at
:1006-1033, tag parsing at :1101-1104):

- round 1 is *blind*: each teacher answers the student's on-policy state alone;
- rounds 2..R: each teacher sees the transcript so far and revises ("you don't have to agree");
- with dynamic weights, every last-round reply ends with ``<<CONFIDENCE=N>>`` (N in 0..100) and
  ``w_k = softmax(c_k / 100 / tau)``; any missing tag -> uniform weights;
- each teacher then scores the student's reply conditioned on ``state + transcript + "You are
  Expert k"``. The transcript is privileged: it is added to a *copy* of the state that only
  teachers see; the student's context is never touched (the "p-q gap" of the paper).

A state is a chat conversation (the student's context at one turn). The paper works on raw prompt
text; the natural reading for chat states -- and the default here -- appends the debate
instructions to the last user message (``placement="last_user"``); ``placement="new_user"``
adds them as a separate user message instead (ours). The prompt wording is ours, written to the
protocol above; the "agentic" prompt family (propose the next action) is ours too.
"""

from __future__ import annotations

import copy
import math
import re
import string
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

Message = dict[str, str]
Conversation = list[Message]
# One teacher's batched text generation: conversations in, one reply per conversation out.
GenerateFn = Callable[[list[Conversation]], list[str]]

Mode = Literal["agentic", "code", "generic"]
Placement = Literal["last_user", "new_user"]
MODES: tuple[str, ...] = ("agentic", "code", "generic")
PLACEMENTS: tuple[str, ...] = ("last_user", "new_user")

CONFIDENCE_TAG = re.compile(r"<<CONFIDENCE=(\d+)>>")
CONFIDENCE_INSTRUCTION = (
    "IMPORTANT: At the very end of your response, output your confidence using EXACTLY this format: "
    "<<CONFIDENCE=N>> where N is an integer from 0 to 100. Do not write anything after this tag."
)
DEBATE_START, DEBATE_END = "[Debate Start]", "[Debate End]"

# What each teacher is asked to do, per prompt family (the paper's toolace/code/generic modes;
# "agentic" is the multi-turn env family: propose the next action).
_TASK = {
    "agentic": ("You are an expert agent. Decide the best next response to the conversation above "
                "(your reasoning, then the action).",
                "the best next action"),
    "code": ("You are an expert programmer. Solve the task above; focus on correctness, edge cases "
             "and efficiency.",
             "the best solution"),
    "generic": ("You are a knowledgeable expert. Solve the problem above step by step.",
                "the best answer"),
}


def expert_name(k: int) -> str:
    """``Expert A``, ``Expert B``, ... ``Expert Z``, then ``Expert 27``..."""
    return f"Expert {string.ascii_uppercase[k]}" if k < 26 else f"Expert {k + 1}"


def parse_confidence(text: str) -> float | None:
    """The last ``<<CONFIDENCE=N>>`` in ``text`` as a float, or ``None`` (no tag, or N > 100)."""
    tags = CONFIDENCE_TAG.findall(text or "")
    if not tags:
        return None
    value = int(tags[-1])
    return float(value) if value <= 100 else None


def confidence_weights(confidences: Sequence[float | None], tau: float = 1.0) -> list[float]:
    """Paper Eq. 7: ``softmax(c_k / 100 / tau)``; uniform when any teacher gave no confidence."""
    if not confidences:
        raise ValueError("confidence_weights needs at least one teacher")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    k = len(confidences)
    if any(c is None for c in confidences):
        return [1.0 / k] * k
    logits = [float(c) / 100.0 / tau for c in confidences]  # type: ignore[arg-type]
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    z = sum(exps)
    return [e / z for e in exps]


def with_instruction(state: Conversation, text: str, placement: Placement = "last_user") -> Conversation:
    """A deep copy of ``state`` carrying ``text`` for the assistant to answer; ``state`` is untouched."""
    conv = copy.deepcopy(list(state))
    if placement == "last_user" and conv and conv[-1].get("role") == "user":
        conv[-1]["content"] = f"{conv[-1]['content']}\n\n{text}"
    else:
        conv.append({"role": "user", "content": text})
    return conv


@dataclass
class Debate:
    """One state's debate.

    Attributes:
        replies: ``replies[r][k]`` is teacher ``k``'s reply in round ``r + 1``.
        confidences: each teacher's last-round confidence (``None`` where no valid tag).
        weights: the per-teacher loss weights (Eq. 7, or uniform).
    """

    replies: list[list[str]] = field(default_factory=list)
    confidences: list[float | None] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def transcript(self, rounds: int | None = None) -> str:
        """The transcript H of the first ``rounds`` rounds (all by default)."""
        lines = [DEBATE_START]
        for r, round_replies in enumerate(self.replies[:rounds]):
            lines += [f"[{expert_name(k)} Round {r + 1}]: {reply}" for k, reply in enumerate(round_replies)]
        return "\n".join(lines + [DEBATE_END])

    @property
    def tags_found(self) -> int:
        return sum(c is not None for c in self.confidences)


def round1_prompt(state: Conversation, mode: Mode, dynamic_weights: bool, placement: Placement) -> Conversation:
    """Blind round: the state alone, no other teacher, no student reply."""
    text = _TASK[mode][0]
    if dynamic_weights:
        text += "\n\n" + CONFIDENCE_INSTRUCTION
    return with_instruction(state, text, placement)


def revision_prompt(state: Conversation, transcript: str, k: int, mode: Mode, dynamic_weights: bool,
                    placement: Placement) -> Conversation:
    """Rounds 2..R: the state plus the transcript so far; teacher ``k`` revises its answer."""
    text = (f"The following is the debate history between experts on this step:\n\n{transcript}\n\n"
            f"You are {expert_name(k)}. You don't have to agree with the other experts. Having seen the "
            f"debate, reconsider and give your improved response: {_TASK[mode][1]}.")
    if dynamic_weights:
        text += "\n\n" + CONFIDENCE_INSTRUCTION
    return with_instruction(state, text, placement)


def scoring_context(state: Conversation, transcript: str, k: int, mode: Mode = "agentic",
                    placement: Placement = "last_user") -> Conversation:
    """What teacher ``k`` conditions on when it scores the student's reply (force decoding).

    A copy of the state plus the transcript and the teacher's identity. Only teachers see it.
    """
    text = (f"You are {expert_name(k)}. The following is the debate between you and other experts:\n\n"
            f"{transcript}\n\nNow, based on the debate, give {_TASK[mode][1]}.")
    return with_instruction(state, text, placement)


def run_debate(states: Sequence[Conversation], teachers: Sequence[GenerateFn], *, rounds: int = 2,
               tau: float = 1.0, dynamic_weights: bool = True, mode: Mode = "agentic",
               placement: Placement = "last_user") -> list[Debate]:
    """Run the debate over a batch of states with ``K = len(teachers)`` teachers and ``rounds`` rounds.

    Each teacher is called once per round with the batch of its prompts. The states are never
    modified (every prompt is built on a copy).
    """
    if len(teachers) < 2:
        raise ValueError(f"a debate needs >= 2 teachers, got {len(teachers)}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    debates = [Debate() for _ in states]
    if not states:
        return debates
    prompts = [round1_prompt(s, mode, dynamic_weights, placement) for s in states]
    per_teacher = [_generate(t, prompts, k) for k, t in enumerate(teachers)]
    for i, d in enumerate(debates):
        d.replies.append([per_teacher[k][i] for k in range(len(teachers))])
    for _ in range(2, rounds + 1):
        transcripts = [d.transcript() for d in debates]
        per_teacher = [
            _generate(t, [revision_prompt(s, h, k, mode, dynamic_weights, placement)
                          for s, h in zip(states, transcripts)], k)
            for k, t in enumerate(teachers)
        ]
        for i, d in enumerate(debates):
            d.replies.append([per_teacher[k][i] for k in range(len(teachers))])
    for d in debates:
        d.confidences = [parse_confidence(r) for r in d.replies[-1]] if dynamic_weights else [None] * len(teachers)
        d.weights = confidence_weights(d.confidences, tau)
    return debates


def _generate(teacher: GenerateFn, prompts: list[Conversation], k: int) -> list[str]:
    out = teacher(prompts)
    if len(out) != len(prompts):
        raise RuntimeError(f"teacher {k} returned {len(out)} replies for {len(prompts)} prompts")
    return [str(o) for o in out]
