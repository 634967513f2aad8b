"""Teachers: the teacher's log-probabilities of the student's tokens, in the student's context.

A teacher answers :class:`ScoreRequest` s: a token sequence and the positions to score. For each
scored position ``t`` it returns (:class:`TokenScores`) ``log p_T(input_ids[t] | input_ids[:t])``
and, depending on the backend, the full next-token distribution or its top-k:

- :class:`HFTeacher` -- a local ``transformers`` model: full distribution (logits).
- :class:`VLLMTeacher` -- a ``vllm.LLM`` engine: prompt logprobs, top-k (vLLM is imported lazily).
- :class:`OpenAITeacher` -- an OpenAI-compatible ``/v1/completions`` server (vLLM's, SGLang's...)
  with ``echo`` + ``logprobs``: top-k.

Scores of every request are packed row by row (request 0's positions, then request 1's...), the
same order as the student's rows in :mod:`madopd_distill.batch`.

**Sparse teachers: the top-k + remainder approximation.** A server teacher gives the log-probs of
its top-k tokens at each position, not the whole distribution. The divergences then compare the
two distributions *coarse-grained* onto k + 1 outcomes: the teacher's k tokens and "any other
token", whose mass is ``1 - sum(top-k probs)`` for either model (see
``divergences.topk_logprobs``). Coarse-graining never increases a KL or JSD (data-processing
inequality), so this is a lower bound of the full-vocabulary divergence that becomes exact as k
grows; its gradient moves the student's mass on the teacher's top-k tokens and on the rest as a
block. The other common choice -- renormalising both over the top-k only (MAD-OPD's
``jsd_top_k``) -- is available as ``topk_mode="renorm"``; it ignores how much mass the student
puts outside the teacher's top-k.

**Tokenizers.** Scores are per token id, so a teacher must use the student's tokenizer; every
teacher checks that at construction (:func:`check_same_tokenizer`) and fails with a clear error.
"""

from __future__ import annotations

import hashlib
import json
import math
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import torch


class TokenizerMismatchError(ValueError):
    """Teacher and student tokenize differently: token-level scores would be meaningless."""


class TeacherUnreachableError(ConnectionError):
    """A served teacher stopped answering (its server died or the network went); training stops at once
    with this one line, and a rerun with ``resume=true`` continues from the last checkpoint."""


@dataclass(frozen=True)
class ScoreRequest:
    """Score ``input_ids[t]`` for every ``t`` in ``positions`` (each ``t >= 1``), in order."""

    input_ids: Sequence[int]
    positions: Sequence[int]

    def __post_init__(self) -> None:
        if any(p < 1 or p >= len(self.input_ids) for p in self.positions):
            raise ValueError(f"positions must lie in [1, {len(self.input_ids)}); got {list(self.positions)[:8]}...")


@dataclass
class TokenScores:
    """A teacher's scores of N token positions (rows), packed over requests.

    Attributes:
        token_logprobs: ``[N]`` log-prob of the scored token.
        logits: ``[N, V]`` full next-token logits (local teachers), else ``None``.
        topk_ids: ``[N, K]`` the teacher's top-k token ids (sparse teachers), else ``None``.
        topk_logprobs: ``[N, K]`` their log-probs.
    """

    token_logprobs: torch.Tensor
    logits: torch.Tensor | None = None
    topk_ids: torch.Tensor | None = None
    topk_logprobs: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.token_logprobs.shape[0]
        for name in ("logits", "topk_ids", "topk_logprobs"):
            x = getattr(self, name)
            if x is not None and x.shape[0] != n:
                raise ValueError(f"TokenScores.{name} has {x.shape[0]} rows, token_logprobs has {n}")
        if (self.topk_ids is None) != (self.topk_logprobs is None):
            raise ValueError("topk_ids and topk_logprobs come together")

    @property
    def num_rows(self) -> int:
        return int(self.token_logprobs.shape[0])

    @property
    def full(self) -> bool:
        return self.logits is not None

    @staticmethod
    def cat(parts: Sequence[TokenScores]) -> TokenScores:
        if not parts:
            raise ValueError("nothing to concatenate")

        def join(name: str) -> torch.Tensor | None:
            xs = [getattr(p, name) for p in parts]
            if all(x is None for x in xs):
                return None
            if any(x is None for x in xs):
                raise ValueError(f"cannot join scores with and without {name}")
            return torch.cat(xs, 0)

        return TokenScores(join("token_logprobs"), join("logits"), join("topk_ids"), join("topk_logprobs"))

    def to(self, device: torch.device | str) -> TokenScores:
        """The same scores on ``device`` (the student's: the loss mixes them with its tensors)."""
        move = lambda x: None if x is None else x.to(device)  # noqa: E731
        return TokenScores(move(self.token_logprobs), move(self.logits), move(self.topk_ids), move(self.topk_logprobs))

    def select(self, rows: torch.Tensor | slice) -> TokenScores:
        pick = lambda x: None if x is None else x[rows]  # noqa: E731
        return TokenScores(self.token_logprobs[rows], pick(self.logits), pick(self.topk_ids), pick(self.topk_logprobs))


