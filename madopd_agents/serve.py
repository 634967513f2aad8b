"""A small OpenAI-compatible chat server for a local transformers model, with token logprobs.

    python -m madopd_agents.serve --model zoo:smollm2-135m --port 8000
    python -m madopd_envs.eval --agent smollm2-135m --agent-args backend=openai,base_url=http://127.0.0.1:8000/v1 ...

It serves ``POST /v1/chat/completions`` (``logprobs``/``top_logprobs``, ``n``, ``seed``, ``stop``, and
vLLM's ``return_tokens_as_token_ids`` and ``chat_template_kwargs`` extensions), ``GET /v1/models`` and
``GET /health``. Uses: a black-box teacher for distillation tests, the reference server the
OpenAI-compatible backend is tested against, and serving a model to several processes on one machine.
It binds to loopback only (no authentication); requests run one at a time (one model, one lock).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from madopd_agents.base import SamplingParams

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_BODY = 16 * 1024 * 1024


class BadRequest(ValueError):
    pass


def _token_entry(tok: Any, tid: int, logprob: float, as_ids: bool) -> dict[str, Any]:
    text = f"token_id:{tid}" if as_ids else tok.decode([tid])
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


class ChatService:
    """Turns chat-completion requests into ``HFAgent.act`` calls (one at a time)."""

    def __init__(self, agent: Any, model_name: str | None = None):
        self.agent = agent
        self.model_name = model_name or agent.name
        self.lock = threading.Lock()

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "owned_by": "madopd"}]}

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in messages):
            raise BadRequest("'messages' must be a non-empty list of {role, content} objects with text content")
        if body.get("stream"):
            raise BadRequest("stream=true is not supported by this server")
        if body.get("model") not in (None, self.model_name):
            raise BadRequest(f"unknown model {body.get('model')!r}; this server serves {self.model_name!r}")
        stop = body.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        try:
            sp = SamplingParams(
                temperature=float(body.get("temperature", 1.0)), top_p=float(body.get("top_p", 1.0)),
                max_new_tokens=int(body.get("max_completion_tokens") or body.get("max_tokens") or 256),
                n=int(body.get("n", 1)), seed=body.get("seed"), stop=stop)
        except (TypeError, ValueError) as e:
            raise BadRequest(str(e)) from e
        want_logprobs = bool(body.get("logprobs"))
        top = int(body.get("top_logprobs") or 0)
        if top and not want_logprobs:
            raise BadRequest("top_logprobs requires logprobs=true")
        if not 0 <= top <= 20:
            raise BadRequest("top_logprobs must be between 0 and 20")
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        kwargs = body.get("chat_template_kwargs") or {}
        with self.lock:
            saved = dict(self.agent.chat_template_kwargs)
            self.agent.chat_template_kwargs.update(kwargs)
            try:
                outs = self.agent.act([messages], sp, top_logprobs=top)
            finally:
                self.agent.chat_template_kwargs = saved
        tok = self.agent.tokenizer
        choices = []
        for i, out in enumerate(outs):
            choice: dict[str, Any] = {"index": i, "message": {"role": "assistant", "content": out.text},
                                      "finish_reason": out.finish_reason, "logprobs": None}
            if want_logprobs:
                tops = out.meta.get("top_logprobs") or [[] for _ in out.token_ids]
                choice["logprobs"] = {"content": [
                    {**_token_entry(tok, tid, lp, as_ids),
                     "top_logprobs": [_token_entry(tok, t, v, as_ids) for t, v in alts]}
                    for tid, lp, alts in zip(out.token_ids, out.logprobs, tops)]}
            choices.append(choice)
        prompt_tokens = len(outs[0].prompt_token_ids or []) if outs else 0
        completion_tokens = sum(len(o.token_ids) for o in outs)
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": self.model_name, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}


def _handler(service: ChatService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: tests and evals make many requests
            pass

        def _send(self, code: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, message: str, kind: str) -> None:
            self._send(code, {"error": {"message": message, "type": kind, "code": code}})

        def do_GET(self) -> None:
            path = self.path.rstrip("/")
            if path in ("/v1/models", "/models"):
                self._send(200, service.models())
            elif path == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._error(404, f"no route {self.path}", "not_found")

        def do_POST(self) -> None:
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._error(404, f"no route {self.path}", "not_found")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._error(413, f"request body over {MAX_BODY} bytes", "invalid_request_error")
                return
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise BadRequest("the request body must be a JSON object")
                self._send(200, service.complete(body))
            except (BadRequest, json.JSONDecodeError) as e:
                self._error(400, str(e), "invalid_request_error")
            except Exception as e:  # the server stays up; the client sees the cause
                self._error(500, f"{type(e).__name__}: {e}", "server_error")

    return Handler


class ChatServer:
    """An OpenAI-compatible server for ``agent`` (an ``HFAgent``) on ``host:port`` (port 0: any free port).

    Use as a context manager, or ``start()``/``stop()``; ``base_url`` is ``http://host:port/v1``.
    """

    def __init__(self, agent: Any, *, host: str = "127.0.0.1", port: int = 0, model_name: str | None = None):
        if host not in LOOPBACK:
            raise ValueError(f"this server has no authentication and binds to loopback only; got host {host!r}")
        self.service = ChatService(agent, model_name)
        self.httpd = ThreadingHTTPServer((host, port), _handler(self.service))
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> ChatServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _unusable_address(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be served (port out of range, taken, not allowed), or ``None``."""
    import socket

    if not 0 <= port <= 65535:
        return f"--port must be in 0..65535, got {port}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ThreadingHTTPServer binds
        try:
            probe.bind((host, port))
        except OSError as e:
            return f"cannot serve on {host}:{port}: {e.strerror or e}"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m madopd_agents.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="HF repo id in the local cache, a folder, or zoo:<name>")
    p.add_argument("--host", default="127.0.0.1", choices=LOOPBACK)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-name", help="the model name clients send (default: --model)")
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args(argv)
    if problem := _unusable_address(args.host, args.port) or (args.batch_size < 1 and "--batch-size must be >= 1"):
        print(f"error: {problem}", file=sys.stderr)  # before the model loads, which can take minutes
        return 2
    from madopd_agents.hf import HFAgent
    from madopd_agents.zoo import ModelUnavailableError

    try:
        agent = HFAgent.from_pretrained(args.model, batch_size=args.batch_size)
    except ModelUnavailableError as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    server = ChatServer(agent, host=args.host, port=args.port, model_name=args.served_name or args.model)
    print(f"serving {server.service.model_name} at {server.base_url}", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
