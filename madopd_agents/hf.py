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

Multi-turn prompts grow every turn, and re-encoding the whole conversation each turn is quadratic in
turns. With ``prefix_cache > 0`` the agent keeps the keys/values of the last sequences it processed
(prompt + reply) and, for each new prompt, reuses those of the longest common token prefix, so a turn
encodes only what the env added (the prefix-caching idea of vLLM's automatic prefix caching and
SGLang's RadixAttention, arXiv:2312.07104, done here per row). Matching is on token ids, so a reply the
chat template re-renders differently (thoughts stripped, another tokenisation) only shortens the reuse.
The cache is dropped whenever the model's weights change (an optimizer step, a weight load).
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
        prefix_cache: how many processed sequences keep their keys/values for reuse by later prompts
            that start with them (0: off; default ``max(16, 2 * batch_size)``). Each held token costs
            ``2 * layers * kv_heads * head_dim`` floats (46 KB fp32 for SmolLM2-135M).
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
        prefix_cache: int | None = None,
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
        rows = max(16, 2 * self.batch_size) if prefix_cache is None else int(prefix_cache)
        self.prefix_cache = PrefixCache(rows) if rows > 0 else None
        self.timings = {"prefill": 0.0, "decode": 0.0}  # cumulative wall seconds (``--profile`` reads them)

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
        if self.prefix_cache is not None:
            self.prefix_cache.check(self.model)
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
        pc = self.prefix_cache
        matches = [pc.match(ids) for ids, _ in rows] if pc is not None else [(None, 0)] * len(rows)
        # Every row feeds its last `width` tokens (left-padded when shorter) and takes the keys/values
        # of the tokens before them from the cache. A row needing fewer new tokens than the widest
        # re-encodes some cached ones instead of padding: the same compute, and no holes in the mask.
        width = max(len(ids) - min(n, len(ids) - 1) for (ids, _), (_, n) in zip(rows, matches))
        reused = [max(0, len(ids) - width) for ids, _ in rows]
        past = max(reused)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), past + width), dtype=torch.long)
        for r, (ids, _) in enumerate(rows):  # left padding: every prompt ends at the same column
            fed = ids[reused[r]:]
            input_ids[r, width - len(fed):] = torch.tensor(fed, dtype=torch.long)
            attention[r, past + width - len(ids):] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, past:]
        hits = past > 0 and pc is not None
        new_cache = (lambda: pc.batch([(e, c) for (e, _), c in zip(matches, reused)], past)) if hits \
            else DynamicCache
        cache = new_cache()
        try:  # logits of the last position only: a [B, L, vocab] prompt logits tensor is wasted memory
            out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                             past_key_values=cache, use_cache=True, logits_to_keep=1)
        except TypeError:  # architectures without logits_to_keep
            cache = new_cache()
            out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                             past_key_values=cache, use_cache=True)
        prefill_seconds = time.perf_counter() - t0
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
        self.timings["prefill"] += prefill_seconds
        self.timings["decode"] += elapsed - prefill_seconds
        if pc is not None:
            starts = [past + width - len(ids) for ids, _ in rows]
            pc.store(cache, [ids + toks for (ids, _), toks in zip(rows, tokens)], starts,
                     [len(ids) + len(toks) - 1 for (ids, _), toks in zip(rows, tokens)], matches)
        results = []
        for r, (ids, truncated) in enumerate(rows):
            text = texts[r] if texts[r] is not None else self.tokenizer.decode(tokens[r], skip_special_tokens=True)
            results.append(ActionOutput(
                text=text, token_ids=tokens[r], logprobs=logprobs[r], prompt_token_ids=list(ids),
                finish_reason=finish[r],
                meta={"batch_seconds": elapsed, "prefill_seconds": prefill_seconds, "prompt_truncated": truncated,
                      "backend": "hf", "prompt_tokens_reused": reused[r],
                      "logprobs": "sampling distribution (temperature, top_p)" if sp.temperature > 0
                      else "model distribution (greedy)",
                      **({"top_logprobs": tops[r]} if top_k else {})},
            ))
        return results

    def clear_cache(self) -> None:
        """Forget every held prefix (they are also dropped by themselves when the weights change)."""
        if self.prefix_cache is not None:
            self.prefix_cache.clear()

    def close(self) -> None:
        """Drop the references to the model (the caller may still hold its own)."""
        self.model = None
        self.clear_cache()


