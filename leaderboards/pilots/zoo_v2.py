"""Pilot for zoo v2 (issue 26): can OPD lift a *pretrained* student toward a competent teacher?

Not part of the package: a script that answers one question before the recipe is built. Stages are
cached under ``--work`` so a later stage can be re-run with other settings:

1. expert states of the recipe's task ranges (``--recipe``; SimonSays by default: train tasks 0..399,
   calibration 800..899, held-out 900..999);
2. a tokenizer trained on those texts; a *pretraining corpus*: every train state's conversation
   followed by a reply whose action is the expert's with probability ``1 - noise`` and otherwise a
   random action from the pool of all expert actions (noisy-expert play), loss on every token;
3. teacher: tiny Qwen3 ``S`` pretrained ``--teacher-pretrain`` steps, then SFT on expert actions;
4. student: a smaller Qwen3 pretrained on the same corpus until its greedy accuracy on the
   calibration states first reaches ``--student-target`` (a base "pretrained to a given competence");
5. OPD (``madopd_distill.trainer.train``) from that student with that teacher, held-out success logged.

    OMP_NUM_THREADS=1 .venv/bin/python leaderboards/pilots/zoo_v2.py --work /tmp/zoo_v2 stage...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import string
import time
from pathlib import Path

import torch

from madopd_agents.hf import HFAgent
from madopd_agents.zoo import _save_folder, build_tokenizer, tiny_qwen3
from madopd_distill.trainer import load_causal_lm
from madopd_distill.zoo.build import (EpisodeEval, generate, parse_action, pretrain_corpus, soft_errors, to_sample,
                                      train_samples)
from madopd_distill.zoo.data import action_reply, collect_states
from madopd_distill.zoo.recipe import Recipe, TrainSpec

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[pilot {time.perf_counter() - T0:6.0f}s] {msg}", flush=True)


def recipe(path: str) -> Recipe:
    from omegaconf import OmegaConf

    return Recipe.from_dict(OmegaConf.to_container(OmegaConf.load(path)))


def states(work: Path, rec: Recipe):
    import pickle

    f = work / "states.pkl"
    if f.exists():
        return pickle.loads(f.read_bytes())
    out = {name: collect_states(rec, r, judge_candidates=0, seed=i) for i, (name, r) in enumerate(
        [("train", rec.train_tasks), ("cal", rec.calibration_tasks), ("held", rec.heldout_tasks)])}
    f.write_bytes(pickle.dumps(out))
    return out


def tokenizer(work: Path, st):
    from transformers import AutoTokenizer

    d = work / "tok"
    if d.exists():
        return AutoTokenizer.from_pretrained(str(d))
    texts = [m["content"] for s in st["train"] for m in s.context] + [action_reply(s.expert_action) for s in st["train"]]
    tok = build_tokenizer(texts, vocab_size=1024)
    tok.save_pretrained(str(d))
    return tok


PRODUCT_ID = re.compile(r"\bb0[a-z0-9]{8}\b", re.IGNORECASE)


def copy_augmented(states: list, copies: int, seed: int) -> list:
    """Each state ``copies`` more times with its WebShop product ids (and, on the search page, half the words
    of its instruction) replaced by fresh random ones, the same in prompt and action: states that cannot be
    memorised, only answered by copying from the prompt."""
    rng = random.Random(seed)
    words = sorted({w for s in states for m in s.context for w in m["content"].lower().split() if w.isalpha()})
    out = []
    for s in states:
        for _ in range(copies):
            fresh: dict[str, str] = {}

            def new_id(m: re.Match) -> str:
                key = m.group(0).lower()
                fresh.setdefault(key, "b0" + "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(8)))
                return fresh[key].upper() if m.group(0).isupper() else fresh[key]

            context = [{**m, "content": PRODUCT_ID.sub(new_id, m["content"])} for m in s.context]
            action = PRODUCT_ID.sub(new_id, s.expert_action)
            if action.startswith("search["):
                query = action[len("search["):-1]
                if not any(query in m["content"] for m in context):
                    continue
                salad = " ".join(w if rng.random() < 0.5 else rng.choice(words) for w in query.split())
                context = [{**m, "content": m["content"].replace(query, salad)} for m in context]
                action = f"search[{salad}]"
            out.append(dataclasses.replace(s, context=context, expert_action=action))
    return out


def fit(model, tok, samples: list, steps: int, lr: float, seed: int, check=None, check_every: int = 50) -> int:
    """The zoo build's trainer (batch 32, 20 warm-up steps); ``check(step) -> bool`` every ``check_every``
    steps stops it. Returns the steps taken."""
    spec = TrainSpec(steps=steps, batch_samples=32, lr=lr, warmup_steps=20)
    stop = None if check is None else (lambda step: step % check_every == 0 and check(step))
    return train_samples(model, tok, samples, spec, seed, "pilot", stop=stop)["steps"]


def measure(model, tok, held, max_new_tokens: int, teacher_actions=None) -> dict:
    """Greedy accuracy on ``held`` states and, where wrong, the probability of the right action."""
    agent = HFAgent(model, tok, name="m", batch_size=64)
    acts = [parse_action(r) for r in generate(agent, [s.context for s in held], max_new_tokens)]
    e = soft_errors(model, tok, held, acts, teacher_actions or [s.expert_action for s in held])
    return {"accuracy": e["agreement"], "median_p_right_where_wrong": e["median_p_teacher_action_where_wrong"],
            "actions": acts}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--recipe", default="leaderboards/conf/zoo/simonsays.yaml",
                    help="the recipe whose env, prompt, task ranges and caps the pilot uses")
    ap.add_argument("stages", nargs="+", choices=["teacher", "student", "opd"])
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--teacher-pretrain", type=int, default=1500)
    ap.add_argument("--teacher-sft", type=int, default=100)
    ap.add_argument("--student-size", default="hidden_size=96,num_hidden_layers=2,intermediate_size=384,"
                                               "num_attention_heads=3,num_key_value_heads=1,head_dim=32")
    ap.add_argument("--student-target", type=float, default=0.5)
    ap.add_argument("--student-max", type=int, default=3000)
    ap.add_argument("--student-name", default="student")
    ap.add_argument("--opd-steps", type=int, default=200)
    ap.add_argument("--opd-lr", type=float, default=3e-4)
    ap.add_argument("--opd-name", default="opd")
    ap.add_argument("--method", default="opd")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--copy-augment", type=int, default=0,
                    help="add N copies of each train state with fresh product ids / instruction words to the "
                         "pretraining corpus (WebShop)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    rec = recipe(a.recipe)
    cap = rec.max_new_tokens
    st = states(a.work, rec)
    tok = tokenizer(a.work, st)
    log(f"states {', '.join(f'{k} {len(v)}' for k, v in st.items())}; vocab {len(tok)}")
    extra = copy_augmented(st["train"], a.copy_augment, a.seed) if a.copy_augment else []
    pre = pretrain_corpus(tok, st["train"] + extra, a.noise, a.seed)
    report = a.work / "report.jsonl"

    def record(**kw):
        kw.pop("actions", None)
        log(json.dumps(kw))
        with report.open("a") as f:
            f.write(json.dumps(kw) + "\n")

    episodes = EpisodeEval(rec)
    if "teacher" in a.stages:
        model = tiny_qwen3(tok, size="S", seed=0)
        fit(model, tok, pre, a.teacher_pretrain, 3e-3, 0)
        m = measure(model, tok, st["held"], cap)
        record(model="teacher_base", steps=a.teacher_pretrain, noise=a.noise, copy_augment=a.copy_augment, **m,
               **episodes(HFAgent(model, tok, name="t", batch_size=32)))
        _save_folder(a.work / "teacher_base", model, tok)
        sft = [to_sample(tok, s.context, action_reply(s.expert_action)) for s in st["train"]]
        fit(model, tok, sft, a.teacher_sft, 1e-3, 1)
        m = measure(model, tok, st["held"], cap)
        record(model="teacher", **m, **episodes(HFAgent(model, tok, name="t", batch_size=32)))
        _save_folder(a.work / "teacher", model, tok)

    if "student" in a.stages:
        sizes = {k: int(v) for k, v in (kv.split("=") for kv in a.student_size.split(","))}
        model = tiny_qwen3(tok, size="S", seed=2, **sizes)

        def reached(step: int) -> bool:
            acc = measure(model, tok, st["cal"], cap)["accuracy"]
            log(f"  student calibration accuracy {acc:.3f} at step {step}")
            return acc >= a.student_target

        steps = fit(model, tok, pre, a.student_max, 3e-3, 2, check=reached, check_every=50)
        m = measure(model, tok, st["held"], cap)
        record(model=a.student_name, steps=steps, target=a.student_target, size=sizes,
               parameters=sum(p.numel() for p in model.parameters()), **m,
               **episodes(HFAgent(model, tok, name="s", batch_size=32)))
        _save_folder(a.work / a.student_name, model, tok)
    episodes.close()

    if "opd" in a.stages:
        from madopd_distill.trainer import TrainConfig, train

        cfg = TrainConfig.from_dict({
            "env": rec.env, "student": str(a.work / a.student_name), "method": a.method,
            "teachers": [{"name": "teacher", "path": str(a.work / "teacher")}],
            "env_kwargs": rec.env_kwargs, "prompt": rec.prompt, "split": rec.train_tasks.split,
            "num_train_tasks": rec.train_tasks.count, "steps": a.opd_steps,
            "rollout": {"num_envs": 2, "tasks_per_step": 8, "max_new_tokens": cap, "max_env_steps": rec.max_env_steps},
            "optim": {"lr": a.opd_lr, "warmup_steps": 10},
            "eval": {"split": rec.heldout_tasks.split, "first_task": rec.heldout_tasks.first,
                     "num_tasks": rec.heldout_tasks.count, "every": 20},
            "output_dir": str(a.work / a.opd_name), "seed": a.seed,
        })
        t = time.perf_counter()
        out = train(cfg)
        from madopd_distill.trainer import latest_checkpoint

        student, _ = load_causal_lm(str(latest_checkpoint(a.work / a.opd_name) / "model"))
        record(model=a.opd_name, method=a.method, steps=a.opd_steps, lr=a.opd_lr, seconds=time.perf_counter() - t,
               eval_success=out["eval_after"]["eval_success_rate"], **measure(student, tok, st["held"], cap))


if __name__ == "__main__":
    main()
