"""Supervised baselines: SFT on expert trajectories, and SeqKD (SFT on teacher-generated ones).

CLI: ``python -m madopd_distill.sft [key=value ...]`` (Hydra config ``leaderboards/conf/distill/sft.yaml``).

- ``data=expert``: episodes are played by the env's expert (``info["expert_action"]``, envs made
  with ``expert=True``); each expert action, written as the reply the prompt format asks for
  (``<action>...</action>``), is a target in the context the student would have seen.
- ``data=teacher`` (SeqKD, Kim & Rush 2016): a teacher model plays the episodes; its sampled
  turns (optionally only from won episodes) are the targets -- exactly the tokens it sampled.

The loss is token-level cross-entropy on the target tokens only (prompt and observations masked).
``model=new:<S|M>`` starts from a randomly initialised tiny Qwen3 (``madopd_agents.zoo``) whose
tokenizer is trained on the episodes' text (or reused from ``tokenizer=<folder>``, so a teacher and
a student share it): the offline recipe that makes a tiny teacher for CPU distillation runs.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from madopd_agents.base import SamplingParams
from madopd_distill.batch import micro_batches
from madopd_distill.rollout import Episode, RolloutCollector, RolloutPlan, RolloutPrompt, Sample, Trajectory, to_samples
from madopd_distill.trainer import (EvalConfig, OptimConfig, StepLogger, _from_dict, _lr_lambda, episode_metrics,
                                    evaluate, load_causal_lm, student_forward)


@dataclass
class SFTConfig:
    """An SFT / SeqKD run.

    Attributes:
        env: the environment whose episodes make the data.
        model: the model to train: a folder / HF id / ``zoo:<name>``, or ``new:S`` / ``new:M``.
        tokenizer: with ``new:*``: a folder whose tokenizer to reuse; ``None`` trains one on the data.
        vocab_size: size of a tokenizer trained on the data.
        model_overrides: with ``new:*``: ``Qwen3Config`` fields over the tiny size (e.g. a smaller
            student: ``{hidden_size: 64, num_hidden_layers: 1}``).
        data: ``expert`` or ``teacher`` (SeqKD).
        teacher: SeqKD: the teacher model (folder / id / zoo name); same tokenizer as ``model``.
        only_won: SeqKD: keep only episodes the teacher won.
        split / num_tasks / episodes: ``episodes`` episodes over the first ``num_tasks`` tasks of ``split``.
        epochs / batch_samples: passes over the data and samples per optimizer step.
        max_env_steps / max_new_tokens / temperature: episode cap, and the teacher's sampling (SeqKD).
    """

    env: str
    model: str
    tokenizer: str | None = None
    vocab_size: int = 2048
    model_overrides: dict[str, Any] = field(default_factory=dict)
    data: str = "expert"
    teacher: str | None = None
    only_won: bool = True
    split: str = "train"
    num_tasks: int | None = None
    episodes: int = 100
    epochs: int = 3
    batch_samples: int = 16
    micro_batch_tokens: int = 16384
    max_env_steps: int = 20
    max_new_tokens: int = 64
    temperature: float = 1.0
    num_envs: int = 4
    prompt: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3))
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "runs/sft"
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.data not in ("expert", "teacher"):
            raise ValueError(f"data must be expert or teacher (SeqKD), got {self.data!r}")
        if self.data == "teacher" and not self.teacher:
            raise ValueError("data=teacher (SeqKD) needs teacher=<model>")
        if min(self.episodes, self.epochs, self.batch_samples, self.num_envs) < 1:
            raise ValueError("episodes, epochs, batch_samples and num_envs must be >= 1")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SFTConfig:
        d = dict(d)
        for key in ("model_overrides", "prompt"):  # YAML null = none
            d[key] = d.get(key) or {}
        d["optim"] = _from_dict(OptimConfig, d.get("optim"), "optim")
        d["eval"] = _from_dict(EvalConfig, d.get("eval"), "eval")
        return _from_dict(cls, d, "sft config")


# -- data ------------------------------------------------------------------------------------------
def _always_expert(turn: int, info: dict[str, Any]) -> str:
    return "expert"


def expert_samples(trajs: Sequence[Trajectory], tokenizer: Any) -> list[Sample]:
    """One sample per expert turn: the chat-template context the student would see + the reply + eos."""
    out = []
    for k, traj in enumerate(trajs):
        if traj.error is not None:
            continue
        for i, t in enumerate(traj.turns):
            if t.provenance != "expert" or t.context is None:
                continue
            ctx = list(tokenizer.apply_chat_template(t.context, add_generation_prompt=True, tokenize=True,
                                                     return_dict=False))
            target = tokenizer(t.text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            out.append(Sample(ctx + target, [False] * len(ctx) + [True] * len(target), [0.0] * (len(ctx) + len(target)),
                              traj_index=k, turn_indices=[i], mode="turn"))
    return out


def collect_episodes(cfg: SFTConfig, agent: Any, prompt: RolloutPrompt, expert: bool) -> list[Trajectory]:
    """Play ``cfg.episodes`` episodes on the first ``num_tasks`` tasks (by the expert, or by ``agent``)."""
    sampling = SamplingParams(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
    with RolloutCollector(cfg.env, cfg.num_envs, agent, sampling, prompt=prompt, expert=expert,
                          max_env_steps=cfg.max_env_steps) as col:
        ids = col.vec.call("tasks", cfg.split, indices=[0])[0][: cfg.num_tasks]
        rng = random.Random(cfg.seed)
        tasks = [ids[i % len(ids)] for i in range(cfg.episodes)] if cfg.episodes <= len(ids) else \
            [rng.choice(ids) for _ in range(cfg.episodes)]
        eps = [Episode(t, i, cfg.split) for i, t in enumerate(tasks)]
        plan = RolloutPlan(writer=_always_expert if expert else None, max_env_steps=cfg.max_env_steps)
        return col.collect(eps, [plan] * len(eps))


def episode_texts(trajs: Sequence[Trajectory]) -> list[str]:
    """Every rendered message of every turn (tokenizer training data)."""
    texts = []
    for t in trajs:
        for turn in t.turns:
            if turn.context:
                texts.extend(m["content"] for m in turn.context[-2:])
            texts.append(turn.text)
    return texts


def make_model(cfg: SFTConfig, texts: Sequence[str]) -> tuple[Any, Any]:
    """The model to train: loaded, or a new tiny Qwen3 (tokenizer reused or trained on ``texts``)."""
    if not cfg.model.startswith("new:"):
        return load_causal_lm(cfg.model, cfg.dtype)
    from transformers import AutoTokenizer

    from madopd_agents.zoo import build_tokenizer, tiny_qwen3

    if cfg.tokenizer:
        tok = AutoTokenizer.from_pretrained(cfg.tokenizer, local_files_only=True)
        tok.padding_side = "left"
    else:
        tok = build_tokenizer(texts, vocab_size=cfg.vocab_size)
    return tiny_qwen3(tok, size=cfg.model[4:], seed=cfg.seed, **cfg.model_overrides), tok


# -- training --------------------------------------------------------------------------------------
def sft(cfg: SFTConfig) -> dict[str, Any]:
    """Collect the data, train with cross-entropy on the targets, save ``<output_dir>/model``."""
    from madopd_agents.hf import HFAgent

    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    torch.manual_seed(cfg.seed)
    prompt = RolloutPrompt.for_env(cfg.env, **cfg.prompt)
    t0 = time.perf_counter()
    if cfg.data == "expert":
        trajs = collect_episodes(cfg, None, prompt, expert=True)
        model, tok = make_model(cfg, episode_texts(trajs))
        samples = expert_samples(trajs, tok)
    else:
        teacher, ttok = load_causal_lm(cfg.teacher, cfg.dtype)
        trajs = collect_episodes(cfg, HFAgent(teacher, ttok, name="teacher"), prompt, expert=False)
        kept = [t for t in trajs if t.won or not cfg.only_won]
        model, tok = make_model(cfg, episode_texts(kept))
        if tok.get_vocab() != ttok.get_vocab():
            raise ValueError("SeqKD keeps the teacher's sampled token ids: the model must use the teacher's tokenizer")
        samples = to_samples(kept, "turn")
        del teacher
    data = {**episode_metrics(trajs, "data_"), "samples": len(samples), "target_tokens": sum(s.num_tokens for s in samples),
            "time_data_s": time.perf_counter() - t0}
    print(f"[sft] {cfg.data} data: {len(trajs)} episodes, success {data['data_success_rate']:.2f}, "
          f"{len(samples)} samples, {data['target_tokens']} target tokens", flush=True)
    if not samples:
        raise RuntimeError("no training samples (SeqKD with only_won and a teacher that never wins?)")

    logger = StepLogger(out_dir)
    logger.log({"kind": "data", "step": 0, **data})
    agent = HFAgent(model, tok, name="sft-model")
    eval_sampling = SamplingParams(temperature=cfg.eval.temperature, max_new_tokens=cfg.max_new_tokens)
    results: dict[str, Any] = {"data": data}

    def run_eval(step: int, when: str) -> None:
        if cfg.eval.num_tasks <= 0:
            return
        with RolloutCollector(cfg.env, cfg.num_envs, agent, eval_sampling, prompt=prompt) as col:
            ids = cfg.eval.task_ids(col.vec.call("tasks", cfg.eval.split, indices=[0])[0])
            m = evaluate(col, ids, cfg.eval.split, eval_sampling, cfg.max_env_steps)
        logger.log({"kind": "eval", "step": step, "when": when, **m})
        results[f"eval_{when}"] = m
        print(f"[sft eval {when}] success {m['eval_success_rate']:.3f} score {m['eval_score']:.3f}", flush=True)

    steps_per_epoch = (len(samples) + cfg.batch_samples - 1) // cfg.batch_samples
    total = steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.optim, total))
    rng = random.Random(cfg.seed)
    step = 0
    for epoch in range(cfg.epochs):
        order = list(range(len(samples)))
        rng.shuffle(order)
        for s in range(0, len(order), cfg.batch_samples):
            ts = time.perf_counter()
            chunk = [samples[i] for i in order[s: s + cfg.batch_samples]]
            model.train()
            optimizer.zero_grad(set_to_none=True)
            loss_sum, ntok = 0.0, 0
            for batch in micro_batches(chunk, "token_mean", tok.pad_token_id, cfg.micro_batch_tokens):
                out = student_forward(model, batch)
                loss = -(batch.reduce_weight * out.token_logprobs).sum()
                loss.backward()
                loss_sum += float(loss.detach())
                ntok += batch.num_rows
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            dt = time.perf_counter() - ts
            logger.log({"kind": "train", "step": step, "epoch": epoch, "loss": loss_sum, "tokens": ntok,
                        "tokens_per_s": ntok / dt if dt > 0 else 0.0, "lr": scheduler.get_last_lr()[0]})
            if step % max(1, total // 10) == 0 or step == total:
                print(f"[sft step {step}/{total}] loss {loss_sum:.4f}", flush=True)
    model.eval()
    save_dir = out_dir / "model"
    from madopd_agents.zoo import _save_folder  # atomic: temp folder renamed into place

    _save_folder(save_dir, model, tok)
    run_eval(step, "after")
    logger.close()
    results["model_dir"] = str(save_dir)
    return results


def load_config(argv: list[str]) -> SFTConfig:
    """The checked :class:`SFTConfig` of a command line; bad input raises ``InputError`` before any
    model loads (a bad key or value, an unknown env, missing weights, overlapping train and eval tasks)."""
    from madopd_distill.preflight import InputError, check_env, check_model, check_eval_window, compose, one_line
    from madopd_distill.train import CONF_DIR

    try:
        cfg = SFTConfig.from_dict(compose(str(CONF_DIR), "sft", argv))
    except (TypeError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(one_line(e)) from None
    check_env(cfg.env)
    for what, name in (("model", cfg.model), ("teacher", cfg.teacher), ("tokenizer", cfg.tokenizer)):
        if name and not name.startswith("new:"):
            check_model(what, name)
    if cfg.eval.num_tasks:
        check_eval_window(cfg.env, {}, cfg.split, lambda ids: ids[: cfg.num_tasks], cfg.eval.split, cfg.eval.task_ids)
    return cfg


def main(argv: list[str] | None = None) -> None:
    import sys

    from madopd_distill.preflight import run_cli

    argv = sys.argv[1:] if argv is None else argv
    run_cli(lambda: sft(load_config(argv)), argv=argv, doc=__doc__)


if __name__ == "__main__":
    main()
