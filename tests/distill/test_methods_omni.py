"""OmniOPD mechanics: peak-entropy forks, shrunk MC rewards, the anchored loss, offline embeddings."""

import pytest
import torch

from madopd_distill.methods.omni_core import k3_kl, omni_row_loss, peak_entropy_forks, shrunk_rewards


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


def test_omni_row_loss_gradient_direction_and_anchor():
    logits = torch.zeros(6, requires_grad=True)
    logp = torch.nn.functional.logsigmoid(logits)  # stand-in per-token log-probs
    adv = torch.tensor([0.0, 0.4, 0.4, -0.4, -0.4, 0.0])  # chunk 1 good, chunk 2 bad, others outside
    per_row, kl = omni_row_loss(logp, logp.detach(), adv, kl_coef=0.1)
    per_row.sum().backward()
    g = logits.grad
    assert g[1] < 0 and g[2] < 0  # good chunk: descent raises its log-prob
    assert g[3] > 0 and g[4] > 0  # bad chunk: lowered
    assert g[0] == 0 and g[5] == 0  # no reward, anchor at its minimum (student == reference)
    assert float(kl.abs().sum()) == 0.0
    assert float(k3_kl(torch.tensor([-1.0]), torch.tensor([-2.0]))) > 0
    # away from the reference the anchor alone pulls back
    x = torch.tensor([-0.5], requires_grad=True)
    loss, _ = omni_row_loss(x, torch.tensor([-1.0]), torch.zeros(1), kl_coef=1.0)
    loss.sum().backward()
    assert float(loss.detach()) > 0 and float(x.grad) > 0  # descent lowers log p back towards the reference


def test_embedder_offline_similarity():
    from madopd_distill.methods.omni_core import shared_embedder

    emb = shared_embedder()
    sims = emb.similarities(["open the fridge"], [["open fridge", "go north to the garden"]])
    assert sims[0][0] > 0.8 > sims[0][1]
