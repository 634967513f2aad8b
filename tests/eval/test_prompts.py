"""The prompt/action layer: windowed ReAct chats and action extraction (tags, fallbacks, code)."""

from __future__ import annotations

import pytest

from madopd_envs.prompts import (ASK_ACTION, ASK_ANSWER, EpisodeHistory, PromptFormat, extract_action,
                                 render_conversation)


def _history(n_turns: int, actions: list[str] | None = None) -> EpisodeHistory:
    h = EpisodeHistory(family="alfworld")
    for k in range(n_turns):
        h.observe(f"obs {k}", {"task": "put a clean mug in the coffeemachine", "admissible_actions": actions})
        if k < n_turns - 1:
            h.reply(f"Thought: step {k}\n<action>go to shelf {k}</action>")
    return h


def test_conversation_is_system_then_windowed_turns_then_the_ask():
    h = _history(6, actions=[f"go to shelf {i}" for i in range(40)])
    msgs = render_conversation(h, PromptFormat(history=2, max_actions=5))
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "household" in msgs[0]["content"] and "Your task: put a clean mug" in msgs[0]["content"]
    assert msgs[1]["content"].startswith("[3 earlier steps omitted]\nobs 3")
    last = msgs[-1]["content"]
    assert last.startswith("obs 5") and "- go to shelf 4" in last and "- go to shelf 5" not in last
    assert "(and 35 more)" in last and last.endswith(ASK_ACTION)
    full = render_conversation(h, PromptFormat(history=None, show_actions=False, react=False))
    assert len(full) == 1 + 2 * 5 + 1 and "Admissible" not in full[-1]["content"] and "Thought" not in full[0]["content"]
    only_now = render_conversation(h, PromptFormat(history=0))
    assert len(only_now) == 2 and only_now[1]["content"].startswith("[5 earlier steps omitted]\nobs 5")


def test_long_observations_are_clipped_in_the_middle():
    h = EpisodeHistory(family="webshop")
    h.observe("A" * 3000 + "B" * 3000, {"task": "buy", "admissible_actions": None})
    text = render_conversation(h, PromptFormat(max_observation_chars=1000))[-1]["content"]
    assert text.startswith("A" * 500) and "[... 5000 characters omitted ...]" in text and "B" * 500 in text


@pytest.mark.parametrize("reply, action, ok", [
    ("Thought: the mug is dirty.\n<action>clean mug 1 with sinkbasin 1</action>", "clean mug 1 with sinkbasin 1", True),
    ("<action>look</action> then <ACTION> go to  desk 1 </ACTION>", "go to desk 1", True),
    ("<think>hmm <action>no</action></think>Sure.\n<action>inventory</action>", "inventory", True),
    ("I will open it.\n<action>open fridge 1", "open fridge 1", True),  # cut by the token limit
    ("I think\n- go to desk 1\n- examine desk 1", "go to desk 1", False),  # first admissible line
    ("Let me look around.\nAction: look", "look", False),
    ("", "", False),
])
def test_action_extraction(reply, action, ok):
    assert extract_action(reply, admissible=["go to desk 1", "examine desk 1", "look"]) == (action, ok)


def test_code_answers_unwrap_fences():
    code = "def f(x):\n    return x + 1"
    assert extract_action(f"Here:\n```python\n{code}\n```", open_ended=True) == (code, True)
    assert extract_action(f"<action>```python\n{code}\n```</action>", open_ended=True) == (code, True)
    assert extract_action(code, open_ended=True) == (code, False)
    h = EpisodeHistory(family="code", open_ended=True)
    h.observe("Write f.", {"task": "f", "admissible_actions": None})
    assert render_conversation(h, PromptFormat())[-1]["content"].endswith(ASK_ANSWER)


def test_prompt_settings_are_checked():
    with pytest.raises(ValueError, match="unknown prompt settings"):
        PromptFormat.from_dict({"histroy": 3})
    with pytest.raises(ValueError):
        PromptFormat(history=-1)


def test_single_layout_folds_the_episode_into_one_message():
    h = EpisodeHistory(family="textworldexpress")
    h.observe("You are in the kitchen.", {"task": "find the coin", "admissible_actions": ["move east", "look around"]})
    h.reply("Thought: explore.\n<action>move east</action>", "move east")
    h.observe("You are in the pantry.", {"task": "find the coin", "admissible_actions": ["move west"]})
    msgs = render_conversation(h, PromptFormat(layout="single"))
    assert [m["role"] for m in msgs] == ["system", "user"]
    text = msgs[1]["content"]
    assert text.startswith("Previous steps:\nObservation: You are in the kitchen.\nAction: move east\n\n"
                           "Current observation: You are in the pantry.")
    assert "Thought" not in text and "- move west" in text
    with pytest.raises(ValueError, match="layout"):
        PromptFormat(layout="grid")
