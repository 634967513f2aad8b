"""MAD-OPD mechanics: confidence tags -> weights, the debate protocol, the privileged transcript."""

import copy
import math

import pytest

from madopd_distill.methods.debate import (DEBATE_END, DEBATE_START, confidence_weights, parse_confidence,
                                           run_debate, scoring_context)


def test_parse_confidence_takes_last_valid_tag():
    assert parse_confidence("I think X. <<CONFIDENCE=85>>") == 85.0
    assert parse_confidence("<<CONFIDENCE=10>> then revised <<CONFIDENCE=60>>") == 60.0
    assert parse_confidence("confidence: 90") is None  # only the exact tag counts
    assert parse_confidence("<<CONFIDENCE=150>>") is None  # outside 0..100
    assert parse_confidence("") is None and parse_confidence("<<CONFIDENCE=0>>") == 0.0


def test_confidence_weights_eq7_and_uniform_fallback():
    w = confidence_weights([90, 40], tau=1.0)
    e = [math.exp(0.9), math.exp(0.4)]
    assert w == pytest.approx([e[0] / sum(e), e[1] / sum(e)])
    assert w[0] == pytest.approx(0.6225, abs=1e-4)
    # a lower tau sharpens the weights
    assert confidence_weights([90, 40], tau=0.1)[0] == pytest.approx(1 / (1 + math.exp(-5)))
    assert confidence_weights([100, 0], tau=1.0)[0] == pytest.approx(0.7311, abs=1e-4)  # flat at tau=1
    assert confidence_weights([70, None, 20]) == [1 / 3] * 3
    assert sum(confidence_weights([1, 2, 3, 4])) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        confidence_weights([50, 50], tau=0)


class ScriptedTeacher:
    """Replies from a list per round and records every prompt it was shown."""

    def __init__(self, name, replies):
        self.name, self.replies, self.seen = name, list(replies), []

    def __call__(self, convs):
        r = len(self.seen)
        self.seen.append(copy.deepcopy(convs))
        return [self.replies[r].format(i=i) for i in range(len(convs))]


STATE = [{"role": "system", "content": "You play a text game."},
         {"role": "user", "content": "You are in the kitchen. Goal: cook the meal."}]


def test_debate_rounds_blind_then_revision_and_weights():
    a = ScriptedTeacher("A", ["A1 open fridge", "A2 take knife <<CONFIDENCE=90>>"])
    b = ScriptedTeacher("B", ["B1 go north", "B2 open fridge <<CONFIDENCE=40>>"])
    states = [copy.deepcopy(STATE), copy.deepcopy(STATE)]
    debates = run_debate(states, [a, b], rounds=2, tau=1.0)
    assert states == [STATE, STATE]  # states untouched
    # round 1 is blind: no teacher sees another's reply
    r1_a = a.seen[0][0][-1]["content"]
    assert "B1" not in r1_a and "A1" not in r1_a and "<<CONFIDENCE=N>>" in r1_a
    # round 2: each teacher sees the full round-1 transcript and its own identity
    r2_b = b.seen[1][0][-1]["content"]
    assert "[Expert A Round 1]: A1 open fridge" in r2_b and "[Expert B Round 1]: B1 go north" in r2_b
    assert "You are Expert B" in r2_b
    d = debates[0]
    assert d.replies == [["A1 open fridge", "B1 go north"], ["A2 take knife <<CONFIDENCE=90>>",
                                                             "B2 open fridge <<CONFIDENCE=40>>"]]
    assert d.confidences == [90.0, 40.0] and d.weights == pytest.approx(confidence_weights([90, 40]))
    h = d.transcript()
    assert h.startswith(DEBATE_START) and h.endswith(DEBATE_END) and "[Expert B Round 2]" in h


def test_missing_tag_gives_uniform_and_three_teachers():
    ts = [ScriptedTeacher(n, ["x", f"{n} <<CONFIDENCE=80>>" if n != "C" else "no tag"]) for n in "ABC"]
    d = run_debate([STATE], ts, rounds=2)[0]
    assert d.confidences == [80.0, 80.0, None] and d.weights == [1 / 3] * 3
    assert "[Expert C Round 2]: no tag" in d.transcript()
    # R=1: the round-1 reply is the last round and carries the tag
    d1 = run_debate([STATE], [ScriptedTeacher("A", ["<<CONFIDENCE=100>>"]), ScriptedTeacher("B", ["<<CONFIDENCE=0>>"])],
                    rounds=1)[0]
    assert d1.weights[0] > d1.weights[1]
    # dynamic weights off: uniform whatever the tags say
    d2 = run_debate([STATE], [ScriptedTeacher("A", ["<<CONFIDENCE=100>>"]), ScriptedTeacher("B", ["<<CONFIDENCE=0>>"])],
                    rounds=1, dynamic_weights=False)[0]
    assert d2.weights == [0.5, 0.5]
    with pytest.raises(ValueError, match=">= 2 teachers"):
        run_debate([STATE], ts[:1])


