"""The RL baselines' advantages by hand on toy groups (GRPO, GiGPO, ATOD), and their losses on toy batches.

The two-step trainings of each run with the other methods in ``test_methods_smoke.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from madopd_distill.batch import collate, reduction_coefficients
from madopd_distill.methods import build_method
from madopd_distill.methods.atod import rl_share
from madopd_distill.methods.base import MethodContext, StudentOutput, policy_gradient_rows, reduce_rows, row_divergence
from madopd_distill.methods.rl_core import discounted_returns, group_normalise
from madopd_distill.rollout import Trajectory, Turn
from madopd_distill.teachers import TokenScores


class NullTeacher:
    name = "t"

    def score(self, requests, *, top_k=None):
        raise AssertionError("not scored in these tests")


def ctx(teachers=True, **kw) -> MethodContext:
    return MethodContext(teachers={"t": NullTeacher()} if teachers else {}, total_steps=10, **kw)


def test_group_normalise_by_hand():
    # group a: 1, 0 -> mean 0.5, unbiased std sqrt(0.5); group b: 1, 1 -> flat, 0; group c: one episode -> 0
    got = group_normalise([1, 0, 1, 1, 7], ["a", "a", "b", "b", "c"], std=True, eps=0.0)
    assert got == pytest.approx([0.5 / math.sqrt(0.5), -0.5 / math.sqrt(0.5), 0, 0, 0])
    assert group_normalise([1, 0, 1, 1, 7], ["a", "a", "b", "b", "c"], std=False) == pytest.approx([0.5, -0.5, 0, 0, 0])
    with pytest.raises(ValueError, match="group keys"):
        group_normalise([1, 2], ["a"])


def test_discounted_returns_by_hand():
    assert discounted_returns([0, 0, 1], 0.5) == pytest.approx([0.25, 0.5, 1.0])
    assert discounted_returns([1, 1], 1.0) == pytest.approx([2.0, 1.0])
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns([1], 1.5)


def episode(group: int, observations: list[str], rewards: list[float], won: bool) -> Trajectory:
    """A played episode: prompt, then (student action, observation) per step; tokens are toys."""
    turns = [Turn("prompt", text=observations[0], provenance="system", env_step=0)]
    for k, r in enumerate(rewards, start=1):
        turns.append(Turn("student", text="a", token_ids=[3, 4], logprobs=[-1.0, -1.0], env_step=k,
                          context_ids=[1, 2, 5 + k], action="a", provenance="sampled"))
        turns.append(Turn("env", text=observations[k] if k < len(observations) else "end", env_step=k,
                          provenance="observation"))
    return Trajectory(f"task-{group}", group_id=group, turns=turns, rewards=list(rewards), won=won)


def test_grpo_gives_every_token_of_an_episode_its_group_relative_return():
    grpo = build_method("grpo", {"sample_mode": "turn"}, ctx(teachers=False))
    trajs = [episode(0, ["s0", "s1"], [0, 1], True), episode(0, ["s0", "s2"], [0, 0], False),
             episode(1, ["x"], [1], True), episode(1, ["x"], [1], True)]  # group 1 is flat: no signal
    samples = grpo.make_samples(trajs, 0)
    a = 0.5 / (math.sqrt(0.5) + 1e-6)  # (1 - 0.5) / (std + eps)
    assert [s.traj_index for s in samples] == [0, 0, 1, 1, 2, 3]
    assert [s.meta["advantage"] for s in samples] == pytest.approx([a, a, -a, -a, 0.0, 0.0])
    assert grpo.log_metrics(trajs, 0) == {"rl/flat_groups": 0.5}
    assert grpo.score(None, 0) == []  # no teacher is scored


def test_gigpo_adds_anchor_state_groups_with_discounted_returns():
    gigpo = build_method("gigpo", {"gamma": 0.95, "normalise_std": False}, ctx(teachers=False))
    # one group, two episodes: both start in s0; A then reaches s1 and wins, B reaches s2 and does not
    trajs = [episode(0, ["s0", "s1"], [0, 1], True), episode(0, ["s0", "s2"], [0, 0], False)]
    samples = gigpo.make_samples(trajs, 0)
    assert [(s.traj_index, s.turn_indices) for s in samples] == [(0, [1]), (0, [3]), (1, [1]), (1, [3])]  # per turn
    # episode level over the group's turns (returns 1, 1, 0, 0): +-0.5. Step level: the two turns at s0
    # have G = 0.95 * 1 and 0 -> +-0.475; the turns at s1 and s2 are alone in their anchor groups -> 0.
    assert [s.meta["advantage"] for s in samples] == pytest.approx([0.5 + 0.475, 0.5, -0.5 - 0.475, -0.5])
    # with std normalisation (the ALFWorld example's mean_std_norm) and a weight w on the step level
    w = build_method("gigpo", {"step_weight": 2.0}, ctx(teachers=False))
    e, st = 0.5 / math.sqrt(1 / 3), 0.475 / math.sqrt(2 * 0.475 ** 2)
    assert [s.meta["advantage"] for s in w.make_samples(trajs, 0)] == pytest.approx(
        [e + 2 * st, e, -e - 2 * st, -e], rel=1e-4)


def toy_batch(advantages, vocab=11, seed=0):
    from madopd_distill.rollout import Sample

    g = torch.Generator().manual_seed(seed)
    samples = []
    for i, a in enumerate(advantages):
        ids = torch.randint(0, vocab, (6,), generator=g).tolist()
        samples.append(Sample(ids, [False, False] + [True] * 4, [0.0, 0.0] + [-1.5] * 4, traj_index=i,
                              turn_indices=[1], meta={"advantage": a}))
    batch = collate(samples, reduction_coefficients(samples, "token_mean"), pad_id=0)
    logits = torch.randn(batch.num_rows, vocab, generator=g, requires_grad=True)
    lp = torch.log_softmax(logits, -1).gather(-1, batch.targets[:, None]).squeeze(-1)
    t = torch.randn(batch.num_rows, vocab, generator=g) * 2
    scores = TokenScores(torch.log_softmax(t, -1).gather(-1, batch.targets[:, None]).squeeze(-1), logits=t)
    return batch, logits, StudentOutput(logits, lp), scores


def test_grpo_loss_pushes_up_the_tokens_of_better_episodes():
    batch, logits, student, _ = toy_batch([1.0, -1.0])
    grpo = build_method("grpo", {"clip_ratio": None}, ctx(teachers=False))
    out = grpo.loss(student, [], torch.ones(batch.num_rows), batch, 0)
    (grad,) = torch.autograd.grad(out.loss, logits)
    # d loss / d logit of the sampled token: -A (1 - p) * ratio * reduce_weight: negative for A > 0 (pushed up)
    sampled = grad.gather(-1, batch.targets[:, None]).squeeze(-1)
    assert (sampled[batch.rows == 0] < 0).all() and (sampled[batch.rows == 1] > 0).all()
    assert float(out.token_kl.abs().sum()) == 0.0  # no reference: KL to the initial student is not measured


def test_grpo_kl_to_the_initial_student_is_zero_at_the_start_and_needs_the_student():
    from madopd_agents.zoo import tiny_model_dir
    from madopd_distill.trainer import load_causal_lm, student_forward

    model, tok = load_causal_lm(str(tiny_model_dir("S", seed=0)))
    batch, _, _, _ = toy_batch([1.0, -1.0], vocab=len(tok))
    grpo = build_method("grpo", {"ref_kl_coef": 0.5, "clip_ratio": None}, ctx(teachers=False, student=model))
    plain = build_method("grpo", {"clip_ratio": None}, ctx(teachers=False))
    student = student_forward(model, batch)
    a, b = (m.loss(student, [], torch.ones(batch.num_rows), batch, 0) for m in (grpo, plain))
    assert float(a.loss.detach()) == pytest.approx(float(b.loss.detach()), abs=1e-6)  # the copy is the student: k3 KL is 0
    assert float(a.token_kl.abs().max()) < 1e-5
    with torch.no_grad():  # the student moves; the frozen reference does not
        next(model.parameters()).add_(0.1)
    moved = grpo.loss(student_forward(model, batch), [], torch.ones(batch.num_rows), batch, 0)
    assert float(moved.token_kl.abs().max()) > 1e-3
    with pytest.raises(ValueError, match="initial student"):
        build_method("grpo", {"ref_kl_coef": 0.5}, ctx(teachers=False))


def test_atod_schedule_end_points_are_pure_opd_and_pure_rl():
    cfg = build_method("atod", {}, ctx()).cfg
    lam = rl_share(cfg, total_steps=10)
    assert (lam(0), lam(9)) == (0.0, 1.0) and 0 < lam(4) < 1
    batch, logits, student, scores = toy_batch([1.0, -1.0])
    ones = torch.ones(batch.num_rows)
    atod = build_method("atod", {"turn_reweighting": False, "clip_ratio": None}, ctx())
    opd = reduce_rows(row_divergence(student, scores, batch, atod.cfg), ones, batch)
    rl = reduce_rows(policy_gradient_rows(student, torch.tensor([1.0, -1.0])[batch.rows], batch), ones, batch)
    assert float(atod.loss(student, [scores], ones, batch, 0).loss) == pytest.approx(float(opd), rel=1e-6)
    assert float(atod.loss(student, [scores], ones, batch, 9).loss) == pytest.approx(float(rl), rel=1e-6)


def test_atod_turn_weights_favour_turns_where_teacher_and_student_disagree():
    batch, logits, student, scores = toy_batch([0.0, 0.0])
    # make the teacher agree with the student on sample 0 and not on sample 1
    t_lp = student.token_logprobs.detach().clone()
    t_lp[batch.rows == 1] -= 3.0
    agree = TokenScores(t_lp)
    atod = build_method("atod", {"divergence": "sampled_token"}, ctx())
    out = atod.loss(student, [agree], torch.ones(batch.num_rows), batch, 0)
    from madopd_distill.methods.atod import turn_weights

    w = turn_weights(student, t_lp, batch, 1.0, 5.0)
    assert float(w[batch.rows == 0].max()) == 0.0 and float(w[batch.rows == 1].min()) == pytest.approx(2.0)
    assert out.metrics["atod/turn_weight_max"] == pytest.approx(2.0)  # weights average 1 over the turns


def test_rl_methods_refuse_what_cannot_work():
    from madopd_distill.trainer import TrainConfig

    base = {"env": "madopd/TWX-Coin-v0", "student": "x", "teachers": []}
    with pytest.raises(ValueError, match="rollout.group_size >= 2"):
        TrainConfig.from_dict({**base, "method": "grpo"})
    TrainConfig.from_dict({**base, "method": "grpo", "rollout": {"group_size": 2}})  # no teacher needed
    with pytest.raises(ValueError, match="needs at least one teacher"):
        TrainConfig.from_dict({**base, "method": "atod", "rollout": {"group_size": 2}})
    with pytest.raises(ValueError, match="needs at least one teacher"):
        TrainConfig.from_dict({**base, "method": "opd"})
    with pytest.raises(ValueError, match="reward must be"):
        build_method("grpo", {"reward": "fun"}, ctx(teachers=False))
    with pytest.raises(ValueError, match="rl_start"):
        build_method("atod", {"rl_start": 2.0}, ctx())
