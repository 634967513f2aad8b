"""HFAgent: what it samples is what it reports (token ids, logprobs of the sampling distribution)."""

from __future__ import annotations

import torch

from madopd_agents.base import Agent, SamplingParams
from madopd_agents.hf import HFAgent

CONVS = [
    [{"role": "user", "content": "open the fridge and take the apple"}],
    [{"role": "system", "content": "You play a game."}, {"role": "user", "content": "look"}],
    [{"role": "user", "content": "x"}],
]


def _teacher_forced_logits(model, out):
    ids = torch.tensor([out.prompt_token_ids + out.token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    n = len(out.prompt_token_ids)
    return logits[n - 1: n - 1 + len(out.token_ids)]


def test_logprobs_are_the_sampling_distribution_at_temperature_one(tiny):
    model, tok = tiny
    agent = HFAgent(model, tok)
    assert isinstance(agent, Agent)
    outs = agent.act(CONVS, SamplingParams(temperature=1.0, max_new_tokens=12, seed=1, n=2))
    assert len(outs) == 6
    for out in outs:
        assert len(out.token_ids) == len(out.logprobs) > 0
        ref = torch.log_softmax(_teacher_forced_logits(model, out), -1)
        expect = ref[torch.arange(len(out.token_ids)), torch.tensor(out.token_ids)]
        assert torch.allclose(torch.tensor(out.logprobs), expect, atol=1e-4)


def test_temperature_and_top_p_logprobs_are_renormalised_over_the_nucleus(tiny):
    model, tok = tiny
    sp = SamplingParams(temperature=0.7, top_p=0.5, max_new_tokens=10, seed=3)
    for out in HFAgent(model, tok).act(CONVS, sp):
        logits = _teacher_forced_logits(model, out)
        for pos, (tid, lp) in enumerate(zip(out.token_ids, out.logprobs)):
            p = torch.softmax(logits[pos] / 0.7, -1)
            sorted_p, order = p.sort(descending=True)
            keep = order[(sorted_p.cumsum(0) - sorted_p) < 0.5]  # smallest prefix reaching top_p
            assert tid in set(keep.tolist())
            assert abs(lp - torch.log(p[tid] / p[keep].sum()).item()) < 1e-4


def test_left_padded_batch_equals_one_by_one_and_seeds_reproduce(tiny):
    model, tok = tiny
    agent = HFAgent(model, tok, batch_size=8)
    greedy = SamplingParams(temperature=0, max_new_tokens=8)
    batched = agent.act(CONVS, greedy)
    single = [agent.act([c], greedy)[0] for c in CONVS]
    assert [o.token_ids for o in batched] == [o.token_ids for o in single]
    assert all(o.meta["logprobs"] == "model distribution (greedy)" for o in batched)
    sp = SamplingParams(temperature=1.0, max_new_tokens=8, seed=7)
    assert [o.token_ids for o in agent.act(CONVS, sp)] == [o.token_ids for o in agent.act(CONVS, sp)]
    assert [o.prompt_token_ids for o in batched] == [agent.render(c) for c in CONVS]


def test_end_of_turn_and_stop_strings_end_a_reply(tiny):
    model, tok = tiny
    agent = HFAgent(model, tok)
    free = agent.act(CONVS[:1], SamplingParams(temperature=0, max_new_tokens=16))[0]
    assert free.finish_reason == "length" and len(free.token_ids) == 16
    stop = free.text[6:9]
    cut = agent.act(CONVS[:1], SamplingParams(temperature=0, max_new_tokens=16, stop=(stop,)))[0]
    assert cut.finish_reason == "stop" and cut.text == free.text[: free.text.find(stop)]
    eos = tok.eos_token_id

    def force_eos(module, inputs, output):
        output[..., eos] += 1e4
        return output

    hook = model.lm_head.register_forward_hook(force_eos)
    try:
        out = agent.act(CONVS[:1], SamplingParams(temperature=1.0, max_new_tokens=16, seed=0))[0]
    finally:
        hook.remove()
    assert out.token_ids == [eos] and out.text == "" and out.finish_reason == "stop"  # the eos token is kept


def test_top_logprobs_chat_template_kwargs_and_train_mode(tiny):
    from madopd_agents.zoo import CHATML_TEMPLATE

    model, tok = tiny
    out = HFAgent(model, tok).act(CONVS[:1], SamplingParams(temperature=0, max_new_tokens=4), top_logprobs=3)[0]
    for tid, lp, alts in zip(out.token_ids, out.logprobs, out.meta["top_logprobs"]):
        assert alts[0] == (tid, lp) and len(alts) == 3  # greedy: the sampled token is the best one
    saved = tok.chat_template
    tok.chat_template = CHATML_TEMPLATE + "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}"
    try:
        off = tok.decode(HFAgent(model, tok, enable_thinking=False).render(CONVS[2]))
        on = tok.decode(HFAgent(model, tok, enable_thinking=True).render(CONVS[2]))
    finally:
        tok.chat_template = saved
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") and "<think>" not in on
    model.train()
    HFAgent(model, tok).act(CONVS[:1], SamplingParams(max_new_tokens=2))
    assert model.training  # the trainer's mode is restored after sampling
    model.eval()
