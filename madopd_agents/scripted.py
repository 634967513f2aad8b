"""Scripted baselines: ``expert`` (the env's privileged expert) and ``random`` (a uniform admissible action).

They bracket every leaderboard: ``expert`` shows what is reachable (and catches broken envs: an expert
that fails is a bug report), ``random`` what needs no intelligence. Both return the action itself as
``text`` with ``finish_reason="scripted"`` (no prompt format to parse) and read the env through
``infos``; the eval makes envs with ``expert=True`` only for agents that ask for it (``needs_expert``).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from madopd_agents.base import ActionOutput, Conversation, SamplingParams

# Where the env takes free-form answers (code), random answers with a fixed weak one.
WEAK_ANSWERS: dict[str, str] = {"code": "pass", "webshop": "click[back to search]"}
NO_EXPERT = "look"  # an expert with nothing to say must still act; "look" is harmless everywhere


class ExpertAgent:
    """Plays ``info["expert_action"]`` (ALFWorld expert, ScienceWorld/TWX gold path, WebShop oracle,
    code reference solution). ``meta["no_expert"]`` marks turns where the env offered none."""

    needs_expert = True

    def __init__(self, name: str = "expert", **_: Any):
        self.name = name

    @classmethod
    def from_card(cls, card: Any) -> ExpertAgent:
        return cls(name=card.name, **card.args)

    def act(self, conversations: list[Conversation], sampling: SamplingParams,
            infos: list[dict[str, Any]] | None = None) -> list[ActionOutput]:
        if infos is None or len(infos) != len(conversations):
            raise ValueError("ExpertAgent needs one env info per conversation (infos=...)")
        outs = []
        for info in infos:
            action = info.get("expert_action")
            for _ in range(sampling.n):
                outs.append(ActionOutput(text=action or NO_EXPERT, finish_reason="scripted",
                                         meta={"no_expert": not action}))
        return outs

    def close(self) -> None:
        pass


class RandomAgent:
    """A uniform choice among ``info["admissible_actions"]``; a fixed weak answer where there are none.

    The choice is a pure function of (seed, task_id, step, sample index), not of batch order, so a
    resumed eval replays exactly the same episodes.
    """

    needs_expert = False

    def __init__(self, name: str = "random", seed: int = 0, **_: Any):
        self.name, self.seed = name, int(seed)

    @classmethod
    def from_card(cls, card: Any) -> RandomAgent:
        return cls(name=card.name, **card.args)

    def act(self, conversations: list[Conversation], sampling: SamplingParams,
            infos: list[dict[str, Any]] | None = None) -> list[ActionOutput]:
        if infos is None or len(infos) != len(conversations):
            raise ValueError("RandomAgent needs one env info per conversation (infos=...)")
        outs = []
        for info in infos:
            actions = info.get("admissible_actions")
            for k in range(sampling.n):
                key = f"{self.seed}|{sampling.seed}|{info.get('task_id')}|{info.get('step')}|{k}"
                rng = random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
                if actions:
                    text = rng.choice(sorted(actions))
                else:
                    text = WEAK_ANSWERS.get(str(info.get("family", "")), WEAK_ANSWERS["code"])
                outs.append(ActionOutput(text=text, finish_reason="scripted"))
        return outs

    def close(self) -> None:
        pass
