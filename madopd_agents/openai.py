"""The OpenAI-compatible HTTP backend: chat completions with token logprobs, retries, a concurrency cap.

Works with vLLM's OpenAI server, ``python -m madopd_agents.serve`` and hosted APIs. Stdlib only
(``urllib``), so it installs nowhere new. Per conversation one request asks for ``n`` choices.

- Logprobs: ``logprobs=true`` (+ ``top_logprobs=k``); they are whatever the server reports (vLLM: the
  model's raw distribution by default; ``madopd_agents.serve``: the sampling distribution, as HFAgent).
- Token ids: asked for with vLLM's ``return_tokens_as_token_ids`` (tokens come back as
  ``"token_id:123"``); servers without it give token strings only (``token_ids`` stays empty and the
  strings are in ``meta["tokens"]``).
- Retries: connection errors, timeouts, 408/409/429/5xx are retried ``max_retries`` times with
  exponential backoff and jitter (``Retry-After`` honoured); other 4xx fail at once with the server's
  message.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from madopd_agents.base import ActionOutput, Conversation, SamplingParams

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIError(RuntimeError):
    """The server refused a request or stayed unreachable after the retries."""


class OpenAIAgent:
    """An OpenAI-compatible chat endpoint as a batched agent.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1`` (default ``$OPENAI_BASE_URL``).
        model: the model name the server expects.
        api_key: bearer token (default ``$OPENAI_API_KEY``; none sent when unset).
        max_concurrency: requests in flight at once.
        max_retries: retries of a retryable failure (so ``max_retries + 1`` attempts).
        backoff: first retry delay in seconds, doubled each retry (plus up to 25% jitter).
        timeout: seconds per request.
        top_logprobs: alternatives per position (``meta["top_logprobs"]``: ``{token: logprob}`` per position).
        token_ids: ask for token ids (vLLM extension ``return_tokens_as_token_ids``).
        enable_thinking: sent as ``chat_template_kwargs`` (vLLM / madopd serve; Qwen3 thinking on/off).
        extra_body: more request fields, sent as is.
        check: probe ``GET /models`` at construction so a wrong URL fails now, not mid-eval.
    """

    def __init__(self, base_url: str | None = None, model: str = "default", *, name: str = "openai",
                 api_key: str | None = None, max_concurrency: int = 8, max_retries: int = 4, backoff: float = 0.5,
                 timeout: float = 120.0, top_logprobs: int = 0, token_ids: bool = True,
                 enable_thinking: bool | None = None, extra_body: dict[str, Any] | None = None, check: bool = True):
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise ValueError("the openai backend needs base_url (e.g. --agent-args base_url=http://127.0.0.1:8000/v1) "
                             "or $OPENAI_BASE_URL")
        if max_concurrency < 1 or max_retries < 0:
            raise ValueError("max_concurrency must be >= 1 and max_retries >= 0")
        self.base_url, self.model, self.name = base_url.rstrip("/"), model, name
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.max_concurrency, self.max_retries, self.backoff = max_concurrency, max_retries, backoff
        self.timeout, self.top_logprobs, self.token_ids = timeout, int(top_logprobs), bool(token_ids)
        self.extra_body = dict(extra_body or {})
        if enable_thinking is not None:
            self.extra_body.setdefault("chat_template_kwargs", {})["enable_thinking"] = bool(enable_thinking)
        self.attempts = 0  # requests sent, retries included (for tests and logs)
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="openai")
        if check:
            self.check()

    @classmethod
    def from_card(cls, card: Any) -> OpenAIAgent:
        from madopd_agents.zoo import ModelUnavailableError

        args = {"name": card.name, **{k: v for k, v in card.args.items() if k != "batch_size"}}  # local-only knob
        try:
            return cls(model=args.pop("served_model", None) or card.model or "default", **args)
        except OpenAIError as e:
            raise ModelUnavailableError(f"agent {card.name}: {e}") from e

    # -- HTTP -------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict[str, Any] | None = None, *, retries: int | None = None,
                 timeout: float | None = None) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        retries = self.max_retries if retries is None else retries
        last = ""
        for attempt in range(retries + 1):
            self.attempts += 1
            delay = self.backoff * 2 ** attempt * (1 + 0.25 * random.random())
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method=method)
                with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as e:
                detail = _error_message(e)
                if e.code not in RETRYABLE_STATUS:
                    raise OpenAIError(f"{method} {url} -> HTTP {e.code}: {detail}") from None
                last = f"HTTP {e.code}: {detail}"
                retry_after = e.headers.get("Retry-After") if e.headers else None
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    delay = max(delay, float(retry_after))
            except (urllib.error.URLError, socket.timeout, ConnectionError, TimeoutError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            if attempt < retries:
                time.sleep(delay)
        raise OpenAIError(f"{method} {url} failed after {retries + 1} attempts; last error: {last}")

    def check(self) -> None:
        """Fail within seconds, with the URL in the message, when no server answers."""
        try:
            self._request("GET", "/models", retries=1, timeout=min(self.timeout, 5.0))
        except OpenAIError as e:
            if "HTTP " in str(e):  # something answered (busy, or no /models route): the server is there
                return
            raise OpenAIError(f"no OpenAI-compatible server answers at {self.base_url} ({e}). Start one, e.g. "
                              f"`python -m madopd_agents.serve --model zoo:smollm2-135m --port 8000` or "
                              f"`vllm serve MODEL`, and pass base_url=http://HOST:PORT/v1") from None

    # -- the agent API ----------------------------------------------------------------------------
    def _payload(self, conversation: Conversation, sp: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": conversation, "temperature": sp.temperature,
                                "top_p": sp.top_p, "max_tokens": sp.max_new_tokens, "n": sp.n, "logprobs": True}
        if self.top_logprobs:
            body["top_logprobs"] = self.top_logprobs
        if sp.seed is not None:
            body["seed"] = sp.seed
        if sp.stop:
            body["stop"] = list(sp.stop)
        if self.token_ids:
            body["return_tokens_as_token_ids"] = True
        return {**body, **self.extra_body}

    def _one(self, conversation: Conversation, sp: SamplingParams) -> list[ActionOutput]:
        t0 = time.perf_counter()
        resp = self._request("POST", "/chat/completions", self._payload(conversation, sp))
        choices = sorted(resp.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != sp.n:
            raise OpenAIError(f"asked for n={sp.n} choices, the server returned {len(choices)}")
        outs = []
        for c in choices:
            content = (c.get("logprobs") or {}).get("content") or []
            tokens = [t.get("token", "") for t in content]
            ids = [_token_id(t) for t in tokens]
            meta: dict[str, Any] = {"backend": "openai", "seconds": time.perf_counter() - t0, "usage": resp.get("usage")}
            if self.top_logprobs:
                meta["top_logprobs"] = [{a["token"]: a["logprob"] for a in t.get("top_logprobs") or []} for t in content]
            if any(i is None for i in ids):
                ids, meta["tokens"] = [], tokens
            outs.append(ActionOutput(text=(c.get("message") or {}).get("content") or "", token_ids=ids,
                                     logprobs=[float(t["logprob"]) for t in content],
                                     finish_reason=c.get("finish_reason") or "stop", meta=meta))
        return outs

    def act(self, conversations: list[Conversation], sampling: SamplingParams,
            infos: list[dict[str, Any]] | None = None) -> list[ActionOutput]:
        results = list(self._pool.map(lambda c: self._one(c, sampling), conversations))
        return [o for outs in results for o in outs]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _token_id(token: str) -> int | None:
    if token.startswith("token_id:"):
        try:
            return int(token[len("token_id:"):])
        except ValueError:
            return None
    return None


def _error_message(e: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(e.read() or b"{}")
        err = payload.get("error", payload)
        return str(err.get("message", err)) if isinstance(err, dict) else str(err)
    except Exception:
        return e.reason if isinstance(e.reason, str) else str(e)
