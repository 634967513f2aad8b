"""Teacher scoring: the log-probs (and top-k) a teacher gives the student's tokens, HF vs vLLM, in one run.

    .venv-vllm/bin/python benchmarks/bench_teacher_scoring.py --model zoo:tiny-M
    .venv-vllm/bin/python benchmarks/bench_teacher_scoring.py --model zoo:smollm2-135m --sides hf vllm

Every side scores the same requests (``--sequences`` token sequences of ``--length`` tokens, each scored
at every position after the first, top-``--top-k``), as OPD does once per training step. Sides:

- ``hf``: ``HFTeacher`` (one padded forward per ``--batch`` sequences, top-k from the full logits).
- ``vllm``: ``VLLMTeacher``, a ``vllm.LLM`` engine with prompt logprobs, in this process
  (``VLLM_ENABLE_V1_MULTIPROCESSING=0``: its CPU time is counted here).
- ``served``: ``OpenAITeacher`` against vLLM's OpenAI server (``VLLMServer``, a separate process: only
  wall time is comparable; one HTTP request per sequence).

Figures: tokens scored per wall second and per CPU-s of this process, and the max |log-prob
difference| to the ``hf`` side (kernel numerics only: the same float32 weights). Needs vLLM: run
with ``.venv-vllm/bin/python`` (``make setup-vllm``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

SIDES = ("hf", "vllm", "served")


def requests(tokenizer: Any, sequences: int, length: int, seed: int) -> list[Any]:
    """Random token sequences of the model's vocabulary (every side scores the same ones)."""
    import torch

    from madopd_distill.teachers import ScoreRequest

    g = torch.Generator().manual_seed(seed)
    vocab = min(len(tokenizer), tokenizer.vocab_size)
    ids = torch.randint(0, vocab, (sequences, length), generator=g).tolist()
    return [ScoreRequest(input_ids=x, positions=list(range(1, length))) for x in ids]


def timed(teacher: Any, reqs: list[Any], top_k: int, batch: int) -> tuple[Any, float, float]:
    from madopd_distill.teachers import TokenScores

    w, c = time.perf_counter(), time.process_time()
    out = TokenScores.cat([teacher.score(reqs[i:i + batch], top_k=top_k) for i in range(0, len(reqs), batch)])
    return out, time.perf_counter() - w, time.process_time() - c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:tiny-M", help="HF folder or zoo name")
    ap.add_argument("--sequences", type=int, default=64)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16, help="sequences per score() call")
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from madopd_agents.vllm import VLLMServer
    from madopd_agents.zoo import resolve_model
    from madopd_distill.teachers import HFTeacher, OpenAITeacher, VLLMTeacher

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    path = str(resolve_model(args.model))
    tok = AutoTokenizer.from_pretrained(path)
    reqs = requests(tok, args.sequences, args.length, args.seed)
    engine = {"dtype": "float32", "enforce_eager": True, "max_model_len": max(args.length + 8, 512)}
    rows, ref = [], None
    for side in args.sides:
        server = None
        if side == "hf":
            teacher = HFTeacher(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), tok)
        elif side == "vllm":
            teacher = VLLMTeacher(path, student_tokenizer=tok, top_k=args.top_k, max_logprobs=args.top_k, **engine)
        else:
            server = VLLMServer(path, python=sys.executable, max_model_len=engine["max_model_len"],
                                args=["--max-logprobs", str(args.top_k)]).start()
            teacher = OpenAITeacher(server.base_url, "default", student_tokenizer=tok, top_k=args.top_k)
        timed(teacher, reqs[: args.batch], args.top_k, args.batch)  # warm-up
        out, wall, cpu = timed(teacher, reqs, args.top_k, args.batch)
        ref = out if ref is None else ref
        diff = float((out.token_logprobs - ref.token_logprobs).abs().max())
        row = {"side": side, "tokens": out.num_rows, "seconds": wall, "tokens_per_s": out.num_rows / wall,
               "cpu_seconds": cpu, "tokens_per_cpu_s": out.num_rows / max(cpu, 1e-9),
               "max_abs_diff_vs_first": diff}
        rows.append(row)
        print(f"{side:>7}: {out.num_rows} tokens scored (top-{args.top_k}) in {wall:.1f} s = "
              f"{row['tokens_per_s']:.0f} tok/s; {cpu:.1f} CPU-s here = {row['tokens_per_cpu_s']:.0f} tok/CPU-s; "
              f"max |diff| vs {args.sides[0]} {diff:.2e}", flush=True)
        if hasattr(teacher, "close"):
            teacher.close()
        if server is not None:
            server.stop()
    first = rows[0]
    print(f"\nmodel {args.model}, {args.sequences} x {args.length} tokens, batch {args.batch}, "
          f"load {os.getloadavg()[0]:.1f}")
    for r in rows[1:]:
        print(f"{r['side']} vs {first['side']}: {r['tokens_per_s'] / first['tokens_per_s']:.2f}x tokens/s (wall)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows, "load": os.getloadavg()}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
