"""Student rollouts: batched generation with the conversation's KV cache reused across turns vs
per-environment generation, on the same episodes, greedy, in one run.

    .venv/bin/python benchmarks/bench_rollout.py --quick
    .venv/bin/python benchmarks/bench_rollout.py --model zoo:smollm2-135m --envs 8 --turns 8

Every side plays the same ``--envs`` episodes of ``--env`` through ``RolloutCollector`` (the same
``make_vec`` workers, reset to the same tasks) with greedy decoding, so every side must produce the
same tokens (checked; the run fails otherwise). Sides:

- ``generate``: one ``model.generate`` call per environment per turn (what one writes with
  transformers alone: re-encodes the whole conversation every turn).
- ``sequential``: ``HFAgent`` one conversation at a time, no prefix cache.
- ``batched``: ``HFAgent``, all environments in one batch, no prefix cache.
- ``cached``: ``HFAgent``'s default: one batch and the prefix cache (each turn encodes only the
  tokens the env added).
- ``vllm``: ``VLLMAgent``, a ``vllm.LLM`` engine on the same weights (continuous batching, automatic
  prefix caching), in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, so its CPU time is counted
  here). Needs vLLM: run with ``.venv-vllm/bin/python`` (``make setup-vllm``); float32 like the HF sides.
  Its greedy tokens may differ from HF's by kernel numerics where two tokens nearly tie; the run
  reports that instead of failing.

    .venv-vllm/bin/python benchmarks/bench_rollout.py --quick --sides sequential cached vllm --envs 1 8 32

Rollout tokens/s = student tokens sampled / wall seconds of ``collect`` (env steps included: the
same work on every side). Tokens per CPU-s = the same tokens / CPU seconds of this process inside
``act``: on a shared, overloaded machine wall time mostly measures the scheduler, CPU time much less.
Prefill tokens = prompt tokens run through the model. With ``--repeat`` the sides run interleaved
and each side's best run counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the vllm side's engine in this process
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

SIDES = ("generate", "sequential", "batched", "cached", "vllm")


class PerEnv:
    """An agent that answers one conversation at a time (what a per-environment loop does)."""

    def __init__(self, inner: Any, name: str):
        self.inner, self.name = inner, name

    def act(self, conversations: list, sampling: Any, infos: Any = None) -> list:
        return [self.inner.act([c], sampling)[0] for c in conversations]

    def close(self) -> None:
        pass


class Generate:
    """``model.generate`` per conversation, greedy, logprobs from its scores (the plain-transformers way)."""

    def __init__(self, agent: Any):
        self.agent, self.name = agent, "generate"

    def act(self, conversations: list, sampling: Any, infos: Any = None) -> list:
        import torch

        from madopd_agents.base import ActionOutput

        model, tok, outs = self.agent.model, self.agent.tokenizer, []
        for conv in conversations:
            ids = self.agent.render(conv)
            with torch.inference_mode():
                gen = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     do_sample=False, max_new_tokens=sampling.max_new_tokens,
                                     eos_token_id=sorted(self.agent.eos_ids), pad_token_id=tok.pad_token_id,
                                     output_scores=True, return_dict_in_generate=True, top_k=None, top_p=None,
                                     temperature=None)
            new = gen.sequences[0, len(ids):].tolist()
            lps = [torch.log_softmax(s[0].float(), -1)[t].item() for s, t in zip(gen.scores, new)]
            eos = bool(new) and new[-1] in self.agent.eos_ids
            outs.append(ActionOutput(text=tok.decode(new, skip_special_tokens=True), token_ids=new, logprobs=lps,
                                     prompt_token_ids=ids, finish_reason="stop" if eos else "length"))
        return outs

    def close(self) -> None:
        pass


class Counting:
    """Counts the prompt tokens each side runs through the model (prefill work) and the wall and
    CPU seconds spent generating (the CPU time of this process: what a loaded machine distorts least)."""

    def __init__(self, inner: Any):
        self.inner, self.name, self.prefill, self.wall, self.cpu = inner, inner.name, 0, 0.0, 0.0

    def act(self, conversations: list, sampling: Any, infos: Any = None) -> list:
        w, c = time.perf_counter(), time.process_time()
        outs = self.inner.act(conversations, sampling, infos)
        self.wall += time.perf_counter() - w
        self.cpu += time.process_time() - c
        self.prefill += sum(len(o.prompt_token_ids) - o.meta.get("prompt_tokens_reused", 0) for o in outs)
        return outs

    def close(self) -> None:
        pass


def make_agents(args: argparse.Namespace, batch_size: int) -> dict[str, Any]:
    """Every requested side's agent; the HF sides share one model, the vllm side starts one engine."""
    from madopd_agents.hf import HFAgent

    cached = HFAgent.from_pretrained(args.model, batch_size=batch_size)
    plain = HFAgent(cached.model, cached.tokenizer, batch_size=batch_size, prefix_cache=0)
    agents = {"generate": Generate(plain), "sequential": PerEnv(plain, "sequential"), "batched": plain,
              "cached": cached}
    if "vllm" in args.sides:
        from madopd_agents.vllm import VLLMAgent

        agents["vllm"] = VLLMAgent.from_pretrained(args.model, name="vllm", dtype="float32", enforce_eager=True,
                                                   max_num_seqs=max(batch_size, 8))
    return agents


