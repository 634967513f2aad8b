"""Token-level routing mechanics: most-confident teacher per token, shares, the learned router,
FusionRoute's complementary logit."""

import pytest
import torch

from madopd_distill.methods.routing_core import (LearnedRouter, best_teacher_targets, confidence_route,
                                                 gather_routed, route_shares, teacher_features)


def test_confidence_route_picks_per_token_and_respects_availability():
    conf = torch.tensor([[[0.9, 0.2, 0.5]], [[0.1, 0.8, 0.5]]])  # [K=2, B=1, T=3]
    route = confidence_route(conf)
    assert route.tolist() == [[0, 1, 0]]  # tie -> lowest index
    avail = torch.tensor([[[False, True, True]], [[True, True, True]]])
    assert confidence_route(conf, avail).tolist() == [[1, 1, 0]]
    per_token = torch.tensor([[[1.0, 2.0, 3.0]], [[10.0, 20.0, 30.0]]])
    assert gather_routed(per_token, route).tolist() == [[1.0, 20.0, 3.0]]
    assert route_shares(route, torch.tensor([[True, True, False]]), 2) == [0.5, 0.5]
    assert route_shares(route, torch.zeros(1, 3, dtype=torch.bool), 2) == [0.0, 0.0]


def test_learned_router_learns_the_best_teacher_rule():
    torch.manual_seed(0)
    k, b, t, v = 2, 8, 6, 5
    topk = torch.log_softmax(torch.randn(k, b, t, v) * 2, -1)
    sampled = topk[..., 0]
    feats = teacher_features(topk, sampled)
    assert feats.shape == (b, t, k * 3)
    targets = best_teacher_targets(sampled)
    router = LearnedRouter(k, hidden=16)
    mask = torch.ones(b, t, dtype=torch.bool)
    opt = torch.optim.Adam(router.parameters(), lr=0.05)
    first = float(router.loss(feats, targets, mask).detach())
    for _ in range(100):
        opt.zero_grad()
        loss = router.loss(feats, targets, mask)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first / 3
    assert (router.route(feats) == targets).float().mean() > 0.9


def test_complementary_head_starts_as_pure_routing_then_changes_the_routed_distribution():
    from madopd_distill.methods.routing_core import (ComplementaryHead, complementary_sft_loss, disagreement_rows,
                                                     fuse_logits)

    torch.manual_seed(0)
    n, h, v = 12, 8, 7
    hidden, expert = torch.randn(n, h), torch.randn(n, v) * 2
    targets = torch.randint(0, v, (n,))
    head = ComplementaryHead(h, v, rank=4)
    assert torch.equal(fuse_logits(expert, head(hidden)), expert)  # zero-initialised: the expert's distribution
    loss = complementary_sft_loss(head, hidden, expert, targets, torch.ones(n, dtype=torch.bool))
    loss.backward()
    assert head.up.weight.grad.abs().sum() > 0  # the complementary generator receives gradient
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        complementary_sft_loss(head, hidden, expert, targets, torch.ones(n, dtype=torch.bool)).backward()
        opt.step()
    fused = torch.softmax(fuse_logits(expert, head(hidden).detach()), -1)
    p_expert = torch.softmax(expert, -1)
    assert (fused - p_expert).abs().max() > 0.05
    # trained towards the labels: the fused distribution gives them more mass than the expert alone
    assert fused.gather(1, targets[:, None]).mean() > p_expert.gather(1, targets[:, None]).mean()
    teachers = torch.stack([expert, expert.clone()])
    teachers[1, 0] = -expert[0]  # only row 0 has a different top-1 token
    assert disagreement_rows(teachers).tolist() == [True] + [False] * (n - 1)


def test_routing_loss_targets_the_fused_distribution_and_trains_the_head():
    from madopd_distill.batch import collate, reduction_coefficients
    from madopd_distill.methods import build_method
    from madopd_distill.methods.base import MethodContext, StudentOutput, reduce_rows, row_divergence
    from madopd_distill.rollout import Sample
    from madopd_distill.teachers import TokenScores

    class Unused:
        name = "t"

        def score(self, requests, *, top_k=None):
            raise AssertionError("the test passes scores itself")

    g = torch.Generator().manual_seed(1)
    vocab, hid = 11, 6
    samples = [Sample(torch.randint(0, vocab, (6,), generator=g).tolist(), [False, False] + [True] * 4, [0.0] * 6,
                      traj_index=i, meta={"won": True}) for i in range(2)]
    batch = collate(samples, reduction_coefficients(samples, "token_mean"), pad_id=0)
    logits = torch.randn(batch.num_rows, vocab, generator=g, requires_grad=True)
    lp = torch.log_softmax(logits, -1).gather(-1, batch.targets[:, None]).squeeze(-1)
    student = StudentOutput(logits, lp, hidden=torch.randn(batch.num_rows, hid, generator=g))
    scores = []
    for _ in range(2):  # two teachers that disagree almost everywhere
        t = torch.randn(batch.num_rows, vocab, generator=g) * 3
        scores.append(TokenScores(torch.log_softmax(t, -1).gather(-1, batch.targets[:, None]).squeeze(-1), logits=t))
    m = build_method("routing", {"complementary_lr": 0.1}, MethodContext(teachers={"a": Unused(), "b": Unused()}))
    assert m.needs_student_hidden
    ones = torch.ones(batch.num_rows)
    plain = build_method("routing", {"complementary": False}, MethodContext(teachers={"a": Unused(), "b": Unused()}))
    first = m.loss(student, scores, ones, batch, 0)
    assert float(first.loss.detach()) == pytest.approx(float(plain.loss(student, scores, ones, batch, 0).loss.detach()), rel=1e-6)
    assert first.metrics["route/comp_rows"] > 0 and m.head.up.weight.abs().sum() > 0  # the head took a step
    second = m.loss(student, scores, ones, batch, 1)
    assert second.metrics["route/comp_abs_mean"] > 0
    assert abs(float(second.loss.detach()) - float(first.loss.detach())) > 1e-4  # the target is no longer the teacher alone
    second.loss.backward()
    assert logits.grad.abs().sum() > 0  # the student still learns from the (fused) target
    sparse = [TokenScores(s.token_logprobs, topk_ids=s.logits.topk(3).indices, topk_logprobs=s.logits.topk(3).values)
              for s in scores]
    with pytest.raises(ValueError, match="complementary"):
        m.loss(student, sparse, ones, batch, 2)