@runtime_checkable
class Teacher(Protocol):
    """Anything that scores token sequences. ``top_k=None`` asks for the full distribution (only
    local teachers have it; a sparse teacher raises)."""

    name: str

    def score(self, requests: Sequence[ScoreRequest], *, top_k: int | None = None) -> TokenScores: ...


# -- tokenizer checks ------------------------------------------------------------------------------
def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of the vocabulary (token -> id) and the special tokens."""
    vocab = sorted(tokenizer.get_vocab().items())
    specials = sorted(str(x) for x in getattr(tokenizer, "all_special_tokens", []))
    return hashlib.sha256(json.dumps([vocab, specials]).encode()).hexdigest()[:16]


def check_same_tokenizer(student: Any, teacher: Any, teacher_name: str = "teacher") -> None:
    """Raise :class:`TokenizerMismatchError` unless both tokenizers map the same tokens to the same ids."""
    if student is teacher:
        return
    sv, tv = student.get_vocab(), teacher.get_vocab()
    if sv != tv:
        only_s = len(set(sv) - set(tv))
        only_t = len(set(tv) - set(sv))
        moved = sum(1 for k in set(sv) & set(tv) if sv[k] != tv[k])
        raise TokenizerMismatchError(
            f"{teacher_name} does not share the student's tokenizer (student vocab {len(sv)}, teacher {len(tv)}; "
            f"{only_s} tokens only in the student's, {only_t} only in the teacher's, {moved} with different ids). "
            "Token-level distillation needs one tokenizer; pick a teacher from the student's model family "
            "(cross-tokenizer distillation, e.g. ULD/GOLD, is not implemented here)."
        )
    if tokenizer_fingerprint(student) != tokenizer_fingerprint(teacher):
        raise TokenizerMismatchError(f"{teacher_name}'s special tokens differ from the student's")


# -- local transformers teacher --------------------------------------------------------------------
def _pad(requests: Sequence[ScoreRequest], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r.input_ids) for r in requests)
    ids = torch.full((len(requests), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(requests), width), dtype=torch.long)
    for i, r in enumerate(requests):  # right padding: positions keep their index
        ids[i, : len(r.input_ids)] = torch.as_tensor(list(r.input_ids), dtype=torch.long)
        att[i, : len(r.input_ids)] = 1
    return ids, att


def causal_lm_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor,
                     cols: torch.Tensor, return_hidden: bool = False) -> Any:
    """Next-token logits ``[N, V]`` of a causal LM predicting ``input_ids[rows, cols]``
    (with ``return_hidden``: ``(logits, hidden)``, ``hidden`` the ``[N, H]`` last hidden state there).

    Only the needed positions are projected to the vocabulary (``logits_to_keep`` with the union of
    ``cols - 1``), so no ``[B, L, V]`` tensor exists for prompt/observation positions (at a 152k
    vocab that is 2.5 GB per 4k tokens). The call goes through ``model(...)``, so DDP/FSDP
    wrappers see a normal forward. Models without ``logits_to_keep`` fall back to full logits.
    """
    device = input_ids.device
    keep, where = torch.unique(cols - 1, sorted=True, return_inverse=True)
    extra = {"output_hidden_states": True} if return_hidden else {}
    try:
        out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep.to(device),
                    use_cache=False, **extra)
        logits = out.logits[rows.to(device), where.to(device)]
    except TypeError:  # an architecture without logits_to_keep
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra)
        logits = out.logits[rows.to(device), (cols - 1).to(device)]
    if not return_hidden:
        return logits
    return logits, out.hidden_states[-1][rows.to(device), (cols - 1).to(device)]


def _rows(requests: Sequence[ScoreRequest]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.cat([torch.full((len(r.positions),), i, dtype=torch.long) for i, r in enumerate(requests)])
    cols = torch.cat([torch.as_tensor(list(r.positions), dtype=torch.long) for r in requests])
    return rows, cols


class HFTeacher:
    """A local ``transformers`` causal LM as teacher: full next-token distributions.

    Args:
        model: the teacher model (put in eval mode; no gradient flows into it).
        tokenizer: its tokenizer (checked against ``student_tokenizer``).
        student_tokenizer: the student's tokenizer; ``None`` skips the check (same object assumed).
        name: for logs.
        batch_size: requests per forward pass.
    """

    def __init__(self, model: Any, tokenizer: Any, *, student_tokenizer: Any = None, name: str = "teacher",
                 batch_size: int = 8):
        if student_tokenizer is not None:
            check_same_tokenizer(student_tokenizer, tokenizer, name)
        self.model, self.tokenizer, self.name, self.batch_size = model.eval(), tokenizer, name, batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @torch.no_grad()
    def score(self, requests: Sequence[ScoreRequest], *, top_k: int | None = None) -> TokenScores:
        parts = []
        for s in range(0, len(requests), self.batch_size):
            chunk = requests[s: s + self.batch_size]
            ids, att = _pad(chunk, self.pad_id)
            rows, cols = _rows(chunk)
            dev = next(self.model.parameters()).device
            # Left on the teacher's device (the loop moves scores to the student's): no [N, V] round trip.
            logits = causal_lm_logits(self.model, ids.to(dev), att.to(dev), rows, cols).float()
            targets = ids[rows, cols].to(dev)
            lp = torch.log_softmax(logits, -1)
            tok = lp.gather(-1, targets[:, None]).squeeze(-1)
            if top_k is None:
                parts.append(TokenScores(tok, logits=logits))
            else:
                v, i = lp.topk(top_k, -1)
                parts.append(TokenScores(tok, topk_ids=i, topk_logprobs=v))
        return TokenScores.cat(parts)


# -- vLLM teacher ----------------------------------------------------------------------------------
VLLM_MISSING = (
    "VLLMTeacher needs vLLM, which is not installed. On a GPU machine: pip install vllm "
    "(on an x86 CPU machine: make setup-vllm, then run with .venv-vllm/bin/python and VLLM_CPU_KVCACHE_SPACE=1). "
    "Without vLLM use HFTeacher (local model) or OpenAITeacher (a served model)."
)


class VLLMTeacher:
    """A ``vllm.LLM`` engine as teacher, through prompt logprobs: top-k per position.

    ``prompt_logprobs=k`` makes vLLM return, for every prompt position, the log-prob of the actual
    token plus the top-k; one generated token is requested and discarded.

    Args:
        model: a model path (or an existing ``vllm.LLM`` engine).
        student_tokenizer: checked against the engine's tokenizer.
        top_k: default k when ``score`` is called with ``top_k=None`` (vLLM has no full distribution).
        engine_kwargs: passed to ``vllm.LLM`` (e.g. ``dtype``, ``max_model_len``, ``enforce_eager``).
    """

    def __init__(self, model: Any, *, student_tokenizer: Any = None, name: str = "vllm-teacher", top_k: int = 20,
                 **engine_kwargs: Any):
        try:
            import vllm
        except ImportError as e:
            raise ImportError(VLLM_MISSING) from e
        self.llm = model if isinstance(model, vllm.LLM) else vllm.LLM(model=str(model), **engine_kwargs)
        if student_tokenizer is not None:
            check_same_tokenizer(student_tokenizer, self.llm.get_tokenizer(), name)
        self.name, self.default_k = name, top_k
        self._vllm = vllm

    def score(self, requests: Sequence[ScoreRequest], *, top_k: int | None = None) -> TokenScores:
        k = top_k or self.default_k
        params = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=k, temperature=1.0)
        prompts = [{"prompt_token_ids": list(r.input_ids)} for r in requests]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        tok, ids, lps = [], [], []
        for r, out in zip(requests, outs):
            plp = out.prompt_logprobs  # list (None at position 0) of {token_id: Logprob}
            for t in r.positions:
                entry = plp[t]
                target = r.input_ids[t]
                tok.append(entry[target].logprob)
                top = sorted(((lp.rank, tid, lp.logprob) for tid, lp in entry.items() if lp.rank is not None and lp.rank <= k))
                top = [(tid, v) for _, tid, v in top][:k]
                ids.append([tid for tid, _ in top])
                lps.append([v for _, v in top])
        return _sparse_scores(tok, ids, lps, k)

    def close(self) -> None:
        """Stop the engine now (its engine-core process and KV cache), as ``VLLMAgent.close``."""
        from madopd_agents.vllm import shutdown_engine

        if self.llm is not None:
            shutdown_engine(self.llm)
        self.llm = None


def _sparse_scores(tok: list[float], ids: list[list[int]], lps: list[list[float]], k: int) -> TokenScores:
    """Pack ragged top-k lists into ``[N, K]`` tensors; short rows padded with id 0 at -inf."""
    n = len(tok)
    id_t = torch.zeros((n, k), dtype=torch.long)
    lp_t = torch.full((n, k), -math.inf)
    for i, (a, b) in enumerate(zip(ids, lps)):
        id_t[i, : len(a)] = torch.as_tensor(a[:k], dtype=torch.long)
        lp_t[i, : len(b)] = torch.as_tensor(b[:k], dtype=torch.float32)
    return TokenScores(torch.as_tensor(tok, dtype=torch.float32), topk_ids=id_t, topk_logprobs=lp_t)


# -- OpenAI-compatible teacher ---------------------------------------------------------------------
class OpenAITeacher:
    """A teacher behind an OpenAI-compatible ``/v1/completions`` endpoint (vLLM serve, SGLang...).

    The request sends the token ids as the prompt with ``echo=true``, ``max_tokens=1`` and
    ``logprobs=k``, plus ``return_tokens_as_token_ids=true`` (vLLM's extension) so top-k entries come
    keyed ``"token_id:<id>"`` rather than as strings that would need re-tokenising. The server's
    tokenizer is checked with ``/tokenize`` (vLLM) on a probe text unless ``tokenizer_check=False``.

    Args:
        base_url: e.g. ``http://localhost:8000/v1``.
        model: the served model name.
        student_tokenizer: used for the tokenizer check.
        top_k: default k (the OpenAI API caps ``logprobs``; vLLM allows up to its ``max_logprobs``).
        timeout: seconds per HTTP request.
        api_key: sent as a bearer token when given.
    """

    PROBE = "The quick brown fox -- 42 jumps; <|im_end|>\nover the lazy dog."

    def __init__(self, base_url: str, model: str, *, student_tokenizer: Any = None, name: str = "openai-teacher",
                 top_k: int = 20, timeout: float = 120.0, api_key: str | None = None, tokenizer_check: bool = True):
        self.base_url, self.model, self.name = base_url.rstrip("/"), model, name
        self.default_k, self.timeout, self.api_key = top_k, timeout, api_key
        if tokenizer_check:
            if student_tokenizer is None:
                raise ValueError("OpenAITeacher needs student_tokenizer to check the server's tokenizer "
                                 "(or tokenizer_check=False if you know they match)")
            self._check_tokenizer(student_tokenizer)

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        root = self.base_url[: -len("/v1")] if path == "/tokenize" and self.base_url.endswith("/v1") else self.base_url
        req = urllib.request.Request(root + path, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{self.name}: {root + path} answered HTTP {e.code}: {e.read()[:500]!r}") from e
        except urllib.error.URLError as e:
            raise TeacherUnreachableError(f"{self.name}: cannot reach {root + path}: {e.reason}") from e
        except (TimeoutError, OSError) as e:  # refused / timed out mid-request
            raise TeacherUnreachableError(f"{self.name}: cannot reach {root + path}: {e}") from e

    def _check_tokenizer(self, student_tokenizer: Any) -> None:
        try:
            theirs = self._post("/tokenize", {"model": self.model, "prompt": self.PROBE, "add_special_tokens": False})
        except RuntimeError as e:
            raise TokenizerMismatchError(f"{self.name}: the server has no /tokenize endpoint to check its tokenizer "
                                         f"({e}); pass tokenizer_check=False if you know it matches the student's") from e
        ours = student_tokenizer(self.PROBE, add_special_tokens=False)["input_ids"]
        if list(theirs.get("tokens", [])) != list(ours):
            raise TokenizerMismatchError(f"{self.name} tokenizes differently from the student "
                                         f"(probe: server {theirs.get('tokens')[:12]}..., student {ours[:12]}...)")

    def score(self, requests: Sequence[ScoreRequest], *, top_k: int | None = None) -> TokenScores:
        k = top_k or self.default_k
        tok, ids, lps = [], [], []
        for r in requests:
            out = self._post("/completions", {"model": self.model, "prompt": list(r.input_ids), "echo": True,
                                              "max_tokens": 1, "logprobs": k, "temperature": 1.0,
                                              "return_tokens_as_token_ids": True})
            lp = out["choices"][0]["logprobs"]
            for t in r.positions:
                if lp["token_logprobs"][t] is None:
                    raise RuntimeError(f"{self.name}: no logprob for prompt position {t}")
                tok.append(float(lp["token_logprobs"][t]))
                top = sorted((lp["top_logprobs"][t] or {}).items(), key=lambda kv: -kv[1])[:k]
                ids.append([_token_id(key) for key, _ in top])
                lps.append([float(v) for _, v in top])
        return _sparse_scores(tok, ids, lps, k)


def _token_id(key: str) -> int:
    if not key.startswith("token_id:"):
        raise RuntimeError(f"the server returned top-k keyed by text ({key!r}); it must support "
                           "return_tokens_as_token_ids (vLLM >= 0.6) so scores map to token ids")
    return int(key.split(":", 1)[1])
