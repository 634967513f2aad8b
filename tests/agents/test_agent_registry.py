"""Agent cards, their YAML extension point, scripted baselines, and the missing-weights/backends errors."""

from __future__ import annotations

import importlib.util
import time

import pytest

from madopd_agents.base import SamplingParams
from madopd_agents.registry import agent_names, build_agent, get_card, parse_agent_args
from madopd_agents.scripted import ExpertAgent, RandomAgent
from madopd_agents.zoo import ModelUnavailableError, resolve_model
from madopd_envs.eval.config import ConfigError

BUILTIN = {"expert", "random", "smollm2-135m", "student_4b", "student_1.7b", "teacher_8b", "teacher_14b"}


def test_builtin_cards_load_and_validate():
    assert BUILTIN <= set(agent_names())
    for name in agent_names():
        card = get_card(name)
        assert card.name == name and card.sampling_params.max_new_tokens >= 1
        assert card.needs_expert == (card.backend == "expert")
    assert get_card("student_4b").model == "Qwen/Qwen3-4B" and get_card("student_4b").args["enable_thinking"] is False


def test_agent_args_override_the_right_parts_of_a_card():
    args = parse_agent_args("temperature=0.3,stop=[a, b],history=2,batch_size=4,model=/m,enable_thinking=true")
    assert args == {"temperature": 0.3, "stop": ["a", "b"], "history": 2, "batch_size": 4, "model": "/m",
                    "enable_thinking": True}
    card = get_card("student_4b").with_overrides(args)
    assert card.sampling_params == SamplingParams(temperature=0.3, top_p=0.8, max_new_tokens=256, seed=0,
                                                  stop=("a", "b"))
    assert card.prompt["history"] == 2 and card.args["batch_size"] == 4 and card.model == "/m"
    with pytest.raises(ConfigError, match="k=v"):
        parse_agent_args("temperature")
    with pytest.raises(ConfigError, match="top_p"):
        get_card("random").with_overrides({"top_p": 2})


def test_a_yaml_file_adds_an_agent(tmp_path, monkeypatch):
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "careful.yaml").write_text("backend: random\nargs: {seed: 9}\nprompt: {history: 1}\n")
    monkeypatch.setenv("MADOPD_CONF", str(tmp_path))
    assert "careful" in agent_names()
    agent = build_agent("careful")
    assert isinstance(agent, RandomAgent) and agent.seed == 9 and agent.name == "careful"
    with pytest.raises(ConfigError, match="Did you mean careful"):
        get_card("carefull")


def test_missing_weights_fail_fast_with_instructions(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(ModelUnavailableError) as err:
        build_agent("teacher_14b")
    assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert "Qwen/Qwen3-14B" in msg and "hf download" in msg and "base_url=" in msg
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        resolve_model(str(tmp_path / "nowhere"))
    with pytest.raises(ModelUnavailableError, match="no config.json"):
        resolve_model(str(tmp_path))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_says_how_to_install(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ModelUnavailableError, match="pip install vllm"):
        build_agent("smollm2-135m", backend="vllm", model=str(tmp_path))


def test_scripted_agents_follow_the_env():
    infos = [{"task_id": "t1", "step": 0, "expert_action": "take coin", "admissible_actions": ["a", "b", "c"]},
             {"task_id": "t2", "step": 3, "expert_action": None, "admissible_actions": None, "family": "code"}]
    convs = [[{"role": "user", "content": "x"}]] * 2
    expert = ExpertAgent().act(convs, SamplingParams(), infos)
    assert [o.text for o in expert] == ["take coin", "look"] and expert[1].meta["no_expert"]
    rnd = RandomAgent(seed=1)
    first = rnd.act(convs, SamplingParams(n=3), infos)
    assert len(first) == 6 and all(o.text in "abc" for o in first[:3]) and first[3].text == "pass"
    again = rnd.act(convs[:1][::-1], SamplingParams(n=3), infos[:1])  # another batch, same choice
    assert [o.text for o in again] == [o.text for o in first[:3]]
    assert all(o.finish_reason == "scripted" for o in first + expert)
