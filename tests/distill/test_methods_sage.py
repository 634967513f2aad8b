"""SAGE-OPD mechanics: judge prompt/parsing, confidence kinds, the loss keeps OPD's scale."""

import math

import pytest
import torch

from madopd_distill.methods.sage import (SageConfig, judge_prompt, normalise_to_opd_scale, parse_judgement,
                                         sage_token_weights, token_confidence, weighted_token_mean)

STATE = [{"role": "user", "content": "You are in a room. Goal: take the coin."}]


def test_judge_prompt_sees_feedback_and_leaves_state_alone():
    conv = judge_prompt(STATE, "take coin", "You take the coin. You won!")
    assert STATE == [{"role": "user", "content": "You are in a room. Goal: take the coin."}]
    text = conv[-1]["content"]
    assert "take coin" in text and "You won!" in text and "<<JUDGE=intervene>>" in text and "weak" not in text
    assert "<<JUDGE=strong>>" in judge_prompt(STATE, "a", "b", levels="three")[-1]["content"]


def test_parse_judgement():
    assert parse_judgement("fine <<JUDGE=skip>>") == "skip"
    assert parse_judgement("<<judge=INTERVENE>>") == "intervene"
    assert parse_judgement("<<JUDGE=skip>> no wait <<JUDGE=intervene>>") == "intervene"
    assert parse_judgement("it was wrong") is None
    assert parse_judgement("<<JUDGE=strong>>") is None  # a three-level tag under the two-level scheme
    assert parse_judgement("<<judge=WEAK>>", "three") == "weak"
    assert parse_judgement("", "three") is None


def test_confidence_kinds():
    lp = torch.log_softmax(torch.tensor([[[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]), -1)  # [1, 2, 3]
    mp = token_confidence("max_prob", lp)
    assert mp[0, 0] == pytest.approx(math.exp(4) / (math.exp(4) + 2)) and mp[0, 1] == pytest.approx(1 / 3)
    ent = token_confidence("entropy", lp)
    assert ent[0, 1] == pytest.approx(1 / 3)  # exp(-log 3)
    assert ent[0, 0] > ent[0, 1]
    onehot = torch.log(torch.tensor([[[1.0, 0.0, 0.0]]]))
    assert token_confidence("entropy", onehot)[0, 0] == pytest.approx(1.0)
    assert token_confidence("sampled", sampled_logprobs=torch.log(torch.tensor([0.25])))[0] == pytest.approx(0.25)
    assert token_confidence("none") is None
    with pytest.raises(ValueError):
        token_confidence("max_prob")


def test_normalisation_keeps_opd_loss_scale():
    torch.manual_seed(0)
    per_token = torch.rand(4, 10) + 0.5
    mask = torch.ones(4, 10, dtype=torch.bool)
    mask[:, :3] = False  # prompt tokens
    opd = (per_token * mask).sum() / mask.sum()
    # uniform weights -> exactly the OPD loss
    assert weighted_token_mean(per_token, normalise_to_opd_scale(torch.full((4, 10), 0.3), mask), mask) == \
        pytest.approx(float(opd))
    # levels (skip/weak/strong per row) x confidence: weights average 1 over trained tokens
    levels = torch.tensor([0.0, 0.5, 1.0, 1.0]).unsqueeze(1).expand(4, 10)
    conf = torch.rand(4, 10)
    w = sage_token_weights(levels, conf, mask)
    assert float(w[mask].mean()) == pytest.approx(1.0) and float(w[~mask].abs().sum()) == 0.0
    assert float(w[0].sum()) == 0.0  # a skipped turn gets no loss
    # a constant per-token divergence gives the same loss as OPD whatever the weights
    const = torch.full((4, 10), 0.7)
    assert weighted_token_mean(const, w, mask) == pytest.approx(0.7)
    # without normalisation the skip/weak levels shrink the loss below OPD's scale
    raw = sage_token_weights(levels, conf, mask, normalise=False)
    assert weighted_token_mean(const, raw, mask) < 0.5
    # all turns skipped -> zero loss, no NaN
    zero = sage_token_weights(torch.zeros(4, 10), conf, mask)
    assert float(weighted_token_mean(per_token, zero, mask)) == 0.0


def test_weights_are_constants_for_the_gradient():
    logits = torch.randn(2, 5, requires_grad=True)
    per_token = torch.nn.functional.softplus(logits)
    mask = torch.ones(2, 5, dtype=torch.bool)
    w = torch.tensor([[2.0] * 5, [0.0] * 5])
    weighted_token_mean(per_token, w, mask).backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0


def test_config_checks():
    SageConfig()
    with pytest.raises(ValueError, match="keys"):
        SageConfig(level_weights={"skip": 0, "strong": 1})
    with pytest.raises(ValueError):
        SageConfig(confidence="variance")
    with pytest.raises(ValueError):
        SageConfig(levels="three", level_weights={"skip": -1, "weak": 0.5, "strong": 1})
    with pytest.raises(ValueError, match="keys"):
        SageConfig(levels="three", level_weights={"skip": 0, "intervene": 1})
    assert SageConfig(levels="three").weights == {"skip": 0.0, "weak": 0.5, "strong": 1.0}
    with pytest.raises(ValueError):
        SageConfig(unparsed_weight=-1.0)
