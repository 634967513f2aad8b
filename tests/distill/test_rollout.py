"""On-policy multi-turn rollouts in real TextWorldExpress workers with a real (tiny) transformers student.

Checks what the trainer relies on: who wrote each turn, that only student-sampled tokens are
unmasked, that the recorded tokens/logprobs/contexts are the sampler's, contiguity and turn
boundaries, group sampling, method plans (expert turns, student-turn caps), and samples.
"""

from __future__ import annotations

import pytest

from madopd_agents.base import SamplingParams
from madopd_distill.rollout import (Episode, RolloutCollector, RolloutPlan, Sample, Trajectory, Turn, group_episodes,
                                    to_samples)

ENV = "madopd/TWX-SimonSays-v0"
SAMPLING = SamplingParams(temperature=1.0, max_new_tokens=6)


@pytest.fixture(scope="module")
def student():
    from madopd_agents.hf import HFAgent
    from madopd_agents.zoo import build_tokenizer, tiny_qwen3

    tok = build_tokenizer(["Simon says, 'take the apple'. <action>take apple</action> examine smell slice"] * 30,
                          vocab_size=300)
    model = tiny_qwen3(tok, "S", seed=0, hidden_size=32, num_hidden_layers=1, intermediate_size=64,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    return HFAgent(model, tok, name="student")


@pytest.fixture(scope="module")
def collector(student):
    with RolloutCollector(ENV, 2, student, SAMPLING, expert=True, max_env_steps=3) as col:
        yield col


def check_masks(traj: Trajectory) -> None:
    for t in traj.turns:
        assert len(t.loss_mask) == len(t.token_ids)
        assert all(t.loss_mask) if t.role == "student" else not any(t.loss_mask), (t.role, t.provenance)


def test_student_rollouts_record_what_was_sampled(collector, student) -> None:
    trajs = collector.collect(group_episodes(["train-1", "train-2"], group_size=2))
    assert [t.task_id for t in trajs] == ["train-1", "train-1", "train-2", "train-2"]
    assert [t.group_id for t in trajs] == [0, 0, 1, 1]
    assert collector.last_stats.sampled_tokens > 0
    for traj in trajs:
        assert traj.error is None and 1 <= traj.num_steps <= 3
        roles = [t.role for t in traj.turns]
        assert roles[0] == "prompt" and roles[1::2] == ["student"] * traj.num_steps
        assert roles[2::2] == ["env"] * traj.num_steps
        check_masks(traj)
        for t in traj.student_turns:
            assert t.provenance == "sampled" and len(t.logprobs) == len(t.token_ids) > 0
            assert all(lp <= 0 for lp in t.logprobs)
            assert t.context[-1]["role"] == "user" and t.action is not None and "reward" in t.info
            assert t.context_ids == student.render(t.context)  # the context is what the sampler saw
    # The project's prompt shows the admissible actions and a reply reminder under the newest
    # observation only, so a context is not a prefix of the next: samples fall back to one per turn.
    multi = [t for t in trajs if len(t.student_turns) > 1]
    assert multi and not any(t.contiguous for t in multi)
    samples = to_samples(trajs, "trajectory")
    assert all(s.mode == "turn" for s in samples)
    assert len(samples) == sum(len(t.student_turns) for t in trajs)
    turns = [(k, i) for k, t in enumerate(trajs) for i, u in enumerate(t.turns) if u.role == "student"]
    for s, (k, i) in zip(samples, turns):
        turn = trajs[k].turns[i]
        assert s.input_ids == turn.context_ids + turn.token_ids and s.traj_index == k and s.turn_indices == [i]
        assert [x for x, m in zip(s.input_ids, s.loss_mask) if m] == turn.token_ids
        assert [x for x, m in zip(s.sampler_logprobs, s.loss_mask) if m] == pytest.approx(turn.logprobs)


def contiguous_trajectory() -> Trajectory:
    """prompt [1 2 3] -> student [4 5] -> env [6 7] -> expert (text only) -> env [8] -> student [9]."""
    return Trajectory("t", turns=[
        Turn("prompt", token_ids=[1, 2, 3]),
        Turn("student", token_ids=[4, 5], logprobs=[-0.1, -0.2], context_ids=[1, 2, 3]),
        Turn("env", token_ids=[6, 7]),
        Turn("teacher", text="<action>go</action>", provenance="expert"),
        Turn("env", text="ok"),
        Turn("student", token_ids=[9], logprobs=[-0.3], context_ids=[1, 2, 3, 4, 5, 6, 7, 10, 11, 8]),
    ], rewards=[0.0, 1.0], won=True)


def test_contiguous_trajectory_sequence_boundaries_and_sample() -> None:
    traj = contiguous_trajectory()
    assert traj.contiguous
    seq = traj.token_ids()
    assert seq == [1, 2, 3, 4, 5, 6, 7, 10, 11, 8, 9]
    # env [6 7] keeps its tokens; the expert's text and the next observation share [10 11 8]
    assert traj.turn_boundaries() == [(0, 3), (3, 5), (5, 7), (7, 7), (7, 10), (10, 11)]
    (s,) = to_samples([traj], "trajectory")
    assert s.mode == "trajectory" and s.input_ids == seq and s.turn_indices == [1, 5]
    assert [i for i, m in enumerate(s.loss_mask) if m] == [3, 4, 10]
    assert s.sampler_logprobs[3:5] == [-0.1, -0.2] and s.sampler_logprobs[10] == -0.3
    assert sum(s.sampler_logprobs) == pytest.approx(-0.6)
    broken = contiguous_trajectory()
    broken.turns[5].context_ids = [1, 2, 3, 4, 99, 6]
    assert not broken.contiguous and [x.mode for x in to_samples([broken], "trajectory")] == ["turn", "turn"]
    broken.error = "worker died"
    assert to_samples([broken]) == []


def test_expert_turns_are_not_trained_and_plans_cap_student_turns(collector) -> None:
    def writer(turn: int, info: dict) -> str:
        return "expert" if turn == 0 else "student"

    plan = RolloutPlan(writer=writer, max_student_turns=1, meta={"b2f": 1})
    (traj,) = collector.collect([Episode("train-5")], [plan])
    assert [(t.role, t.provenance) for t in traj.turns] == [
        ("prompt", "system"), ("teacher", "expert"), ("env", "observation"), ("student", "sampled"),
        ("env", "observation")]
    expert = traj.turns[1]
    assert expert.action and expert.text == f"<action>{expert.action}</action>" and not expert.sampled
    assert traj.meta["b2f"] == 1 and traj.meta["stopped_by_plan"] != traj.won
    check_masks(traj)
    (sample,) = to_samples([traj], "turn")
    assert [x for x, m in zip(sample.input_ids, sample.loss_mask) if m] == traj.turns[3].token_ids
    # the expert's reply is in the student's context, as the text the prompt format rendered
    assert any(m["content"] == expert.text for m in traj.turns[3].context)


def test_invalid_action_cap_and_plan_errors(student) -> None:
    with RolloutCollector(ENV, 1, student, SAMPLING, max_env_steps=3, max_invalid_actions=1) as col:
        (traj,) = col.collect([Episode("train-7")])
        first_valid = traj.student_turns[0].info["action_valid"]
        if first_valid:
            pytest.skip("the random student's first action happened to be valid")
        assert traj.num_steps == 1 and traj.meta["stopped_invalid"] and traj.truncated
        with pytest.raises(ValueError, match="expert=True"):
            col.collect([Episode("train-1")], [RolloutPlan(writer=lambda t, i: "expert")])
        with pytest.raises(ValueError, match="no teacher_agent"):
            col.collect([Episode("train-1")], [RolloutPlan(writer=lambda t, i: "teacher")])
    with pytest.raises(ValueError, match="max_invalid_actions"):
        RolloutCollector(ENV, 1, student, SAMPLING, max_invalid_actions=0)


def test_data_types_reject_inconsistent_input() -> None:
    with pytest.raises(ValueError, match="role"):
        Turn("assistant")
    with pytest.raises(ValueError, match="loss_mask"):
        Turn("student", token_ids=[1, 2], loss_mask=[True])
    with pytest.raises(ValueError, match="first token"):
        Sample([1, 2], [True, True], [0.0, 0.0])
    with pytest.raises(ValueError, match="group_size"):
        group_episodes(["a"], 0)
    with pytest.raises(ValueError, match="sample mode"):
        to_samples([], "episode")
