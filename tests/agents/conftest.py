"""A tiny Qwen3 + locally trained tokenizer, shared by the agent tests (built in ~1 s, no download)."""

import pytest


@pytest.fixture(scope="session")
def tiny():
    import torch

    from madopd_agents import zoo

    torch.set_num_threads(1)
    tok = zoo.build_tokenizer(zoo.stdlib_corpus(200_000), vocab_size=1024)
    model = zoo.tiny_qwen3(tok, size="S", seed=0)
    return model, tok