def test_transcript_only_reaches_teachers():
    a = ScriptedTeacher("A", ["SECRET-A1", "SECRET-A2 <<CONFIDENCE=70>>"])
    b = ScriptedTeacher("B", ["SECRET-B1", "SECRET-B2 <<CONFIDENCE=30>>"])
    student_state = copy.deepcopy(STATE)
    d = run_debate([student_state], [a, b], rounds=2)[0]
    ctx_a = scoring_context(student_state, d.transcript(), 0)
    ctx_b = scoring_context(student_state, d.transcript(), 1)
    assert "SECRET-A2" in ctx_a[-1]["content"] and "You are Expert A" in ctx_a[-1]["content"]
    assert "You are Expert B" in ctx_b[-1]["content"]
    assert student_state == STATE  # building teacher contexts never writes into the student's state
    assert "SECRET" not in repr(student_state) and DEBATE_START not in repr(student_state)
    new_user = scoring_context(student_state, d.transcript(), 0, placement="new_user")
    assert new_user[:-1] == STATE and new_user[-1]["role"] == "user"


# -- the multi-teacher mixture (MT-OPD and MAD-OPD share it) ------------------------------------
import torch  # noqa: E402

from madopd_distill.methods.mad_opd import MADOPDConfig, task_divergence  # noqa: E402
from madopd_distill.methods.mt_opd import MTOPDConfig, mix_teachers, teacher_row_coefficients  # noqa: E402


def test_teacher_coefficients_each_teacher_over_its_own_valid_rows():
    rows = torch.tensor([0, 0, 0, 0, 1, 1])  # sample 0 has 4 rows, sample 1 has 2
    valid = torch.ones(2, 6, dtype=torch.bool)
    w = torch.tensor([[0.7, 0.3], [0.5, 0.5]])
    coef = teacher_row_coefficients(rows, valid, w)
    assert coef[:, 0].tolist() == pytest.approx([0.7, 0.3]) and coef[:, 5].tolist() == pytest.approx([0.5, 0.5])
    # teacher 0 scored only the first 2 rows of sample 0: its mean is over those 2 rows, and
    # teacher 1 still supervises all 4 (no shortest-teacher-wins truncation)
    valid[0, 2:4] = False
    coef = teacher_row_coefficients(rows, valid, w)
    d0 = torch.tensor([1.0, 3.0, 100.0, 100.0, 0.0, 0.0])
    d1 = torch.tensor([2.0, 2.0, 2.0, 2.0, 0.0, 0.0])
    reduce_w = torch.full((6,), 1 / 4)  # sample 0's token mean
    loss0 = float((reduce_w[:4] * mix_teachers([d0, d1], coef)[:4]).sum())
    assert loss0 == pytest.approx(0.7 * 2.0 + 0.3 * 2.0)
    assert coef[0, 2:4].tolist() == [0.0, 0.0] and coef[1, :4].tolist() == pytest.approx([0.3] * 4)
    # a teacher missing from a whole sample: the other gets all the weight
    valid[0, :4] = False
    assert teacher_row_coefficients(rows, valid, w)[1, :4].tolist() == pytest.approx([1.0] * 4)
    # NaN losses on rows a teacher did not score never leak into the mix
    d0[2] = float("nan")
    assert torch.isfinite(mix_teachers([d0, d1], teacher_row_coefficients(rows, valid, w))).all()


def test_task_adaptive_divergence_and_configs():
    assert task_divergence("textworldexpress") == ("jsd", 0.5)
    assert task_divergence("alfworld") == ("jsd", 0.5)
    assert task_divergence("code") == ("reverse_kl", 1.0)
    assert task_divergence("anything", open_ended=True) == ("reverse_kl", 1.0)
    cfg = MADOPDConfig()
    assert cfg.divergence == "auto" and cfg.rounds == 2 and cfg.tau == 1.0 and cfg.sample_mode == "turn"
    with pytest.raises(ValueError, match="rounds"):
        MADOPDConfig(rounds=0)
    with pytest.raises(ValueError, match="tau"):
        MADOPDConfig(tau=0.0)
    with pytest.raises(ValueError, match="sample_mode"):
        MADOPDConfig(sample_mode="trajectory")
    with pytest.raises(ValueError, match="divergence"):
        MADOPDConfig(divergence="kl")
    with pytest.raises(ValueError, match="teacher_weights"):
        MTOPDConfig(teacher_weights=[-1.0, 2.0])


def test_loop_filter_drops_looping_replies_as_the_paper_code():
    """MAD-OPD@6c7a66a mad_opd_trainer.py:1270-1330: lower-cased word 3-grams, ratio 1 - unique/total,
    a reply above 0.6 is dropped; under 3 words is kept."""
    from madopd_distill.methods.mt_opd import drop_looping, repetition_ratio
    from madopd_distill.rollout import Sample, Trajectory, Turn

    assert repetition_ratio("go north") == 0.0
    assert repetition_ratio("Go north go north go north") == pytest.approx(1 - 2 / 4)  # 4 trigrams, 2 distinct
    loop = "take coin " * 6  # 10 trigrams, 2 distinct -> 0.8
    assert repetition_ratio(loop) == pytest.approx(0.8)
    trajs = [Trajectory(f"t{i}", turns=[Turn("prompt", text="room"), Turn("student", text=text, token_ids=[5])])
             for i, text in enumerate(["open the door and go north", loop])]
    samples = [Sample([1, 5], [False, True], [0.0, -1.0], traj_index=i, turn_indices=[1]) for i in range(2)]
    assert [s.traj_index for s in drop_looping(samples, trajs, 3, 0.6)] == [0]
    assert len(drop_looping(samples, trajs, 3, 0.8)) == 2  # at the threshold: kept
