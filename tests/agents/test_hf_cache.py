"""HFAgent's prefix cache: reusing a conversation's keys/values across turns changes no token."""

from __future__ import annotations

import torch

from madopd_agents.base import SamplingParams
from madopd_agents.hf import HFAgent

GREEDY = SamplingParams(temperature=0, max_new_tokens=10)


def _convs(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "system", "content": "You play a text game."},
             {"role": "user", "content": f"You are in room {i}. " * (1 + i % 3)}] for i in range(n)]


def _play(agent: HFAgent, turns: int, per_env: bool, sp: SamplingParams = GREEDY) -> tuple[list, list]:
    """Multi-turn: each reply goes back into its conversation, then a new observation."""
    convs, tokens, reused = _convs(5), [], []
    for turn in range(turns):
        outs = [agent.act([c], sp)[0] for c in convs] if per_env else agent.act(convs, sp)
        tokens.append([o.token_ids for o in outs])
        reused.append([o.meta["prompt_tokens_reused"] for o in outs])
        for i, (c, o) in enumerate(zip(convs, outs)):
            c += [{"role": "assistant", "content": o.text},
                  {"role": "user", "content": f"Turn {turn}: you see {'a box ' * (i + turn)}."}]
    return tokens, reused


def test_cached_batched_turns_equal_plain_per_env_turns(tiny):
    model, tok = tiny
    plain, plain_reused = _play(HFAgent(model, tok, prefix_cache=0), 4, per_env=True)
    agent = HFAgent(model, tok, batch_size=3)  # two forward batches per turn, cache on by default
    cached, reused = _play(agent, 4, per_env=False)
    assert cached == plain
    assert all(n == 0 for row in plain_reused for n in row)
    assert all(n > 0 for row in reused[1:] for n in row)  # later turns encode only the new tail
    assert 0 < len(agent.prefix_cache) <= agent.prefix_cache.max_rows


def test_diverging_prompts_and_small_capacity_still_equal_plain(tiny):
    model, tok = tiny
    agent, plain = HFAgent(model, tok, prefix_cache=2), HFAgent(model, tok, prefix_cache=0)
    base = _convs(1)[0]
    variants = [base, base + [{"role": "assistant", "content": "go north"}, {"role": "user", "content": "ok"}],
                base[:1] + [{"role": "user", "content": "a different first observation"}],
                base + [{"role": "assistant", "content": "go south"}, {"role": "user", "content": "ok"}], base]
    for conv in variants:  # each shares a different prefix with what the cache holds
        assert agent.act([conv, base], GREEDY)[0].token_ids == plain.act([conv], GREEDY)[0].token_ids
    assert len(agent.prefix_cache) <= 2


def test_weight_change_drops_the_cache(tiny):
    model, tok = tiny
    agent = HFAgent(model, tok)
    conv = _convs(1)
    agent.act(conv, GREEDY)
    assert len(agent.prefix_cache) == 1
    weight = model.lm_head.weight if not model.config.tie_word_embeddings else model.model.embed_tokens.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(1.5)  # what an optimizer step does: an in-place update
        out = agent.act(conv, GREEDY)[0]
        assert out.meta["prompt_tokens_reused"] == 0
        assert out.token_ids == HFAgent(model, tok, prefix_cache=0).act(conv, GREEDY)[0].token_ids
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_seeded_sampling_is_unchanged_by_the_cache(tiny):
    model, tok = tiny
    sp = SamplingParams(temperature=1.0, max_new_tokens=8, seed=5)
    plain, _ = _play(HFAgent(model, tok, prefix_cache=0), 3, per_env=False, sp=sp)
    cached, reused = _play(HFAgent(model, tok), 3, per_env=False, sp=sp)
    assert cached == plain and any(n > 0 for n in reused[-1])
