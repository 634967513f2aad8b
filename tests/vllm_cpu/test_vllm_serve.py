"""vLLM's OpenAI-compatible server (``VLLMServer``: what ``vllm serve`` runs, from ``.venv-vllm``) behind the
project's ``openai`` agent and teacher backends, driven from this venv over HTTP like any client.

One server (the tiny Qwen3 S at init std 0.2, see ``vllm_cpu_check.py``) serves the agent, teacher and
OmniOPD tests; the last two kill it (mid-training, mid-eval) and restart it on the same port. Start-up
failures get their own short-lived servers.
Like ``test_vllm_cpu.py``: skipped without ``.venv-vllm``, except on CI, where that fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_vllm_cpu import MAX_ABS, MEAN_ABS, ROOT, VLLM_PY, run_check

from madopd_agents.vllm import EngineStartError, VLLMServer, group_alive
from madopd_envs.eval.results import EpisodeStore

SERVED = "tiny"
EVAL = ["--agent", "smollm2-135m", "--env", "madopd/TWX-SimonSays-v0", "--max-steps", "3", "--num-envs", "2",
        "--no-progress"]


def _server(model: str, **kw) -> VLLMServer:
    return VLLMServer(model, served_model_name=SERVED, python=str(VLLM_PY), start_timeout=240, **kw)


@pytest.fixture(scope="module")
def model_dir() -> str:
    return run_check("model")["model"]  # built by the vLLM venv's transformers, once


@pytest.fixture(scope="module")
def _module_server(model_dir):
    s = _server(model_dir).start()
    yield s
    s.stop()


@pytest.fixture
def server(_module_server):
    """The module's server, up: a test that killed it and failed before restarting it leaves no dead server
    for the next one."""
    if not _module_server.healthy():
        _module_server.stop()
        _module_server.start()
    return _module_server


def _eval(out: Path, agent_args: str, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "madopd_envs.eval", *EVAL, "--agent-args", agent_args,
                           "--output", str(out), *extra], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _episodes(out: Path) -> list[dict]:
    """The episodes of a run (an episode played again supersedes its record, as the eval reads them)."""
    return sorted(EpisodeStore(out / "episodes.jsonl").load().values(), key=lambda r: (r["task_id"], r["seed"]))


def _train_steps(out: Path) -> list[dict]:
    """The ``train`` records of a training run's log.jsonl (none yet if it has not started)."""
    log = out / "log.jsonl"
    recs = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.is_file() else []
    return [r for r in recs if r.get("kind") == "train"]


def test_openai_agent_through_vllm_serve_plays_the_hf_agents_episodes(server, model_dir, tmp_path):
    """`python -m madopd_envs.eval --agent-args backend=openai,base_url=<vllm server>` vs backend=hf on the
    same weights: the same 4 episodes, greedy actions identical (the server applies the chat template)."""
    runs = {}
    for backend, args in (("hf", f"model={model_dir},backend=hf,dtype=float32"),
                          ("openai", f"backend=openai,base_url={server.base_url},model={SERVED}")):
        proc = _eval(tmp_path / backend, args, "--episodes", "4")
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[backend] = _episodes(tmp_path / backend)
    hf, served = runs["hf"], runs["openai"]
    assert [(r["task_id"], r["seed"]) for r in hf] == [(r["task_id"], r["seed"]) for r in served]
    assert not any(r.get("error") for r in hf + served)
    actions = [[s["action"] for s in r["trajectory"]] for r in hf], [[s["action"] for s in r["trajectory"]]
                                                                        for r in served]
    assert sum(map(len, actions[0])) > 0 and actions[0] == actions[1], actions


