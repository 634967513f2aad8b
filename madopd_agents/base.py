"""The agent contract: batched conversations in, actions with their tokens out.

On-policy distillation needs what the student *sampled*, token by token, with its own logprobs;
evaluation needs only the text. One ``ActionOutput`` serves both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}
Conversation = list[Message]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one turn.

    Attributes:
        temperature: 0 means greedy.
        top_p: nucleus mass.
        max_new_tokens: cap on the turn's length in tokens.
        n: completions per conversation (group sampling returns ``n`` outputs per input, in order).
        seed: makes sampling reproducible where the backend supports it.
        stop: strings that end the turn.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError("max_new_tokens and n must be >= 1")


@dataclass
class ActionOutput:
    """One sampled turn.

    Attributes:
        text: the decoded completion (the full turn, thoughts included).
        token_ids: the sampled completion tokens (empty for scripted agents).
        logprobs: the sampler's log-probability of each sampled token (same length as token_ids).
        prompt_token_ids: the rendered prompt the completion continues, where the backend has it.
        finish_reason: ``"stop"``, ``"length"`` or ``"scripted"``.
        meta: backend extras (latency, usage...).
    """

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    prompt_token_ids: list[int] | None = None
    finish_reason: str = "stop"
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Agent(Protocol):
    """Anything that turns conversations into actions.

    ``act`` returns ``len(conversations) * sampling.n`` outputs: for each conversation, its ``n``
    samples in order. Scripted agents read the env's ``info`` through ``infos`` (one per
    conversation); model agents ignore it.
    """

    name: str

    def act(
        self,
        conversations: list[Conversation],
        sampling: SamplingParams,
        infos: list[dict[str, Any]] | None = None,
    ) -> list[ActionOutput]: ...

    def close(self) -> None: ...
