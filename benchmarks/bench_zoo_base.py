"""Which base should the CPU zoo fine-tune? SmolLM2-135M-Instruct (pretrained, ships offline) vs a tiny
Qwen3 built from config, on the same zoo training texts, side by side in one process.

Measures, per base: one training step's wall time on a batch of the recipe's protocol samples
(debate proposals, scoring contexts, judgements), greedy generation tokens/s, and the projected time
of the recipe's teacher training (policy + protocol steps x teachers). The zoo's 30-minute budget per
recipe on 2 cores decides.

    python benchmarks/bench_zoo_base.py --recipe simonsays --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="simonsays")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per base")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from madopd_agents.base import SamplingParams
    from madopd_agents.hf import HFAgent
    from madopd_agents.zoo import build_tokenizer, tiny_qwen3
    from madopd_distill.trainer import load_causal_lm
    from madopd_distill.zoo import load_recipe
    from madopd_distill.zoo.build import train
    from madopd_distill.zoo.data import collect_states, debate_samples, judge_samples
    from madopd_distill.zoo.recipe import TaskRange, TrainSpec

    recipe = load_recipe(args.recipe)
    states = collect_states(recipe, TaskRange(0, 16, recipe.train_tasks.split), judge_candidates=1)
    pairs = []
    for s in states:
        pairs += debate_samples(s, 0, [s.expert_action] * 2, [80, 40], 2) + judge_samples(s, "two")
    texts = [m["content"] for c, t in pairs for m in c] + [t for _, t in pairs]
    tiny_tok = build_tokenizer(texts, vocab_size=recipe.vocab_size)
    smol, smol_tok = load_causal_lm("zoo:smollm2-135m")
    bases = {"tiny-S (from config)": (tiny_qwen3(tiny_tok, "S", seed=0), tiny_tok), "smollm2-135m": (smol, smol_tok)}
    per_recipe_steps = sum(t.policy.steps + t.protocol.steps for t in recipe.teachers)
    rows = {}
    for name, (model, tok) in bases.items():
        train(model, tok, pairs, TrainSpec(steps=1, batch_samples=args.batch, warmup_steps=1), 0, "warm-up")
        t0 = time.perf_counter()
        train(model, tok, pairs, TrainSpec(steps=args.steps, batch_samples=args.batch, warmup_steps=1), 0, name)
        step_s = (time.perf_counter() - t0) / args.steps
        agent = HFAgent(model, tok, batch_size=16)
        t0 = time.perf_counter()
        out = agent.act([c for c, _ in pairs[:16]], SamplingParams(temperature=0.0, max_new_tokens=16))
        gen_tokens = sum(len(o.token_ids) for o in out)
        gen_tps = gen_tokens / (time.perf_counter() - t0)
        rows[name] = {"parameters": sum(p.numel() for p in model.parameters()), "train_step_s": round(step_s, 3),
                      "generate_tokens_per_s": round(gen_tps, 1),
                      "projected_teacher_training_min": round(step_s * per_recipe_steps / 60, 1)}
        print(name, rows[name], flush=True)
    a, b = rows["smollm2-135m"], rows["tiny-S (from config)"]
    print(json.dumps({"recipe": args.recipe, "batch_samples": args.batch, "rows": rows,
                      "train_step_ratio_smollm2_over_tiny": round(a["train_step_s"] / b["train_step_s"], 1),
                      "load": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
