"""OmniOPD mechanics: peak-entropy forks, shrunk MC rewards, the anchored loss, offline embeddings."""

import pytest
import torch

from madopd_distill.methods.omni_core import k3_kl, omni_loss, peak_entropy_forks, shrunk_rewards, token_entropy


def test_token_entropy():
    assert float(token_entropy(torch.zeros(4))) == pytest.approx(torch.log(torch.tensor(4.0)).item())
    assert float(token_entropy(torch.tensor([100.0, 0.0, 0.0]))) == pytest.approx(0.0, abs=1e-6)


def test_peak_entropy_forks():
    ent = [0.1, 0.9, 0.2, 0.1, 0.3, 2.0, 0.4, 1.5, 0.2, 0.1]
    assert peak_entropy_forks(ent, max_forks=2, fork_quantile=0.5, min_gap=1) == [5, 7]
    # min_gap drops the second peak near the first
    assert peak_entropy_forks(ent, max_forks=2, fork_quantile=0.5, min_gap=3) == [1, 5]
    assert peak_entropy_forks(ent, max_forks=1, fork_quantile=0.0, min_gap=1) == [5]
    assert peak_entropy_forks([], max_forks=2) == []
    assert peak_entropy_forks(ent, max_forks=3, fork_quantile=0.0, min_gap=1, min_entropy=1.0) == [5, 7]


def test_shrunk_rewards():
    sims = [[0.9, 0.7], [0.1]]
    mu = (0.9 + 0.7 + 0.1) / 3
    r = shrunk_rewards(sims, prior_strength=1.0)
    assert r.tolist() == pytest.approx([(1.6 + mu) / 3, (0.1 + mu) / 2])
    assert shrunk_rewards(sims, prior_strength=0.0).tolist() == pytest.approx([0.8, 0.1])
    assert shrunk_rewards(sims, prior_strength=2.0, prior_mean=0.5).tolist() == pytest.approx([2.6 / 4, 1.1 / 3])
    # shrinkage pulls the single-sample fork harder than the two-sample one
    r0 = shrunk_rewards(sims, prior_strength=0.0)
    assert abs(r[1] - r0[1]) > abs(r[0] - r0[0])
    with pytest.raises(ValueError):
        shrunk_rewards([[0.5], []])


def test_omni_loss_gradient_direction_and_anchor():
    logits = torch.zeros(1, 6, requires_grad=True)
    logp = torch.nn.functional.logsigmoid(logits)  # stand-in per-token log-probs
    mask = torch.tensor([[False, True, True, True, True, True]])
    chunks = torch.tensor([[-1, 0, 0, 1, 1, -1]])
    rewards = torch.tensor([0.9, 0.1])
    loss, stats = omni_loss(logp, logp.detach(), mask, chunks, rewards, kl_coef=0.1)
    loss.backward()
    g = logits.grad[0]
    assert g[1] < 0 and g[2] < 0  # good chunk: raise its log-prob (descent direction)
    assert g[3] > 0 and g[4] > 0  # bad chunk: lower it
    assert g[0] == 0 and g[5] == 0  # untouched tokens
    assert stats["omni/kl_anchor"] == pytest.approx(0.0) and stats["omni/forks"] == 2
    assert float(k3_kl(torch.tensor([-1.0]), torch.tensor([-2.0]))) > 0
    # no forks -> only the anchor
    loss2, _ = omni_loss(logp.detach() - 0.5, logp.detach(), mask, torch.full((1, 6), -1), torch.zeros(0), 1.0)
    assert float(loss2) > 0


def test_embedder_offline_similarity():
    from madopd_distill.methods.omni_core import shared_embedder

    emb = shared_embedder()
    sims = emb.similarities(["open the fridge"], [["open fridge", "go north to the garden"]])
    assert sims[0][0] > 0.8 > sims[0][1]
