"""Token-level routing mechanics: most-confident teacher per token, shares, the learned router."""

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