class PrefixCache:
    """Keys/values of recently processed token sequences, reused by prompts that start with them.

    Each entry is one row's sequence (prompt + reply, without the reply's last token, which was
    never fed) and its per-layer keys/values ``[kv_heads, length, head_dim]``. A prompt takes the
    entry with the longest common token prefix; an entry that a new sequence extends is replaced by
    it, and beyond ``max_rows`` the least recently used entries go. Holds only models whose cache is
    made of plain (full-attention) ``DynamicLayer`` s; anything else is simply not stored.
    """

    def __init__(self, max_rows: int):
        self.max_rows = max_rows
        self._entries: list[_Entry] = []
        self._clock = 0
        self._weights: tuple[tuple[int, int], ...] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries = []

    def check(self, model: Any) -> None:
        """Drop everything if any parameter changed since the last call (in-place updates bump a
        tensor's version counter; a reassigned parameter has a new storage)."""
        weights = tuple((p.data_ptr(), p._version) for p in model.parameters())
        if weights != self._weights:
            self.clear()
            self._weights = weights

    def match(self, ids: list[int]) -> tuple[_Entry | None, int]:
        """The entry sharing the longest prefix with ``ids``, and that prefix's length."""
        import numpy as np

        best: tuple[_Entry | None, int] = (None, 0)
        query = np.asarray(ids, dtype=np.int64)
        for entry in self._entries:
            m = min(len(query), len(entry.ids))
            same = query[:m] == entry.ids[:m]
            n = m if bool(same.all()) else int(same.argmin())
            if n > best[1]:
                best = (entry, n)
        if best[0] is not None:
            self._clock += 1
            best[0].used = self._clock
        return best

    def batch(self, rows: list[tuple[_Entry | None, int]], past: int) -> Any:
        """A ``DynamicCache`` holding, per row, the first ``n`` cached positions right-aligned to
        column ``past`` (zeros, masked out, before them)."""
        import torch
        from transformers import DynamicCache

        ref = next(e for e, n in rows if e is not None and n > 0)
        layers = []
        for layer, (k0, v0) in enumerate(ref.kv):
            k = k0.new_zeros((len(rows), k0.shape[0], past, k0.shape[2]))
            v = v0.new_zeros((len(rows), v0.shape[0], past, v0.shape[2]))
            for r, (entry, n) in enumerate(rows):
                if entry is not None and n > 0:
                    k[r, :, past - n:] = entry.kv[layer][0][:, :n]
                    v[r, :, past - n:] = entry.kv[layer][1][:, :n]
            layers.append((k, v))
        return DynamicCache(ddp_cache_data=layers)

    def store(self, cache: Any, seqs: list[list[int]], starts: list[int], lengths: list[int],
              matches: list[tuple[_Entry | None, int]]) -> None:
        """Keep row ``r``'s keys/values of ``seqs[r][:lengths[r]]``, found from column ``starts[r]``."""
        import numpy as np
        from transformers.cache_utils import DynamicLayer

        if not all(type(layer) is DynamicLayer for layer in cache.layers):
            return  # sliding-window / hybrid caches: positions are not simply columns
        for entry, n in matches:  # the new sequence contains the whole entry: it supersedes it
            if entry is not None and n == len(entry.ids) and entry in self._entries:
                self._entries.remove(entry)
        for r, (seq, start, length) in enumerate(zip(seqs, starts, lengths)):
            if length < 1:
                continue
            kv = [(layer.keys[r, :, start:start + length].clone(), layer.values[r, :, start:start + length].clone())
                  for layer in cache.layers]
            self._clock += 1
            self._entries.append(_Entry(np.asarray(seq[:length], dtype=np.int64), kv, self._clock))
        self._entries.sort(key=lambda e: e.used, reverse=True)
        del self._entries[self.max_rows:]


class _Entry:
    """One cached sequence: its token ids, its per-layer ``(keys, values)`` and when it was last used."""

    __slots__ = ("ids", "kv", "used")

    def __init__(self, ids: Any, kv: list[tuple[Any, Any]], used: int):
        self.ids, self.kv, self.used = ids, kv, used


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
