"""The OpenAI-compatible backend against a real HTTP server (madopd_agents.serve on loopback)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from madopd_agents.base import SamplingParams
from madopd_agents.hf import HFAgent
from madopd_agents.openai import OpenAIAgent, OpenAIError
from madopd_agents.serve import ChatServer

CONVS = [[{"role": "user", "content": f"take the {thing}"}] for thing in ("apple", "key", "coin", "lamp", "map", "cup")]


@pytest.fixture(scope="module")
def server(tiny):
    model, tok = tiny
    with ChatServer(HFAgent(model, tok, name="tiny"), model_name="tiny") as srv:
        yield srv


class _Flaky:
    """A proxy in front of the server: answers 503 to the first ``fail`` requests, slows the rest and
    counts how many are in flight at once (to see the client's retries and its concurrency cap)."""

    def __init__(self, target: str, fail: int, delay: float = 0.0):
        self.target, self.fail, self.delay = target, fail, delay
        self.seen, self.in_flight, self.max_in_flight = 0, 0, 0
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _relay(self, method):
                with outer.lock:
                    outer.seen += 1
                    failing = outer.seen <= outer.fail
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    if failing:
                        body = b'{"error": {"message": "busy"}}'
                        self.send_response(503)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                        return
                    time.sleep(outer.delay)
                    data = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else None
                    req = urllib.request.Request(outer.target + self.path, data=data, method=method,
                                                 headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(req) as resp:
                        body = resp.read()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

            def do_GET(self):
                self._relay("GET")

            def do_POST(self):
                self._relay("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_http_agent_returns_what_the_local_agent_samples(tiny, server):
    model, tok = tiny
    local = HFAgent(model, tok)
    remote = OpenAIAgent(server.base_url, "tiny", top_logprobs=2)
    sp = SamplingParams(temperature=0, max_new_tokens=6)
    want, got = local.act(CONVS[:3], sp), remote.act(CONVS[:3], sp)
    for w, g in zip(want, got):
        assert g.text == w.text and g.token_ids == w.token_ids
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-5)
        assert len(g.meta["top_logprobs"]) == len(g.token_ids)
        assert all(len(alts) == 2 and max(alts.values()) == pytest.approx(lp, abs=1e-5)
                   for alts, lp in zip(g.meta["top_logprobs"], g.logprobs))  # greedy picks the best token
    sampled = remote.act(CONVS[:2], SamplingParams(temperature=1.0, max_new_tokens=5, n=3, seed=4))
    assert len(sampled) == 6 and all(len(o.token_ids) == len(o.logprobs) for o in sampled)
    remote.close()


def test_retries_with_backoff_and_concurrency_cap(server):
    proxy = _Flaky(server.base_url.removesuffix("/v1"), fail=2, delay=0.05)
    try:
        agent = OpenAIAgent(proxy.base_url, "tiny", max_concurrency=2, max_retries=3, backoff=0.01, check=False)
        outs = agent.act(CONVS, SamplingParams(temperature=0, max_new_tokens=3))
        assert len(outs) == 6 and all(o.token_ids for o in outs)
        assert agent.attempts == 6 + 2  # two requests were refused (503) and retried
        assert proxy.max_in_flight <= 2
        agent.close()
    finally:
        proxy.close()


def test_client_errors_are_not_retried_and_dead_servers_fail_fast(server):
    agent = OpenAIAgent(server.base_url, "not-this-model", max_retries=3, backoff=0.01)
    before = agent.attempts
    with pytest.raises(OpenAIError, match="HTTP 400.*unknown model"):
        agent.act(CONVS[:1], SamplingParams(max_new_tokens=2))
    assert agent.attempts == before + 1
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()  # a port nothing listens on
    t0 = time.monotonic()
    with pytest.raises(OpenAIError, match="no OpenAI-compatible server answers"):
        OpenAIAgent(f"http://127.0.0.1:{port}/v1", "x", backoff=0.1)
    assert time.monotonic() - t0 < 5


def test_server_speaks_the_protocol_and_binds_loopback_only(tiny, server):
    req = urllib.request.Request(server.base_url + "/chat/completions", method="POST",
                                 data=json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                                                  "temperature": 0, "logprobs": True}).encode())
    with urllib.request.urlopen(req) as resp:
        body = json.loads(resp.read())
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and body["usage"]["completion_tokens"] == 3
    assert len(choice["logprobs"]["content"]) == 3 and not choice["logprobs"]["content"][0]["token"].startswith("token_id:")
    with urllib.request.urlopen(server.base_url + "/models") as resp:
        assert json.loads(resp.read())["data"][0]["id"] == "tiny"
    with pytest.raises(ValueError, match="loopback"):
        ChatServer(HFAgent(*tiny), host="0.0.0.0")


def test_an_eval_through_the_http_backend(server, tmp_path):
    """A model card switched to the HTTP backend plays real episodes: prompts, parsing, token counts."""
    import madopd_envs
    from madopd_envs.eval.config import Entry
    from madopd_envs.eval.runner import evaluate

    env_id = "madopd/TWX-Coin-v0"
    if not madopd_envs.spec(env_id).card.available:
        pytest.skip("textworld-express not installed")
    summary = evaluate(agent_name="smollm2-135m", agent_args={"backend": "openai", "base_url": server.base_url,
                                                              "served_model": "tiny", "max_new_tokens": 4},
                       entries=[Entry(env=env_id, split="test", episodes=2, max_steps=2)], output=tmp_path,
                       num_envs=2, progress=False, log=lambda m: None)
    records = [json.loads(x) for x in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert summary["overall"]["episodes"] == 2 and all(r["steps"] >= 1 for r in records)
    steps = [s for r in records for s in r["trajectory"]]
    assert all(0 < s["completion_tokens"] <= 4 for s in steps)
    assert sum(r["invalid_format"] for r in records) == len(steps)  # a random tiny model never writes tags
