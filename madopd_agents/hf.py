"""The transformers backend: a batched, KV-cached sampler that returns what it sampled, token by token.

Built from a folder/repo id (``HFAgent.from_pretrained``) or from a live ``(model, tokenizer)`` pair
(``HFAgent(model, tokenizer)``), so a trainer samples from the very student it is updating.

Why a hand-written decoding loop rather than ``model.generate``: ``generate`` silently applies the
model's ``generation_config`` (Qwen3 ships top_k=20, temperature=0.6...), so the distribution it samples
from is not the one the caller asked for; on-policy distillation needs the exact sampling distribution
and its per-token log-probabilities. The loop below applies only ``SamplingParams``.

Log-probabilities (``ActionOutput.logprobs``) are those of the distribution each token was drawn from:
``log_softmax(logits / temperature)``, restricted to the top-p nucleus and renormalised when
``top_p < 1``. With ``temperature == 0`` (greedy) the token is the argmax and its logprob is taken from
``log_softmax(logits)`` (temperature 1, no truncation), i.e. the model's own distribution. Computed in
float32 whatever the model dtype. ``token_ids`` include the end-of-turn token when the model emitted it.
"""

from __future__ import annotations

import time
from typing import Any

from madopd_agents.base import ActionOutput, Conversation, SamplingParams


