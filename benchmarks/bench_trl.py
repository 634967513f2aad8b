"""One on-policy distillation step: madopd's trainer vs TRL's ``GKDTrainer`` (``lmbda=1``), side by side.

Same student, teacher, single-turn prompts, divergence (generalized JSD, TRL's ``beta`` convention),
``max_new_tokens``, temperature, learning rate, batch, AdamW, grad clip 1.0, fp32, CPU. Each side
runs in its own fresh process; TRL runs in a separate virtualenv (``benchmarks/.venvs/trl``, made
by this script when missing: ``python -m venv`` + ``pip install -c constraints.txt trl`` with this
venv's transformers/accelerate versions), so nothing of TRL is installed into madopd's venv.

- ``madopd``: :func:`madopd_distill.trainer.train` itself, ``method=opd``: each step the student
  samples one reply per prompt (the prompt = the first observation of a TextWorldExpress task
  rendered by madopd's prompt layer; ``rollout.max_env_steps=1`` makes every episode single-turn),
  the teacher scores it, the chunked divergence, backward, clip, AdamW. Per-step figures come from
  the trainer's own ``log.jsonl`` (``trained_tokens``, ``time_step_s``).
- ``trl``: ``GKDTrainer(lmbda=1, beta, temperature, max_new_tokens)`` on a dataset of the same
  conversations (an empty assistant turn appended: its collator wants one). ``gradient_checkpointing``
  and ``bf16`` are switched off (TRL's defaults are on) so both sides do the same arithmetic.
  A step is timed from ``on_step_begin`` to ``on_step_end``; tokens = completion tokens in its loss.

Tokens/s = student tokens trained / step seconds, summed over the steps after the first (warm-up);
tokens per CPU-s = the same tokens / CPU seconds of the training process (steadier on a shared
machine; madopd's env workers' CPU is not in it). With ``--repeat`` the sides alternate and each
side's best run counts. Peak memory = the process's RSS high-water mark (``VmHWM``) minus its RSS after the imports (the mark
is reset there), i.e. models + optimizer + the steps. madopd's env workers (a Python process and a
JVM per prompt in flight) are separate processes: their summed RSS is reported beside it.

First-step loss: both sides' loss functions on identical tensors (the same prompts and the same
completions, sampled once from the student), at the initial weights: madopd's trainer path
(``micro_batches`` -> ``Method.score`` -> ``student_forward`` -> ``Method.loss``) and TRL's
``GKDTrainer.compute_loss``; they must agree within fp32 tolerance (the run fails otherwise).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_trl.py --quick
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_trl.py --batch 8 --steps 8 --max-new-tokens 64 --repeat 2

TRL's *logged* training loss differs from its ``compute_loss`` on the same tensors: transformers'
``Trainer`` counts ``num_items_in_batch`` from the dataset's labels before ``GKDTrainer`` swaps in the
on-policy completion (huggingface/trl issue 4719); the table shows both sides' logged step-1 loss.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from peak_memory import peak_bytes, reset_peak, rss_bytes  # noqa: E402 -- beside this script

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024**2
LOSS_RTOL = 1e-5  # fp32: the two sides sum the same terms in other orders


class ChildRSS:
    """Polls the summed RSS of this process's descendants (madopd's env workers) and keeps the maximum."""

    def __init__(self, every: float = 0.2):
        import psutil

        self.me, self.every, self.peak = psutil.Process(), every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for c in self.me.children(recursive=True):
                try:
                    total += c.memory_info().rss
                except Exception:  # a worker that just exited
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


# -- the shared work -------------------------------------------------------------------------------
def make_work(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """Prompts (first observations rendered by madopd's prompt layer) and the loss check's completions."""
    import torch

    from madopd_agents.base import SamplingParams
    from madopd_agents.hf import HFAgent
    from madopd_agents.zoo import resolve_model
    from madopd_distill.rollout import RolloutPrompt
    from madopd_envs import make

    student, teacher = str(resolve_model(args.student)), str(resolve_model(args.teacher))
    prompt = RolloutPrompt.for_env(args.env)
    env = make(args.env)
    try:
        task_ids = list(env.unwrapped.tasks("train"))[: args.prompts]
        convs = []
        for t in task_ids:
            obs, info = env.reset(options={"task_id": t, "split": "train"})
            history = prompt.new_history()
            history.observe(obs, info)  # what RolloutCollector does before the first turn
            convs.append(prompt.conversation(history))
    finally:
        env.close()
    agent = HFAgent.from_pretrained(student, dtype="float32", device="cpu")
    torch.manual_seed(0)
    outs = agent.act(convs[: args.batch], SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                                         seed=0))
    work = {"env": args.env, "student": student, "teacher": teacher, "task_ids": task_ids, "conversations": convs,
            "check": [{"prompt_ids": o.prompt_token_ids, "completion_ids": o.token_ids, "logprobs": o.logprobs}
                      for o in outs]}
    path.write_text(json.dumps(work))
    return work


def _kind(beta: float) -> str:
    return {0.0: "forward_kl", 1.0: "reverse_kl"}.get(beta, "jsd")


# -- madopd side (runs in /work/main/.venv) --------------------------------------------------------
def madopd_loss(work: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    """madopd's loss on the shared completions: the trainer's functions, in the trainer's order."""
    from madopd_distill.batch import micro_batches
    from madopd_distill.methods import build_method
    from madopd_distill.methods.base import MethodContext
    from madopd_distill.rollout import Sample
    from madopd_distill.teachers import HFTeacher
    from madopd_distill.trainer import load_causal_lm, student_forward

    model, tok = load_causal_lm(work["student"])
    tmodel, ttok = load_causal_lm(work["teacher"])
    teacher = HFTeacher(tmodel.requires_grad_(False), ttok, student_tokenizer=tok, batch_size=p["batch"])
    method = build_method("opd", {"divergence": _kind(p["beta"]), "beta": p["beta"], "temperature": p["temperature"]},
                          MethodContext(teachers={"teacher": teacher}, tokenizer=tok))
    samples = [Sample(c["prompt_ids"] + c["completion_ids"],
                      [False] * len(c["prompt_ids"]) + [True] * len(c["completion_ids"]),
                      [0.0] * len(c["prompt_ids"]) + list(c["logprobs"]), traj_index=i)
               for i, c in enumerate(work["check"])]
    model.train()
    total, tokens = 0.0, 0
    for batch in micro_batches(samples, method.cfg.reduction, tok.pad_token_id, 8192):
        scores = method.score(batch, 0)
        student = student_forward(model, batch, method.cfg.temperature)
        out = method.loss(student, scores, method.token_weights(batch, scores, 0), batch, 0)
        total += float(out.loss.detach())
        tokens += batch.num_rows
    return {"loss": total, "tokens": tokens}


def madopd_train(work: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    import accelerate  # noqa: F401  (imports before the peak is reset, as on the TRL side)
    import transformers  # noqa: F401

    import madopd_envs  # noqa: F401
    from madopd_distill.trainer import StepLogger, TrainConfig, train

    reset_peak()
    base = rss_bytes()
    workers = ChildRSS()
    out = Path(p["out_dir"]) / "madopd"
    cfg = TrainConfig.from_dict({
        "env": work["env"], "student": work["student"], "split": "train", "num_train_tasks": len(work["task_ids"]),
        "teachers": [{"name": "teacher", "backend": "hf", "path": work["teacher"], "batch_size": p["batch"]}],
        "method": "opd",
        "method_args": {"divergence": _kind(p["beta"]), "beta": p["beta"], "temperature": p["temperature"]},
        "steps": p["steps"], "seed": 0, "dtype": "float32", "output_dir": str(out),
        "rollout": {"num_envs": p["batch"], "tasks_per_step": p["batch"], "group_size": 1, "batch_size": p["batch"],
                    "temperature": p["temperature"], "top_p": 1.0, "max_new_tokens": p["max_new_tokens"],
                    "max_env_steps": 1},
        "optim": {"lr": p["lr"], "grad_clip": 1.0, "weight_decay": 0.0},
        "eval": {"num_tasks": 0},
    })
    # Measurement hook: the CPU seconds of this process between the trainer's per-step log lines.
    cpu_marks = [time.process_time()]
    log = StepLogger.log

    def marked(self: Any, record: dict[str, Any]) -> None:
        if record.get("kind") == "train":
            cpu_marks.append(time.process_time())
        log(self, record)

    StepLogger.log = marked
    t0 = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - t0
    peak = peak_bytes()
    worker_peak = workers.stop()
    recs = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines() if ln.strip()]
    recs = [r for r in recs if r.get("kind") == "train"]
    return {"steps": [{"tokens": r["trained_tokens"], "seconds": r["time_step_s"], "loss": r["loss"],
                       "cpu_seconds": b - a,
                       "phases": {k[5:-2]: v for k, v in r.items() if k.startswith("time_") and k != "time_step_s"}}
                      for r, a, b in zip(recs, cpu_marks, cpu_marks[1:])],
            "peak_mib": (peak - base) / MIB, "env_workers_peak_mib": worker_peak / MIB, "wall_s": wall}


# -- TRL side (runs in the TRL virtualenv: stdlib + torch + transformers + trl only) ---------------
def _trl_trainer(work: dict[str, Any], p: dict[str, Any], steps: int, counting: bool = False) -> Any:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    tok = AutoTokenizer.from_pretrained(work["student"])
    student = AutoModelForCausalLM.from_pretrained(work["student"], dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(work["teacher"], dtype=torch.float32)
    rows = [{"messages": list(c) + [{"role": "assistant", "content": ""}]} for c in work["conversations"]]
    args = GKDConfig(
        output_dir=str(Path(p["out_dir"]) / "trl"), per_device_train_batch_size=p["batch"],
        gradient_accumulation_steps=1, max_steps=steps, learning_rate=p["lr"], lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, optim="adamw_torch", max_grad_norm=1.0, lmbda=1.0, beta=p["beta"],
        temperature=p["temperature"], max_new_tokens=p["max_new_tokens"], bf16=False, gradient_checkpointing=False,
        use_cpu=True, report_to="none", save_strategy="no", logging_steps=1, seed=0, dataloader_num_workers=0,
        disable_tqdm=True,
    )

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.begin, self.cpu_begin, self.steps, self.cpu = 0.0, 0.0, [], []

        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.begin, self.cpu_begin = time.perf_counter(), time.process_time()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            self.steps.append(time.perf_counter() - self.begin)
            self.cpu.append(time.process_time() - self.cpu_begin)

    class Counted(GKDTrainer):
        """Counts the completion tokens of each loss (measurement only; the loss is TRL's)."""

        def generate_on_policy_outputs(self, model, inputs, generation_config):  # noqa: ANN001
            t = time.perf_counter()
            out = GKDTrainer.generate_on_policy_outputs(model, inputs, generation_config)
            self.gen_seconds.append(time.perf_counter() - t)
            return out

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
            self.tokens.append(int((inputs["labels"][:, 1:] != -100).sum()))
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    timer = Timer()
    cls = Counted if counting else GKDTrainer
    trainer = cls(model=student, teacher_model=teacher, args=args, train_dataset=Dataset.from_list(rows),
                  processing_class=tok, callbacks=[timer])
    trainer.tokens, trainer.gen_seconds = [], []
    return trainer, timer, rows


def trl_loss(work: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    """TRL's ``compute_loss`` on the shared completions, laid out as its ``generate_on_policy_outputs`` does
    (left-padded prompts from its own collator, completions right-padded, prompt and padding masked)."""
    import torch

    trainer, _, rows = _trl_trainer(work, p, steps=1)
    checks = work["check"]
    batch = trainer.data_collator(rows[: len(checks)])
    prompts, pmask = batch["prompts"], batch["prompt_attention_mask"]
    same_prompts = all(prompts[i][pmask[i].bool()].tolist() == c["prompt_ids"] for i, c in enumerate(checks))
    width = max(len(c["completion_ids"]) for c in checks)
    comp = torch.full((len(checks), width), trainer.processing_class.pad_token_id, dtype=torch.long)
    cmask = torch.zeros((len(checks), width), dtype=torch.long)
    for i, c in enumerate(checks):
        comp[i, : len(c["completion_ids"])] = torch.tensor(c["completion_ids"])
        cmask[i, : len(c["completion_ids"])] = 1
    ids = torch.cat([prompts, comp], 1)
    att = torch.cat([pmask, cmask], 1)
    labels = ids.clone()
    labels[att == 0] = -100
    labels[:, : prompts.shape[1]] = -100
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, {"input_ids": ids, "attention_mask": att, "labels": labels})
    return {"loss": float(loss.detach()), "tokens": int((labels[:, 1:] != -100).sum()), "same_prompt_ids": same_prompts}


def trl_train(work: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    import accelerate  # noqa: F401  (imports before the peak is reset)
    import datasets  # noqa: F401
    import transformers  # noqa: F401
    import trl.experimental.gkd  # noqa: F401

    reset_peak()
    base = rss_bytes()
    t0 = time.perf_counter()
    trainer, timer, _ = _trl_trainer(work, p, steps=p["steps"], counting=True)
    trainer.train()
    wall = time.perf_counter() - t0
    peak = peak_bytes()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    import trl

    return {"steps": [{"tokens": n, "seconds": s, "loss": lo, "cpu_seconds": c, "phases": {"generate": g, "rest": s - g}}
                      for n, s, lo, g, c in zip(trainer.tokens, timer.steps, losses, trainer.gen_seconds, timer.cpu)],
            "peak_mib": (peak - base) / MIB, "env_workers_peak_mib": 0.0, "wall_s": wall, "trl": trl.__version__}


CHILDREN = {"madopd-loss": madopd_loss, "madopd-train": madopd_train, "trl-loss": trl_loss, "trl-train": trl_train}


# -- the parent ------------------------------------------------------------------------------------
def ensure_trl_venv(venv: Path) -> Path:
    """The TRL virtualenv's python, made when missing with this venv's transformers/accelerate versions."""
    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import trl.experimental.gkd"], capture_output=True).returncode == 0:
        return py
    import accelerate
    import transformers

    print(f"making the TRL virtualenv {venv} (a few minutes, once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), "trl",
                    f"transformers=={transformers.__version__}", f"accelerate=={accelerate.__version__}"], check=True)
    return py


def run_child(python: str, which: str, work_path: Path, params: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TOKENIZERS_PARALLELISM": "false"}
    if which.startswith("madopd"):
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([python, __file__, "--child", which, str(work_path), json.dumps(params)],
                          capture_output=True, text=True, env=env, cwd=str(ROOT))
    if proc.returncode != 0:
        raise SystemExit(f"{which} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def throughput(res: dict[str, Any], clock: str = "seconds") -> tuple[float, int, float]:
    """(tokens per second of ``clock`` -- wall ``seconds`` or ``cpu_seconds`` -- over the steps after the
    first, those tokens, those seconds)."""
    later = res["steps"][1:] or res["steps"]
    tokens, seconds = sum(s["tokens"] for s in later), sum(s[clock] for s in later)
    return tokens / seconds, tokens, seconds


def summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """A side's figures over its runs: the best of each (runs share the machine with other jobs)."""
    wall = max(rs, key=lambda x: throughput(x)[0])
    later = wall["steps"][1:]
    return {"tokens_per_s": throughput(wall)[0], "tokens_per_cpu_s": max(throughput(x, "cpu_seconds")[0] for x in rs),
            "tokens": throughput(wall)[1], "seconds": throughput(wall)[2],
            "peak_mib": min(x["peak_mib"] for x in rs), "env_workers_peak_mib": min(x["env_workers_peak_mib"] for x in rs),
            "step1_logged_loss": wall["steps"][0]["loss"],
            "phases": {k: sum(st["phases"].get(k, 0.0) for st in later) / len(later) for k in later[0]["phases"]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="batch 4, 5 steps, 32 new tokens, 2 runs per side (about 3 minutes)")
    ap.add_argument("--student", default="zoo:tiny-S")
    ap.add_argument("--teacher", default="zoo:tiny-M")
    ap.add_argument("--env", default="madopd/TWX-Arithmetic-v0", help="the prompts: first observations of its tasks")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per side (the first is a warm-up)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--beta", type=float, default=0.5, help="generalized JSD beta (0 forward KL, 1 reverse KL)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--repeat", type=int, default=1, help="training runs per side, interleaved; the best counts")
    ap.add_argument("--trl-venv", default=str(ROOT / "benchmarks" / ".venvs" / "trl"))
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        which, work_path, params = args.child
        print(json.dumps(CHILDREN[which](json.loads(Path(work_path).read_text()), json.loads(params))))
        return
    if args.quick:
        args.batch, args.steps, args.max_new_tokens, args.prompts = 4, 5, 32, 8
        args.repeat = max(args.repeat, 2)
    if args.batch > args.prompts or args.steps < 2:
        print("bench_trl: need --batch <= --prompts and --steps >= 2 (the first step is a warm-up)", file=sys.stderr)
        sys.exit(2)
    trl_py = str(ensure_trl_venv(Path(args.trl_venv)))
    with tempfile.TemporaryDirectory(prefix="bench_trl_") as tmp:
        work_path = Path(tmp) / "work.json"
        work = make_work(args, work_path)
        params = {"batch": args.batch, "steps": args.steps, "max_new_tokens": args.max_new_tokens, "beta": args.beta,
                  "temperature": args.temperature, "lr": args.lr, "out_dir": tmp}
        load_before = os.getloadavg()
        lm, lt = run_child(sys.executable, "madopd-loss", work_path, params), run_child(trl_py, "trl-loss", work_path, params)
        runs: dict[str, list[dict[str, Any]]] = {"madopd": [], "trl": []}
        for r in range(args.repeat):
            for side in (("madopd", "trl") if r % 2 == 0 else ("trl", "madopd")):
                py = sys.executable if side == "madopd" else trl_py
                res = run_child(py, f"{side}-train", work_path, params)
                runs[side].append(res)
                tps = throughput(res)[0]
                print(f"run {r + 1} {side}: {tps:.1f} tokens/s, peak {res['peak_mib']:.0f} MiB "
                      f"(+{res['env_workers_peak_mib']:.0f} MiB env workers), {res['wall_s']:.1f} s", flush=True)
        load_after = os.getloadavg()
    sm = {side: summary(rs) for side, rs in runs.items()}
    diff = abs(lm["loss"] - lt["loss"])
    rel = diff / max(abs(lt["loss"]), 1e-12)
    print(f"\nstudent {args.student}, teacher {args.teacher}, {args.env} prompts x{len(work['task_ids'])}, batch "
          f"{args.batch}, {args.steps} steps, max_new_tokens {args.max_new_tokens}, beta {args.beta}, "
          f"temperature {args.temperature}, lr {args.lr}, {args.repeat} run(s) per side; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"first-step loss on the same {lm['tokens']} completion tokens: madopd {lm['loss']:.8f}, TRL "
          f"{lt['loss']:.8f} (|diff| {diff:.2e}, rel {rel:.2e}); TRL's collator gave the same prompt ids: "
          f"{lt['same_prompt_ids']}")
    print(f"\n{'side':>7} {'tokens/s':>9} {'tok/CPU-s':>9} {'tokens':>7} {'wall s':>7} {'peak MiB':>9} "
          f"{'+env workers':>12} {'logged step-1 loss':>18}")
    for side in ("madopd", "trl"):
        x = sm[side]
        print(f"{side:>7} {x['tokens_per_s']:>9.1f} {x['tokens_per_cpu_s']:>9.1f} {x['tokens']:>7} {x['seconds']:>7.2f} "
              f"{x['peak_mib']:>9.0f} {x['env_workers_peak_mib']:>12.0f} {x['step1_logged_loss']:>18.5f}")
    for side in ("madopd", "trl"):
        print(f"{side} mean seconds per step after the first: " + ", ".join(
            f"{k} {v:.3f}" for k, v in sm[side]["phases"].items() if v >= 0.0005))
    m, t = sm["madopd"], sm["trl"]
    print(f"\nmadopd / TRL: {m['tokens_per_s'] / t['tokens_per_s']:.2f}x tokens/s, "
          f"{m['tokens_per_cpu_s'] / t['tokens_per_cpu_s']:.2f}x tokens per CPU-s (goal >= 1.5x); "
          f"{m['peak_mib'] / t['peak_mib']:.2f}x peak memory, "
          f"{(m['peak_mib'] + m['env_workers_peak_mib']) / t['peak_mib']:.2f}x with the env workers (goal <= 0.5x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "loss": {"madopd": lm, "trl": lt}, "summary": sm, "runs": runs,
                                               "load": [load_before, load_after]}, indent=2))
    if not diff <= LOSS_RTOL * max(abs(lt["loss"]), 1e-3):  # (a floor: a teacher equal to the student gives ~0)
        raise SystemExit(f"first-step losses differ beyond fp32 tolerance (rel {rel:.2e} > {LOSS_RTOL})")


if __name__ == "__main__":
    main()