def run_sides(args: argparse.Namespace, fmt: dict[str, Any], n_envs: int, agents: dict[str, Any]) -> list[dict]:
    """The requested sides on the same ``n_envs`` episodes (greedy), interleaved ``--repeat`` times."""
    from madopd_agents.base import SamplingParams
    from madopd_agents.hf import HFAgent
    from madopd_distill.rollout import RolloutCollector, RolloutPrompt, group_episodes

    cached = agents["cached"]
    sampling = SamplingParams(temperature=0, max_new_tokens=args.max_new_tokens)
    rows: list[dict[str, Any]] = []
    ref = None
    with RolloutCollector(args.env, n_envs, None, sampling, max_env_steps=args.turns,
                          prompt=RolloutPrompt.for_env(args.env, **fmt)) as col:
        tasks = col.vec.call("tasks", "train", indices=[0])[0][:n_envs]
        episodes = group_episodes(tasks, 1)
        col.collect(episodes[:1], student=HFAgent(cached.model, cached.tokenizer, prefix_cache=0))  # warm-up
        if "vllm" in agents:
            col.collect(episodes[:1], student=agents["vllm"])
        for side in [s for _ in range(args.repeat) for s in args.sides]:
            cached.clear_cache()
            if side == "vllm":
                agents["vllm"].llm.reset_prefix_cache()  # every side starts cold
            agent = Counting(agents[side])
            t0 = time.perf_counter()
            trajs = col.collect(episodes, student=agent)
            wall = time.perf_counter() - t0
            toks = [[t.token_ids for t in tr.turns if t.sampled] for tr in trajs]
            errors = [tr.error for tr in trajs if tr.error]
            if errors:
                raise SystemExit(f"{side}: env errors: {errors[:2]}")
            same = ref is None or toks == ref
            ref = toks if ref is None else ref
            st = col.last_stats
            row = {"side": side, "envs": n_envs, "tokens": st.sampled_tokens, "env_steps": st.env_steps,
                   "seconds": wall, "tokens_per_s": st.sampled_tokens / wall, "generate_seconds": agent.wall,
                   "generate_cpu_seconds": agent.cpu, "tokens_per_cpu_s": st.sampled_tokens / agent.cpu,
                   "prefill_tokens": agent.prefill, "identical_tokens": same}
            print(f"{n_envs:>3} envs {side:>10}: {st.sampled_tokens} tokens, {st.env_steps} env steps, {agent.prefill} "
                  f"prefill tokens; rollout {wall:.1f} s = {row['tokens_per_s']:.1f} tok/s; generating {agent.wall:.1f} s "
                  f"wall, {agent.cpu:.1f} s CPU = {row['tokens_per_cpu_s']:.1f} tok/CPU-s; identical={same}", flush=True)
            rows.append(row)
    return rows


def best_of(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["side"] not in by or row["tokens_per_cpu_s"] > by[row["side"]]["tokens_per_cpu_s"]:
            by[row["side"]] = row
    return by


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:smollm2-135m", help="HF folder or zoo name (default zoo:smollm2-135m)")
    ap.add_argument("--env", default="madopd/TWX-CookingWorld-v0")
    ap.add_argument("--envs", type=int, nargs="+", default=[8], help="concurrent environments (one batch); "
                    "several values run one after another")
    ap.add_argument("--turns", type=int, default=8, help="env steps per episode")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--prompt", nargs="*", default=[], metavar="KEY=VALUE",
                    help="PromptFormat settings, e.g. show_actions=false (default: the project's default prompt)")
    ap.add_argument("--sides", nargs="+", default=list(SIDES[:4]), choices=SIDES)
    ap.add_argument("--repeat", type=int, default=1, help="interleaved repeats per side; the best counts")
    ap.add_argument("--quick", action="store_true", help="zoo:tiny-M, 6 turns, 24 new tokens (about a minute)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    if args.quick:
        args.model, args.turns, args.max_new_tokens = "zoo:tiny-M", 6, 24

    import torch

    fmt: dict[str, Any] = {}
    for kv in args.prompt:
        key, _, value = kv.partition("=")
        fmt[key] = json.loads(value) if value[:1] in "0123456789tfn[{-" else value

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    agents = make_agents(args, max(args.envs))
    rows: list[dict[str, Any]] = []
    for n_envs in args.envs:
        by = best_of(run := run_sides(args, fmt, n_envs, agents))
        rows += run
        print(f"\nmodel {args.model}, env {args.env}, prompt {fmt or 'default'}, {n_envs} envs x {args.turns} turns, "
              f"max_new_tokens {args.max_new_tokens}, load {os.getloadavg()[0]:.1f}")
        for fast in ("cached", "vllm"):
            for base in ("sequential", "generate", "batched", "cached"):
                if fast in by and base in by and base != fast:
                    wall = by[fast]["tokens_per_s"] / by[base]["tokens_per_s"]
                    cpu = by[fast]["tokens_per_cpu_s"] / by[base]["tokens_per_cpu_s"]
                    print(f"{fast} vs {base}: {wall:.2f}x rollout tokens/s (wall), {cpu:.2f}x tokens per generating "
                          f"CPU-s, prefill tokens {by[base]['prefill_tokens']} -> {by[fast]['prefill_tokens']}")
    if "vllm" in agents:
        agents["vllm"].close()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows, "load": os.getloadavg()}, fh, indent=1)
    # HF sides must agree exactly; vLLM's kernels may break near-ties differently (reported above)
    return 0 if all(r["identical_tokens"] for r in rows if r["side"] != "vllm") else 1


if __name__ == "__main__":
    sys.exit(main())