class HFAgent:
    """A transformers causal LM as a batched :class:`~madopd_agents.base.Agent`.

    Args:
        model: a ``*ForCausalLM`` (any device/dtype); it is switched to eval mode while sampling and
            restored afterwards.
        tokenizer: its tokenizer, with a chat template (ChatML is used when it has none).
        name: the agent's name in results.
        batch_size: rows (conversations x n) per forward pass.
        enable_thinking: Qwen3-style templates: ``True``/``False`` switches thinking on/off; ``None``
            leaves the template's default.
        chat_template_kwargs: extra variables for the chat template.
        max_prompt_tokens: longer prompts keep their last tokens (``meta["prompt_truncated"]``);
            default: the model's context length minus ``max_new_tokens``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "hf",
        batch_size: int = 8,
        enable_thinking: bool | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        max_prompt_tokens: int | None = None,
    ):
        from madopd_agents.zoo import CHATML_TEMPLATE

        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.batch_size = max(1, int(batch_size))
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        if enable_thinking is not None:
            self.chat_template_kwargs["enable_thinking"] = bool(enable_thinking)
        self.max_prompt_tokens = max_prompt_tokens
        if not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = CHATML_TEMPLATE
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.eos_ids = self._eos_ids()

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, dtype: str = "auto", device: str | None = None,
                        **kwargs: Any) -> HFAgent:
        """Load from a local folder, the local HF cache (repo id) or the zoo (``zoo:smollm2-135m``).

        Missing weights fail at once with :class:`~madopd_agents.zoo.ModelUnavailableError` saying how to
        provide them; nothing is downloaded.
        """
        from madopd_agents.zoo import resolve_model

        path = resolve_model(name_or_path)  # before importing torch: missing weights fail in a second

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype: Any = dtype
        if dtype == "auto":
            # bf16 on GPU; fp32 on CPU, where bf16 matmuls are slower on most machines and less exact.
            torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        elif isinstance(dtype, str):
            torch_dtype = getattr(torch, dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype, local_files_only=True).to(device)
        kwargs.setdefault("name", name_or_path)
        return cls(model, tokenizer, **kwargs)

    @classmethod
    def from_card(cls, card: Any) -> HFAgent:
        """From an agent card (``madopd_agents.registry``): ``model`` + ``args``."""
        if not card.model:
            raise ValueError(f"agent card {card.name!r}: the hf backend needs a model")
        return cls.from_pretrained(card.model, **{"name": card.name, **card.args})

    # -- prompts ------------------------------------------------------------------------------
    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        gen = getattr(self.model, "generation_config", None)
        extra = getattr(gen, "eos_token_id", None) if gen is not None else None
        ids.update(extra if isinstance(extra, (list, tuple)) else [extra])
        for tok in ("<|im_end|>", "<|endoftext|>"):
            tid = self.tokenizer.convert_tokens_to_ids(tok)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id:
                ids.add(tid)
        return {i for i in ids if i is not None}

    def render(self, conversation: Conversation) -> list[int]:
        """The prompt token ids: the chat template with the assistant turn opened."""
        ids = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                                 return_dict=False, **self.chat_template_kwargs)
        return list(ids)

    def _context_limit(self, max_new_tokens: int) -> int:
        if self.max_prompt_tokens is not None:
            return self.max_prompt_tokens
        ctx = getattr(self.model.config, "max_position_embeddings", None) or 32768
        return max(16, ctx - max_new_tokens)

    # -- sampling -----------------------------------------------------------------------------
    def act(self, conversations: list[Conversation], sampling: SamplingParams,
            infos: list[dict[str, Any]] | None = None, *, top_logprobs: int = 0) -> list[ActionOutput]:
        """``n`` samples per conversation, in order. ``top_logprobs > 0`` also returns, per sampled
        position, the ``top_logprobs`` most likely ``(token_id, logprob)`` pairs of the same
        distribution in ``meta["top_logprobs"]`` (what an OpenAI-compatible server reports)."""
        import torch

        limit = self._context_limit(sampling.max_new_tokens)
        prompts = []
        for conv in conversations:
            ids = self.render(conv)
            prompts.append((ids[-limit:], len(ids) > limit))
        rows = [p for p in prompts for _ in range(sampling.n)]  # each conversation's n samples, in order
        generator = None
        device = next(self.model.parameters()).device
        if sampling.seed is not None:
            generator = torch.Generator(device=device).manual_seed(int(sampling.seed))
        outputs: list[ActionOutput] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(rows), self.batch_size):
                    outputs += self._sample_batch(rows[start:start + self.batch_size], sampling, generator, device,
                                                  top_logprobs)
        finally:
            self.model.train(was_training)
        return outputs

    def _sample_batch(self, rows: list[tuple[list[int], bool]], sp: SamplingParams, generator: Any,
                      device: Any, top_k: int = 0) -> list[ActionOutput]:
        import torch
        from transformers import DynamicCache

        t0 = time.perf_counter()
        pad = self.tokenizer.pad_token_id
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (ids, _) in enumerate(rows):  # left padding: every prompt ends at the same column
            input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[r, width - len(ids):] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        try:  # logits of the last position only: a [B, L, vocab] prompt logits tensor is wasted memory
            out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                             past_key_values=cache, use_cache=True, logits_to_keep=1)
        except TypeError:  # architectures without logits_to_keep
            cache = DynamicCache()
            out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                             past_key_values=cache, use_cache=True)
        done = torch.zeros(len(rows), dtype=torch.bool, device=device)
        tokens: list[list[int]] = [[] for _ in rows]
        logprobs: list[list[float]] = [[] for _ in rows]
        tops: list[list[list[tuple[int, float]]]] = [[] for _ in rows]
        finish = ["length"] * len(rows)
        texts: list[str | None] = [None] * len(rows)
        for _ in range(sp.max_new_tokens):
            logits = out.logits[:, -1, :].float()
            token, lp, dist = _sample(logits, sp, generator)
            token = torch.where(done, torch.full_like(token, pad), token)
            tok_list, lp_list = token.tolist(), lp.tolist()
            if top_k:
                top_lp, top_ids = dist.topk(min(top_k, dist.shape[-1]), dim=-1)
                top_pairs = [list(zip(i, v)) for i, v in zip(top_ids.tolist(), top_lp.tolist())]
            for r in range(len(rows)):
                if done[r]:
                    continue
                tokens[r].append(tok_list[r])
                logprobs[r].append(lp_list[r])
                if top_k:
                    tops[r].append(top_pairs[r])
                if tok_list[r] in self.eos_ids:
                    done[r], finish[r] = True, "stop"
                elif sp.stop:
                    text = self.tokenizer.decode(tokens[r], skip_special_tokens=True)
                    cut = _first_stop(text, sp.stop)
                    if cut is not None:
                        done[r], finish[r], texts[r] = True, "stop", text[:cut]
            if bool(done.all()):
                break
            attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
            positions = positions[:, -1:] + 1
            out = self.model(input_ids=token[:, None], attention_mask=attention, position_ids=positions,
                             past_key_values=cache, use_cache=True)
        elapsed = time.perf_counter() - t0
        results = []
        for r, (ids, truncated) in enumerate(rows):
            text = texts[r] if texts[r] is not None else self.tokenizer.decode(tokens[r], skip_special_tokens=True)
            results.append(ActionOutput(
                text=text, token_ids=tokens[r], logprobs=logprobs[r], prompt_token_ids=list(ids),
                finish_reason=finish[r],
                meta={"batch_seconds": elapsed, "prompt_truncated": truncated, "backend": "hf",
                      "logprobs": "sampling distribution (temperature, top_p)" if sp.temperature > 0
                      else "model distribution (greedy)",
                      **({"top_logprobs": tops[r]} if top_k else {})},
            ))
        return results

    def close(self) -> None:
        """Drop the references to the model (the caller may still hold its own)."""
        self.model = None


def _sample(logits: Any, sp: SamplingParams, generator: Any) -> tuple[Any, Any, Any]:
    """One token per row, its log-probability, and the log-distribution it was drawn from."""
    import torch

    if sp.temperature == 0:
        logp = torch.log_softmax(logits, dim=-1)
        token = logits.argmax(dim=-1)
        return token, logp.gather(1, token[:, None]).squeeze(1), logp
    logp = torch.log_softmax(logits / sp.temperature, dim=-1)
    if sp.top_p < 1.0:
        sorted_lp, order = logp.sort(dim=-1, descending=True)
        mass_before = sorted_lp.exp().cumsum(-1) - sorted_lp.exp()
        drop_sorted = mass_before >= sp.top_p  # keep the smallest prefix whose mass reaches top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logp = torch.log_softmax(logp.masked_fill(drop, float("-inf")), dim=-1)
    token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
    return token, logp.gather(1, token[:, None]).squeeze(1), logp


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None