def test_openai_teacher_through_vllm_serve_scores_like_hf(server, model_dir):
    """OpenAITeacher (/v1/completions, echo + prompt logprobs, top-5, token ids) vs HFTeacher on the same
    tokens; its /tokenize check passes for the same tokenizer and refuses another one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from madopd_agents.zoo import resolve_model
    from madopd_distill.teachers import HFTeacher, OpenAITeacher, ScoreRequest, TokenizerMismatchError

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    hf = HFTeacher(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval(), tok)
    served = OpenAITeacher(server.base_url, SERVED, student_tokenizer=tok, top_k=5, timeout=60)
    texts = ["You are in the kitchen. Simon says: take the apple.", "look\ntake apple\nSimon says jump",
             "The quick brown fox jumps over the lazy dog, twice."]
    reqs = []
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        reqs.append(ScoreRequest(input_ids=ids, positions=list(range(1, len(ids)))))
    a, b = hf.score(reqs, top_k=5), served.score(reqs, top_k=5)
    diff = (a.token_logprobs - b.token_logprobs).abs()
    assert a.num_rows == b.num_rows > 20
    assert diff.max() < MAX_ABS and diff.mean() < MEAN_ABS, (diff.max(), diff.mean())
    assert torch.equal(a.topk_ids, b.topk_ids) and (a.topk_logprobs - b.topk_logprobs).abs().max() < MAX_ABS
    shifted = (a.token_logprobs[1:] - b.token_logprobs[:-1]).abs().mean()
    assert shifted > 0.5, "the comparison cannot tell a one-position shift from a match"
    print(f"served teacher vs HF: {a.num_rows} tokens, max |diff| {diff.max():.2e}, mean {diff.mean():.2e}; "
          f"one-position shift {shifted:.2f} nats", file=sys.stderr)
    other = AutoTokenizer.from_pretrained(resolve_model("zoo:simonsays/student"))
    with pytest.raises(TokenizerMismatchError, match="tokenizes differently"):
        OpenAITeacher(server.base_url, SERVED, student_tokenizer=other)


def test_omni_trains_against_a_text_only_teacher_on_vllm_serve(server, model_dir, tmp_path):
    """OmniOPD's black-box path: the served model writes continuations over /v1/chat/completions."""
    out = tmp_path / "omni"
    proc = subprocess.run(
        [sys.executable, "-m", "madopd_distill.train", "method=omni", "env=madopd/TWX-Coin-v0", f"student={model_dir}",
         "steps=2", "rollout.num_envs=1", "rollout.tasks_per_step=1", "rollout.max_new_tokens=8",
         "rollout.max_env_steps=2", "micro_batch_tokens=4096", "eval.num_tasks=0",
         f"teachers=[{{name:anchor,backend:hf,path:{model_dir}}},{{name:writer,backend:openai,"
         f"base_url:'{server.base_url}',model:{SERVED},text_only:true}}]", "method.teacher=writer",
         "method.chunk_tokens=4", "method.num_continuations=2", "method.fork_quantile=0.5", f"output_dir={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = _train_steps(out)
    assert [r["step"] for r in steps] == [1, 2] and sum(r["omni/forks"] for r in steps) > 0
    assert all(r["omni/continuations"] == 2 * r["omni/forks"] for r in steps)


def test_bad_starts_fail_fast_in_one_line_and_leave_nothing_running(model_dir):
    """A taken port, a model folder that is not one, no vLLM in the python, a KV cache too small for
    max_model_len: EngineStartError (or ModelUnavailableError) naming the cause, no process left."""
    from madopd_agents.zoo import ModelUnavailableError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EngineStartError, match=f"port {port} on 127.0.0.1 is taken"):
            _server(model_dir, port=port).start()
    with pytest.raises(ModelUnavailableError, match="not a model folder"):
        _server(str(ROOT / "tests"))
    no_vllm = VLLMServer(model_dir, python=sys.executable, start_timeout=60)
    with pytest.raises(EngineStartError, match=r"exited \(1\) while starting: .*No module named .?vllm"):
        no_vllm.start()
    # 4M tokens of KV need ~3.8 GiB; VLLM_CPU_KVCACHE_SPACE gives 1 (the check runs before the engine warms up)
    os.environ["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] = "1"
    try:
        small = _server(model_dir, max_model_len=4_000_000, kv_cache_gib=1)
    finally:
        del os.environ["VLLM_ALLOW_LONG_MAX_MODEL_LEN"]
    t = time.monotonic()
    with pytest.raises(EngineStartError, match="larger than the available KV cache memory") as e:
        small.start()
    assert "\n" not in str(e.value) and time.monotonic() - t < 200
    assert small.proc is None and not group_alive(small.pgid)


def _kill(server: VLLMServer) -> None:
    """SIGKILL the server's whole process group (API server, engine core, workers), as a crash would."""
    os.killpg(server.pgid, signal.SIGKILL)


def _wait_for(pred, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_served_teacher_killed_mid_training_stops_in_one_line_and_resume_continues(server, model_dir, tmp_path):
    """OPD with an `openai` teacher on the vLLM server: the server dies after step 2's checkpoint; training
    stops with exit 2 and one line ("cannot reach"), and `resume=true` against a restarted server runs the
    remaining steps (each step logged once). 40 steps, so that the kill lands mid-run however fast a step is
    (with 6, a CI run wrote all three checkpoints and exited 0 before the kill had any effect)."""
    out = tmp_path / "opd"
    total = 40
    argv = [sys.executable, "-m", "madopd_distill.train", "method=opd", "env=madopd/TWX-SimonSays-v0",
            f"student={model_dir}", f"steps={total}", "save_every=2", "rollout.num_envs=1", "rollout.tasks_per_step=1",
            "rollout.max_new_tokens=8", "rollout.max_env_steps=2", "eval.num_tasks=0",
            f"teachers=[{{name:served,backend:openai,base_url:'{server.base_url}',model:{SERVED},top_k:5}}]",
            f"output_dir={out}"]

    def steps() -> list[int]:
        return [r["step"] for r in _train_steps(out)]

    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any(s >= 2 for s in steps()) or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        _kill(server)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 2, err[-3000:]
    assert 2 <= max(steps()) < total, steps()
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: served: cannot reach") and server.base_url.removesuffix("/v1") in last, last
    server.stop()
    server.start()
    again = subprocess.run([*argv, "resume=true"], cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert steps() == list(range(1, total + 1)), steps()


def test_server_killed_mid_eval_errors_episodes_and_resume_finishes_them(server, model_dir, tmp_path):
    """SIGKILL the server's whole process group while an eval plays through it: every episode is
    recorded (the cut ones errored, with the URL), the eval exits, and `--resume --retry-errored` on a
    restarted server plays the errored ones again. OpenAITeacher fails the same way, within its timeout.
    40 episodes, so that the eval is still playing when the kill lands, however fast an episode is."""
    from madopd_distill.teachers import OpenAITeacher, ScoreRequest

    out = tmp_path / "cut"
    args = f"backend=openai,base_url={server.base_url},model={SERVED},max_retries=1,backoff=0.2,timeout=20"
    episodes = 40
    teacher = OpenAITeacher(server.base_url, SERVED, tokenizer_check=False, timeout=20)

    def kill_after_first_episode() -> None:
        path = out / "episodes.jsonl"
        _wait_for(lambda: path.is_file() and bool(path.read_text().strip()))
        _kill(server)

    killer = threading.Thread(target=kill_after_first_episode)
    killer.start()
    proc = _eval(out, args, "--episodes", str(episodes))
    killer.join()
    recs = _episodes(out)
    errored = [r for r in recs if r.get("error")]
    assert len(recs) == episodes, f"episodes lost: {len(recs)} of {episodes} recorded"
    assert 0 < len(errored) < episodes and proc.returncode == 3, (proc.returncode, [r.get("error") for r in recs])
    assert all(server.base_url in r["error"] for r in errored), errored[0]["error"]
    t = time.monotonic()
    with pytest.raises(ConnectionError, match="cannot reach"):
        teacher.score([ScoreRequest(input_ids=[1, 2, 3], positions=[1, 2])])
    assert time.monotonic() - t < 30
    server.stop()
    assert not group_alive(server.pgid), "the killed server's engine core or workers are still running"
    server.start()  # the same port, so the same agent args
    again = _eval(out, args, "--episodes", str(episodes), "--resume", "--retry-errored")
    assert again.returncode == 0, again.stderr[-3000:]
    recs = _episodes(out)
    assert len(recs) == episodes and not any(r.get("error") for r in recs)
