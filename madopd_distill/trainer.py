"""The on-policy distillation loop: rollout -> teacher scoring -> loss -> optimizer step.

One loop for every method (:func:`train`, read it top to bottom); a method (``methods/``) shapes
rollouts, samples, teacher scores, weights and the loss through its hooks. Models are
``transformers`` causal LMs; the optimisation goes through ``accelerate``, so the same code runs on
one CPU, one GPU, or -- launched with ``accelerate launch --config_file <fsdp-or-deepspeed.yaml>
-m madopd_distill.train ...`` -- sharded over GPUs (each process plays its own share of the
step's episodes; the student's own ``generate`` path is used for rollouts unless
``rollout.backend=vllm``).

Each step appends one JSON line to ``<output_dir>/log.jsonl``: loss, mean per-token KL,
trajectory-level KL (sum over a trajectory's student tokens of ``log p_S - log p_T``, averaged over
trajectories), success rate, tokens/s, timings and the method's extras; TensorBoard mirrors it when
``tensorboard`` is installed and enabled. Checkpoints are written to a temporary folder and renamed
into place (a crash never leaves a half checkpoint); ``resume=true`` continues from the latest.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import torch

from madopd_agents.base import SamplingParams
from madopd_distill.batch import StepBatch, micro_batches
from madopd_distill.distributed import (all_sum, average_gradients, data_parallel, ddp_kwargs, global_scale,
                                        reduction_count, shard_episodes)
from madopd_distill.methods import build_method
from madopd_distill.methods.base import LossOutput, Method, MethodContext, StudentOutput
from madopd_distill.preflight import check_disjoint
from madopd_distill.rollout import (Episode, RolloutCollector, RolloutPlan, RolloutPrompt, Sample, TaskSampler, Trajectory,
                                   group_episodes, turn_sample)
from madopd_distill.teachers import HFTeacher, OpenAITeacher, Teacher, VLLMTeacher, causal_lm_logits
from madopd_envs.profile import Profile


# -- configuration ---------------------------------------------------------------------------------
def _from_dict(cls: type, values: dict[str, Any] | None, what: str) -> Any:
    values = dict(values or {})
    types = {f.name: f.type for f in fields(cls)}
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown}; known: {sorted(types)}")
    return cls(**{k: _typed(f"{what}.{k}", types[k], v) for k, v in values.items()})


_SCALARS = {"int": int, "float": float, "bool": bool, "str": str}


def _typed(key: str, annotation: Any, value: Any) -> Any:
    """``value`` checked against a scalar field's annotation (``int``, ``float | None``, ...): a config
    value of the wrong type (``steps=abc``) fails here in one line, not as a ``TypeError`` deep inside."""
    kinds = [k.strip() for k in str(annotation).split("|")]
    base = [k for k in kinds if k != "None"]
    if (value is None and "None" in kinds) or len(base) != 1 or base[0] not in _SCALARS:
        return value
    name = base[0]
    if name == "float" and not isinstance(value, bool):
        try:  # ints are floats; YAML 1.1 reads ``1e-3`` (no dot) as a string
            return float(value)
        except (TypeError, ValueError):
            pass
    elif isinstance(value, _SCALARS[name]) and not (name == "int" and isinstance(value, bool)):
        return value
    raise ValueError(f"{key} must be {'an' if name == 'int' else 'a'} {name}, got {value!r}")


@dataclass
class TeacherSpec:
    """One teacher. ``backend``: ``hf`` (local folder / ``zoo:`` name in ``path``), ``vllm`` (``path``),
    ``openai`` (``base_url`` + ``model``). ``top_k``: default k for sparse backends. ``text_only``
    (openai only): a chat endpoint that gives text, no log-probs -- it writes (OmniOPD's continuations,
    debates) but never scores, so it is not among the method's scoring ``teachers``."""

    name: str = "teacher"
    backend: str = "hf"
    path: str | None = None
    base_url: str | None = None
    model: str | None = None
    top_k: int = 20
    batch_size: int = 8
    text_only: bool = False

    def __post_init__(self) -> None:
        if self.text_only and self.backend != "openai":
            raise ValueError(f"teacher {self.name}: text_only applies to the openai backend only")
        if self.backend not in ("hf", "vllm", "openai"):
            raise ValueError(f"teacher {self.name}: backend must be hf, vllm or openai, got {self.backend!r}")
        if self.backend in ("hf", "vllm") and not self.path:
            raise ValueError(f"teacher {self.name}: the {self.backend} backend needs a path")
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ValueError(f"teacher {self.name}: the openai backend needs base_url and model")


@dataclass
class OptimConfig:
    lr: float = 1e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0
    warmup_steps: int = 0
    schedule: str = "constant"  # constant | cosine (after warmup)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError("optim: lr must be > 0 and warmup_steps >= 0")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"optim.schedule must be constant or cosine, got {self.schedule!r}")


@dataclass
class RolloutConfig:
    """How rollouts are sampled. ``max_invalid_actions``: end a training episode after that many
    invalid actions (see ``RolloutCollector``; evaluation never stops early). ``backend=vllm`` reloads a vLLM engine from the latest checkpoint
    every ``reload_every`` steps (on CPU, vLLM cannot take weights in place)."""

    num_envs: int = 4
    tasks_per_step: int = 4
    group_size: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    max_env_steps: int | None = 20
    max_invalid_actions: int | None = None
    backend: str = "hf"
    reload_every: int = 1
    batch_size: int = 16
    vllm_args: dict[str, Any] = field(default_factory=dict)  # vllm.LLM kwargs, e.g. gpu_memory_utilization

    def __post_init__(self) -> None:
        if min(self.num_envs, self.tasks_per_step, self.group_size, self.max_new_tokens, self.reload_every) < 1:
            raise ValueError("rollout: num_envs, tasks_per_step, group_size, max_new_tokens, reload_every must be >= 1")
        if self.backend not in ("hf", "vllm"):
            raise ValueError(f"rollout.backend must be hf or vllm, got {self.backend!r}")

    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens)


@dataclass
class EvalConfig:
    """A fixed eval set: tasks ``first_task .. first_task + num_tasks - 1`` of ``split`` (0 = no eval),
    played greedily (``temperature``) before training, every ``every`` steps (0 = only before and
    after) and at the end. ``probe_states`` > 0 (with a ``ref_teacher``): each eval also logs
    ``probe/kl_token`` and ``probe/agreement`` on that many fixed states, the first ones the reference
    teacher meets playing the eval tasks (collected once; see :func:`probe_states`).

    Held-out tasks of the *training* split (``split=train``, ``first_task`` past the training tasks)
    measure learning on the training distribution: TextWorldExpress draws its valid/test folds from
    other object and room sets, which tiny models trained from scratch cannot name.
    """

    split: str = "valid"
    num_tasks: int = 0
    first_task: int = 0
    every: int = 0
    temperature: float = 0.0
    probe_states: int = 0

    def __post_init__(self) -> None:
        if min(self.num_tasks, self.first_task, self.every, self.probe_states) < 0 or self.temperature < 0:
            raise ValueError("eval: num_tasks, first_task, every, probe_states and temperature must be >= 0")

    def task_ids(self, all_ids: Sequence[str]) -> list[str]:
        ids = list(all_ids)[self.first_task: self.first_task + self.num_tasks]
        if self.num_tasks and len(ids) < self.num_tasks:
            raise ValueError(f"eval: split {self.split!r} has {len(all_ids)} tasks; asked for {self.num_tasks} "
                             f"from task {self.first_task}")
        return ids


@dataclass
class WorkersConfig:
    """Where the env workers run: ``backend`` ``process`` (local processes) or ``ray`` (Ray actors,
    the ``ray`` extra; ``ray_address`` a running cluster, none: a local one; ``cpus_per_env`` each).
    ``envs_per_worker``: envs hosted by one local process (fast engines: see ``madopd_envs.vector``)."""

    backend: str = "process"
    ray_address: str | None = None
    cpus_per_env: float | None = None  # None: fit the cluster (see madopd_envs.vector_ray.RayVectorEnv)
    envs_per_worker: int = 1

    def __post_init__(self) -> None:
        if self.backend not in ("process", "ray"):
            raise ValueError(f"workers.backend must be process or ray, got {self.backend!r}")
        if self.backend == "process" and self.ray_address:
            raise ValueError("workers.ray_address needs workers.backend=ray")
        if self.envs_per_worker < 1 or (self.backend == "ray" and self.envs_per_worker != 1):
            raise ValueError("workers.envs_per_worker must be >= 1, and 1 with backend=ray (an actor hosts one env)")

    def vec_options(self) -> dict[str, Any]:
        if self.backend == "ray":
            return {"backend": "ray", "ray_address": self.ray_address, "cpus_per_env": self.cpus_per_env}
        return {"envs_per_worker": self.envs_per_worker} if self.envs_per_worker > 1 else {}


@dataclass
class TrainConfig:
    """Everything :func:`train` needs (built from the Hydra config by ``train.py``)."""

    env: str
    student: str
    teachers: list[TeacherSpec]
    method: str = "opd"
    method_args: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    prompt: dict[str, Any] = field(default_factory=dict)
    split: str = "train"
    num_train_tasks: int | None = None
    steps: int = 10
    micro_batch_tokens: int = 8192
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "runs/distill"
    save_every: int = 0
    keep_checkpoints: int = 2
    resume: bool = False
    seed: int = 0
    dtype: str = "float32"
    tensorboard: bool = False
    ref_teacher: TeacherSpec | None = None
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    profile: bool = False  # print where the time went (env, prefill, decode, teacher, loss, optimizer, I/O)

    def __post_init__(self) -> None:
        from madopd_distill.methods import METHODS, method_class

        if self.method in METHODS:  # (an unknown method is named by preflight.check_method)
            needs = method_class(self.method)
            if needs.needs_teacher and not self.teachers:
                raise ValueError(f"method {self.method} needs at least one teacher")
            if self.rollout.group_size < needs.min_group_size:
                raise ValueError(f"method {self.method} compares episodes of the same task: it needs "
                                 f"rollout.group_size >= {needs.min_group_size}, got {self.rollout.group_size}")
        if self.steps < 0 or self.micro_batch_tokens < 1:
            raise ValueError("steps must be >= 0 and micro_batch_tokens >= 1")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        for key in ("method_args", "env_kwargs", "prompt"):  # YAML null = none
            d[key] = d.get(key) or {}
        d["teachers"] = [_from_dict(TeacherSpec, t, "teachers[]") for t in d.get("teachers") or []]
        if d.get("ref_teacher") is not None:
            d["ref_teacher"] = _from_dict(TeacherSpec, d["ref_teacher"], "ref_teacher")
        d["rollout"] = _from_dict(RolloutConfig, d.get("rollout"), "rollout")
        d["optim"] = _from_dict(OptimConfig, d.get("optim"), "optim")
        d["eval"] = _from_dict(EvalConfig, d.get("eval"), "eval")
        d["workers"] = _from_dict(WorkersConfig, d.get("workers"), "workers")
        return _from_dict(cls, d, "train config")


# -- models and teachers ---------------------------------------------------------------------------
def load_causal_lm(name_or_path: str, dtype: str = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) from a local folder, the local HF cache or ``zoo:<name>``; nothing downloads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from madopd_agents.zoo import resolve_model

    path = resolve_model(name_or_path)
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype), local_files_only=True)
    return model, tok


def build_teachers(specs: Sequence[TeacherSpec], student_tokenizer: Any, dtype: str = "float32",
                   device: Any = "cpu") -> tuple[dict[str, Teacher], dict[str, Any]]:
    """Teachers by name, and text-writing agents for the local ones (debates, teacher turns)."""
    from madopd_agents.hf import HFAgent

    teachers: dict[str, Teacher] = {}
    agents: dict[str, Any] = {}
    for s in specs:
        if s.name in teachers:
            raise ValueError(f"two teachers are named {s.name!r}")
        if s.backend == "hf":
            model, tok = load_causal_lm(s.path, dtype)
            model.to(device).requires_grad_(False)
            teachers[s.name] = HFTeacher(model, tok, student_tokenizer=student_tokenizer, name=s.name,
                                         batch_size=s.batch_size)
            agents[s.name] = HFAgent(model, tok, name=s.name)
        elif s.backend == "vllm":
            teachers[s.name] = VLLMTeacher(s.path, student_tokenizer=student_tokenizer, name=s.name, top_k=s.top_k)
        else:
            from madopd_agents.openai import OpenAIAgent

            if s.name in agents:
                raise ValueError(f"two teachers are named {s.name!r}")
            if not s.text_only:
                teachers[s.name] = OpenAITeacher(s.base_url, s.model, student_tokenizer=student_tokenizer,
                                                 name=s.name, top_k=s.top_k)
            agents[s.name] = OpenAIAgent(s.base_url, s.model, name=s.name, token_ids=not s.text_only)
    return teachers, agents


def student_forward(model: Any, batch: StepBatch, temperature: float = 1.0, hidden: bool = False) -> StudentOutput:
    """The student's logits at the batch's rows and its log-prob of each target (with grad); with
    ``hidden``, also its last hidden state there (``StudentOutput.hidden``)."""
    device = next(model.parameters()).device
    h = None
    logits = causal_lm_logits(model, batch.input_ids.to(device), batch.attention_mask.to(device), batch.rows,
                              batch.cols, return_hidden=hidden)
    if hidden:
        logits, h = logits
    z = logits.float() / temperature
    # gather - logsumexp: no [N, V] log_softmax is kept for the backward pass
    targets = batch.targets.to(logits.device)
    token_lp = z.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(z, -1)
    return StudentOutput(logits=logits, token_logprobs=token_lp, hidden=h, temperature=temperature, targets=targets)


def check_rollout_temperature(rollout: RolloutConfig, loss_temperature: float) -> None:
    """Refuse rollouts sampled at another temperature than the loss compares the models at.

    On-policy distillation trains the distribution that wrote the tokens; sampling at 0.7 and
    matching the teacher at 1.0 trains a policy that never wrote them. (Top-p < 1 is accepted: the
    losses compare full distributions, and the sampled-token advantage uses the student's own log-prob
    rather than the truncated sampler's.)"""
    if rollout.temperature != loss_temperature:
        raise ValueError(f"rollout.temperature={rollout.temperature} differs from the method's loss temperature "
                         f"{loss_temperature}: on-policy distillation trains the distribution that sampled; set "
                         f"rollout.temperature and the method's temperature to the same value")


# -- logging and checkpoints -----------------------------------------------------------------------
class StepLogger:
    """JSON lines in ``<dir>/log.jsonl`` (+ TensorBoard when asked for and installed)."""

    def __init__(self, out_dir: Path, tensorboard: bool = False, resume_from_step: int | None = None):
        self.path = out_dir / "log.jsonl"
        if resume_from_step is not None and self.path.exists():
            # Drop what a crashed run logged past its last checkpoint (step N = N steps done): redone now.
            keep = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", -1) <= resume_from_step]
            atomic_write(self.path, "".join(k + "\n" for k in keep))
        elif resume_from_step is None and self.path.exists():
            self.path.unlink()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError("tensorboard=true needs the tensorboard package: pip install tensorboard") from e
            self.tb = SummaryWriter(str(out_dir / "tb"))

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
        if self.tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                    self.tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def atomic_write(path: Path, text: str) -> None:
    """Written to a temporary sibling and renamed: a kill never leaves half a file behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(out_dir: Path, step: int, accelerator: Any, model: Any, tokenizer: Any, state: dict[str, Any],
                    keep: int = 2) -> Path:
    """``<out>/checkpoints/step-<N>``: an HF model folder (``model/``, loadable by vLLM/eval), the
    accelerate state (optimizer, scheduler, RNG; ``state/``) and ``trainer_state.json``. Written to a
    temporary folder, renamed into place, then ``latest`` is updated atomically."""
    root = out_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / "state"))
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(tmp / "model", state_dict=accelerator.get_state_dict(model))
        tokenizer.save_pretrained(tmp / "model")
        (tmp / "trainer_state.json").write_text(json.dumps({**state, "step": step}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write(root / "latest", final.name)
        for old in sorted(p for p in root.glob("step-*") if p != final)[: max(0, len(list(root.glob("step-*"))) - keep)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(out_dir: Path) -> Path | None:
    pointer = out_dir / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    path = out_dir / "checkpoints" / pointer.read_text().strip()
    return path if (path / "trainer_state.json").exists() else None


class CountingTeacher:
    """A teacher that counts the token positions it scores (``cost/teacher_tokens_scored``), so a
    study can compare what methods spend; everything else is the wrapped teacher's."""

    def __init__(self, inner: Teacher):
        self.inner, self.scored = inner, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def score(self, requests: Any, *, top_k: int | None = None) -> Any:
        out = self.inner.score(requests, top_k=top_k)
        self.scored += out.num_rows
        return out


class CountingAgent:
    """A teacher agent that counts the tokens it writes (debates, judgements, guided turns:
    ``cost/teacher_tokens_generated``)."""

    def __init__(self, inner: Any):
        self.inner, self.generated = inner, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def act(self, *args: Any, **kwargs: Any) -> Any:
        outs = self.inner.act(*args, **kwargs)
        self.generated += sum(len(o.token_ids or ()) for o in outs)
        return outs


def reference_kl(ref: Teacher, student: StudentOutput, batch: StepBatch, reuse: Any = None) -> torch.Tensor:
    """``[N]`` KL(S||T_ref) per student token, the reference teacher scoring the student's own tokens in
    the plain context (no privileged transcript, no teacher mixture), at temperature 1: the one quality
    metric every method logs (``ref/kl_token``, ``ref/kl_traj``) whatever its own loss."""
    from madopd_distill import divergences as D
    from madopd_distill.teachers import ScoreRequest

    with torch.no_grad():
        scores = reuse
        if scores is None:
            plain = [ScoreRequest(s.input_ids, [t for t, m in enumerate(s.loss_mask) if m]) for s in batch.samples]
            scores = ref.score(plain, top_k=None)  # served teachers answer with their default top-k
        s_logits = student.logits.detach().float()
        if scores.full:
            return D.chunked_divergence(s_logits, scores.logits.to(s_logits.device).float(), "reverse_kl")
        s_lp, t_lp = D.topk_logprobs(s_logits, scores.topk_ids.to(s_logits.device),
                                     scores.topk_logprobs.to(s_logits.device).float(), "remainder", 1.0)
        return D.divergence(s_lp, t_lp, "reverse_kl").detach()


# -- metrics ---------------------------------------------------------------------------------------
def episode_metrics(trajs: Sequence[Trajectory], prefix: str = "") -> dict[str, float]:
    ok = [t for t in trajs if t.error is None]
    n = max(len(ok), 1)
    return {
        f"{prefix}success_rate": sum(t.won for t in ok) / n,
        f"{prefix}score": sum(t.score for t in ok) / n,
        f"{prefix}episode_steps": sum(t.num_steps for t in ok) / n,
        f"{prefix}env_steps": sum(t.num_steps for t in trajs),
        f"{prefix}episodes": len(trajs),
        f"{prefix}errored": len(trajs) - len(ok),
    }


def evaluate(collector: RolloutCollector, task_ids: Sequence[str], split: str, sampling: SamplingParams,
             max_env_steps: int | None) -> dict[str, float]:
    """Success on a fixed task list, one episode each, with the collector's current student."""
    eps = [Episode(t, i, split) for i, t in enumerate(task_ids)]
    saved, collector.max_invalid_actions = collector.max_invalid_actions, None  # eval plays episodes out
    try:
        trajs = collector.collect(eps, [RolloutPlan(max_env_steps=max_env_steps) for _ in eps], sampling=sampling)
    finally:
        collector.max_invalid_actions = saved
    return episode_metrics(trajs, "eval_")


def _lr_lambda(cfg: OptimConfig, total: int):
    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        return 1.0

    return f


def _vllm_student(checkpoint: Path, tokenizer: Any, engine_kwargs: dict[str, Any] | None = None) -> Any:
    """A vLLM rollout agent loaded from a checkpoint's model folder (the CPU weight-sync path)."""
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise ImportError("rollout.backend=vllm needs vLLM (GPU: pip install vllm; x86 CPU: make setup-vllm, then "
                          "run with .venv-vllm/bin/python). Use rollout.backend=hf without it.") from e
    try:
        from madopd_agents.vllm import VLLMAgent
    except ImportError as e:
        raise ImportError("rollout.backend=vllm needs madopd_agents.vllm.VLLMAgent") from e
    return VLLMAgent.from_pretrained(str(checkpoint / "model"), name="student-vllm", **dict(engine_kwargs or {}))


# -- the loop --------------------------------------------------------------------------------------
@dataclass
class Run:
    """What the loop's phases share; built once by :func:`start_run`."""

    cfg: TrainConfig
    out_dir: Path
    accelerator: Any
    ddp: bool
    model: Any
    tokenizer: Any
    teachers: dict[str, CountingTeacher]
    teacher_agents: dict[str, CountingAgent]
    ref_teacher: Teacher | None
    ref_agent: Any
    method: Method
    optimizer: Any
    scheduler: Any
    collector: RolloutCollector
    sampler: TaskSampler
    eval_ids: list[str]
    eval_sampling: SamplingParams
    logger: StepLogger
    start: int
    prof: Profile = field(default_factory=Profile)  # --profile: the run's phases (each record has time_*_s)
    results: dict[str, Any] = field(default_factory=dict)
    probe: list[Sample] | None = None  # the fixed held-out states of the probe/* curves, collected once


@dataclass
class Learned:
    """What :func:`learn` leaves for the step's record: losses, per-row KLs and timings."""

    samples: int = 0
    any_samples: bool = False
    loss: float = 0.0
    kl: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    kl_traj: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    ref_kl: torch.Tensor | None = None
    extra: dict[str, list[float]] = field(default_factory=dict)
    t_teacher: float = 0.0
    t_loss: float = 0.0
    t_ref: float = 0.0


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run on-policy distillation; returns the last step's record (and eval results). Top to bottom:
    start (models, teachers, method, optimizer, envs; resume), the "before" eval, then per step
    rollouts -> samples, teacher scores and loss -> optimizer step -> log -> eval / checkpoint."""
    run = start_run(cfg)
    record: dict[str, Any] = {}
    try:
        if run.start == 0 and not already_logged(run, "before", 0):
            run_eval(run, 0, "before")
        for step in range(run.start, cfg.steps):
            record = train_step(run, step)
            after_step(run, step + 1)
        if not already_logged(run, "after", cfg.steps):
            run_eval(run, cfg.steps, "after")
    finally:
        with run.prof.phase("env shutdown"):
            run.collector.close()
        for served in (*run.teachers.values(), *run.teacher_agents.values()):
            getattr(served, "close", lambda: None)()  # vLLM engines, HTTP pools: nothing left running
        run.logger.close()
    if cfg.profile:
        run.accelerator.print(f"\nwhere the time went ({cfg.steps - run.start} steps; rank "
                              f"{run.accelerator.process_index}):\n{run.prof.table()}")
    return {"last": record, **run.results}


def start_run(cfg: TrainConfig) -> Run:
    """Models (the student, trained; the teachers, frozen; one tokenizer), the method, the optimizer,
    the resumed state, the logger and the env workers."""
    from accelerate import Accelerator

    from madopd_agents.hf import HFAgent

    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=ddp_kwargs())
    ddp = data_parallel(accelerator)  # several processes: see madopd_distill/distributed.py
    if cfg.rollout.tasks_per_step < accelerator.num_processes:
        raise ValueError(f"rollout.tasks_per_step ({cfg.rollout.tasks_per_step}) must be >= the "
                         f"{accelerator.num_processes} processes (each plays whole task groups)")
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    model, tokenizer = load_causal_lm(cfg.student, cfg.dtype)
    model.to(accelerator.device)
    teachers, teacher_agents = build_teachers(cfg.teachers, tokenizer, cfg.dtype, accelerator.device)
    ref_teacher, ref_agent = None, None  # the reference of ref/* and probe/*: a configured teacher is reused
    if cfg.ref_teacher is not None:
        same = [s.name for s in cfg.teachers if (s.backend, s.path, s.base_url, s.model) == (
            cfg.ref_teacher.backend, cfg.ref_teacher.path, cfg.ref_teacher.base_url, cfg.ref_teacher.model)]
        if same:
            ref_teacher, ref_agent = teachers[same[0]], teacher_agents.get(same[0])
        else:
            ts, ags = build_teachers([cfg.ref_teacher], tokenizer, cfg.dtype, accelerator.device)
            ref_teacher, ref_agent = ts[cfg.ref_teacher.name], ags.get(cfg.ref_teacher.name)
    teachers = {k: CountingTeacher(v) for k, v in teachers.items()}
    teacher_agents = {k: CountingAgent(v) for k, v in teacher_agents.items()}
    prompt = RolloutPrompt.for_env(cfg.env, **cfg.prompt)
    method: Method = build_method(cfg.method, cfg.method_args, MethodContext(
        teachers=teachers, teacher_agents=teacher_agents, tokenizer=tokenizer, prompt=prompt,
        total_steps=cfg.steps, seed=cfg.seed, student=model))
    check_rollout_temperature(cfg.rollout, method.cfg.temperature)

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.optim, cfg.steps))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    start = 0
    ckpt = latest_checkpoint(out_dir) if cfg.resume else None
    if cfg.resume and ckpt is None:
        accelerator.print(f"resume: no checkpoint in {out_dir / 'checkpoints'}; starting from step 0")
    if ckpt is not None:
        accelerator.load_state(str(ckpt / "state"))
        start = json.loads((ckpt / "trainer_state.json").read_text())["step"]
        accelerator.print(f"resumed from {ckpt} (step {start})")
    # The main process logs global figures to log.jsonl; process k > 0 its own share to rank<k>/log.jsonl.
    log_dir = out_dir if accelerator.is_main_process else out_dir / f"rank{accelerator.process_index}"
    log_dir.mkdir(parents=True, exist_ok=True)
    logger = StepLogger(log_dir, cfg.tensorboard and accelerator.is_main_process,
                        resume_from_step=start if cfg.resume else None)
    if accelerator.is_main_process:
        (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))

    # Rollouts: the student samples from the very model being trained (no weight sync needed).
    student_agent = HFAgent(accelerator.unwrap_model(model), tokenizer, name="student",
                            batch_size=cfg.rollout.batch_size)
    collector = RolloutCollector(cfg.env, cfg.rollout.num_envs, student_agent, cfg.rollout.sampling(), prompt=prompt,
                                 teacher_agent=next(iter(teacher_agents.values()), None),
                                 expert=method.needs_expert, max_env_steps=cfg.rollout.max_env_steps,
                                 max_invalid_actions=cfg.rollout.max_invalid_actions, env_kwargs=cfg.env_kwargs,
                                 vec_options=cfg.workers.vec_options())
    train_ids = collector.vec.call("tasks", cfg.split, indices=[0])[0][: cfg.num_train_tasks]
    eval_ids = cfg.eval.task_ids(collector.vec.call("tasks", cfg.eval.split, indices=[0])[0])
    check_disjoint(cfg.split, train_ids, cfg.eval.split, eval_ids)
    return Run(cfg=cfg, out_dir=out_dir, accelerator=accelerator, ddp=ddp, model=model, tokenizer=tokenizer,
               teachers=teachers, teacher_agents=teacher_agents, ref_teacher=ref_teacher, ref_agent=ref_agent,
               method=method, optimizer=optimizer, scheduler=scheduler, collector=collector,
               sampler=TaskSampler(train_ids, seed=cfg.seed * 7919),  # the global batch; each process plays its shard
               eval_ids=eval_ids, logger=logger, start=start,
               eval_sampling=SamplingParams(temperature=cfg.eval.temperature, max_new_tokens=cfg.rollout.max_new_tokens))


def train_step(run: Run, step: int) -> dict[str, Any]:
    """One optimizer step: rollouts, the loss over them, the update; returns (and logs) its record."""
    cfg = run.cfg
    torch.manual_seed(cfg.seed * 100_003 + step)  # reproducible sampling per step, also after resume
    t0 = time.perf_counter()
    # the step's teacher costs, rollouts included (guided turns, debates, judgements)
    scored0 = sum(t.scored for t in run.teachers.values())
    generated0 = sum(a.generated for a in run.teacher_agents.values())
    if cfg.rollout.backend == "vllm" and (step - run.start) % cfg.rollout.reload_every == 0:
        sync_vllm_student(run, step)
    trajs, stats, t_roll, phases = play(run, step)
    learned = learn(run, step, trajs)
    grad_norm, t_opt = optimizer_step(run, learned.any_samples)

    kl, traj_of = learned.kl, learned.kl_traj
    per_traj = [float(kl[traj_of == k].sum()) for k in sorted(set(traj_of.tolist()))]
    ref_metrics: dict[str, float] = {}
    if learned.ref_kl is not None:
        rkl = learned.ref_kl
        ref_traj = [float(rkl[traj_of == k].sum()) for k in sorted(set(traj_of.tolist()))]
        ref_metrics = {"ref/kl_token": float(rkl.mean()) if rkl.numel() else 0.0,
                       "ref/kl_traj": sum(ref_traj) / len(ref_traj) if ref_traj else 0.0,
                       "time_ref_s": learned.t_ref}
    elapsed = time.perf_counter() - t0 - learned.t_ref  # the measurement is not the method's cost
    loss_sum, trained, kl_mean = learned.loss, int(kl.numel()), float(kl.mean()) if kl.numel() else 0.0
    if run.ddp:  # global figures; each process's loss is (its share of the global loss) x world size
        n = run.accelerator.num_processes
        loss_all, trained_all, kl_all = all_sum([loss_sum, trained, float(kl.sum())], run.accelerator)
        loss_sum, trained = loss_all / n, int(trained_all)
        kl_mean = kl_all / trained if trained else 0.0
    record = {
        "kind": "train", "step": step + 1, "loss": loss_sum,
        "kl_token_mean": kl_mean,
        "kl_trajectory_mean": sum(per_traj) / len(per_traj) if per_traj else 0.0,
        **episode_metrics(trajs),
        "samples": learned.samples, "trained_tokens": trained, "num_processes": run.accelerator.num_processes,
        "trained_tokens_local": int(kl.numel()),
        "sampled_tokens": stats.sampled_tokens, "rollout_tokens_per_s": stats.tokens_per_second,
        "tokens_per_s": int(kl.numel()) / elapsed if elapsed > 0 else 0.0,
        "time_rollout_s": t_roll, "time_teacher_s": learned.t_teacher, "time_step_s": elapsed,
        **{f"time_{k.replace(' (other)', '_other')}_s": v for k, v in phases.items()},
        "time_loss_s": learned.t_loss, "time_optimizer_s": t_opt,
        "lr": run.scheduler.get_last_lr()[0], "grad_norm": grad_norm,
        "cost/teacher_tokens_scored": sum(t.scored for t in run.teachers.values()) - scored0,
        "cost/teacher_tokens_generated": sum(a.generated for a in run.teacher_agents.values()) - generated0,
        **ref_metrics,
        **{k: sum(v) / len(v) for k, v in learned.extra.items()},
        **run.method.log_metrics(trajs, step),
    }
    rest = max(0.0, elapsed - t_roll - learned.t_teacher - learned.t_loss - t_opt)
    for k, v in {**phases, "teacher": learned.t_teacher, "loss (student fwd+bwd)": learned.t_loss,
                 "optimizer": t_opt, "samples, collate, weights": rest}.items():
        run.prof.add(k, v)
    if learned.t_ref:
        run.prof.add("reference KL (measurement)", learned.t_ref)
    t_io = time.perf_counter()
    run.logger.log(record)
    run.prof.add("I/O (log)", time.perf_counter() - t_io)
    run.accelerator.print(f"[step {step + 1}/{cfg.steps}] loss {record['loss']:.4f} kl/token "
                          f"{record['kl_token_mean']:.4f} success {record['success_rate']:.2f} ({elapsed:.1f}s)")
    return record


def sync_vllm_student(run: Run, step: int) -> None:
    """``rollout.backend=vllm``: the engine must sample the current weights, so it is reloaded from the
    step's checkpoint (written now if missing); the previous engine goes first (one engine's memory)."""
    ck = latest_checkpoint(run.out_dir)
    if ck is None or ck.name != f"step-{step:06d}":
        ck = save_checkpoint(run.out_dir, step, run.accelerator, run.model, run.tokenizer, {"seed": run.cfg.seed},
                             run.cfg.keep_checkpoints)
    if hasattr(run.collector.student, "llm"):
        run.collector.student.close()
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    run.collector.student = _vllm_student(ck, run.tokenizer, run.cfg.rollout.vllm_args)


def play(run: Run, step: int) -> tuple[list[Trajectory], Any, float, dict[str, float]]:
    """1. The step's rollouts, shaped by the method's plans: (trajectories, collector stats, seconds,
    seconds per phase)."""
    cfg, collector = run.cfg, run.collector
    t0 = time.perf_counter()
    tasks = run.sampler.sample(step, cfg.rollout.tasks_per_step)
    episodes = group_episodes(tasks, cfg.rollout.group_size, cfg.split, first_group=step * 10_000)
    episodes = shard_episodes(episodes, run.accelerator.process_index, run.accelerator.num_processes)
    gen0 = dict(getattr(collector.student, "timings", None) or {})
    trajs = run.method.collect(collector, episodes, step)
    if hasattr(collector.student, "clear_cache"):  # the optimizer step invalidates the prefix cache:
        collector.student.clear_cache()  # free its memory before the loss instead of after
    stats = collector.last_stats
    t_roll = time.perf_counter() - t0
    gen = {k: v - gen0.get(k, 0.0) for k, v in (getattr(collector.student, "timings", None) or {}).items()}
    phases = {"env": stats.env_seconds, **gen,
              "rollout (other)": max(0.0, t_roll - stats.env_seconds - sum(gen.values()))}
    return trajs, stats, t_roll, phases


def learn(run: Run, step: int, trajs: Sequence[Trajectory]) -> Learned:
    """2. samples -> 3. teacher scores -> 4. weights -> 5. loss and backward, micro-batch by micro-batch
    (gradients accumulate; the optimizer steps after)."""
    cfg, method, model, accelerator = run.cfg, run.method, run.model, run.accelerator
    samples = method.make_samples(trajs, step)
    model.train()
    run.optimizer.zero_grad(set_to_none=True)
    out = Learned(samples=len(samples), any_samples=bool(samples))
    kl_rows, kl_traj, ref_rows = [], [], []
    scale = 1.0
    if run.ddp:  # the reduction over the global batch, not per process
        local = reduction_count(samples, method.cfg.reduction)
        total, n_samples = all_sum([local, len(samples)], accelerator)
        scale, out.any_samples = global_scale(local, total, accelerator.num_processes), n_samples > 0
    sync = accelerator.no_sync(model) if run.ddp else contextlib.nullcontext()
    with sync:
        for batch in micro_batches(samples, method.cfg.reduction, run.tokenizer.pad_token_id, cfg.micro_batch_tokens):
            if scale != 1.0:
                batch.reduce_weight = batch.reduce_weight * scale
            ts = time.perf_counter()
            scores = method.score(batch, step)
            out.t_teacher += time.perf_counter() - ts
            tl = time.perf_counter()
            student = student_forward(model, batch, method.cfg.temperature, hidden=method.needs_student_hidden)
            dev = student.logits.device  # collate and teachers give CPU tensors; the student may be on a GPU
            batch, scores = batch.to(dev), [s.to(dev) for s in scores]
            weights = method.token_weights(batch, scores, step).to(dev)
            lo: LossOutput = method.loss(student, scores, weights, batch, step)
            if lo.loss.requires_grad:  # a micro-batch whose weights are all zero has nothing to learn
                accelerator.backward(lo.loss)
            out.t_loss += time.perf_counter() - tl
            out.loss += float(lo.loss.detach())
            kl_rows.append(lo.token_kl.cpu())
            kl_traj.append(batch.row_traj.cpu())
            if run.ref_teacher is not None:
                tr = time.perf_counter()
                plain = type(method).score is Method.score and scores and scores[0].full and \
                    run.teachers[next(iter(run.teachers))].inner is run.ref_teacher and \
                    all(s.teacher_input_ids is None for s in batch.samples)
                ref_rows.append(reference_kl(run.ref_teacher, student, batch, scores[0] if plain else None).cpu())
                out.t_ref += time.perf_counter() - tr
            for k, v in lo.metrics.items():
                out.extra.setdefault(k, []).append(float(v))
    if run.ddp and out.any_samples:
        average_gradients(model, accelerator)
    if kl_rows:
        out.kl, out.kl_traj = torch.cat(kl_rows), torch.cat(kl_traj)
    if run.ref_teacher is not None:
        out.ref_kl = torch.cat(ref_rows) if ref_rows else torch.zeros(0)
    return out


def optimizer_step(run: Run, any_samples: bool) -> tuple[float | None, float]:
    """The update (skipped when no process had a sample; the schedule still advances): (grad norm, seconds)."""
    t = time.perf_counter()
    grad_norm = None
    if any_samples:
        if run.cfg.optim.grad_clip:
            grad_norm = float(run.accelerator.clip_grad_norm_(run.model.parameters(), run.cfg.optim.grad_clip))
        run.optimizer.step()
    run.scheduler.step()
    return grad_norm, time.perf_counter() - t


def after_step(run: Run, done: int) -> None:
    """The in-training eval every ``eval.every`` steps, then the checkpoint (so a resume from it has every
    record up to it)."""
    cfg = run.cfg
    if cfg.eval.every and done % cfg.eval.every == 0 and done != cfg.steps:
        run_eval(run, done, f"step{done}")
    if (cfg.save_every and done % cfg.save_every == 0) or done == cfg.steps:
        with run.prof.phase("I/O (checkpoints)"):
            save_checkpoint(run.out_dir, done, run.accelerator, run.model, run.tokenizer, {"seed": cfg.seed},
                            cfg.keep_checkpoints)


def run_eval(run: Run, step: int, when: str) -> None:
    """Held-out success on the fixed eval tasks, and where a reference teacher is given the ``probe/*``
    figures on the fixed probe states; one ``eval`` record."""
    if not run.eval_ids:
        return
    with run.prof.phase("eval"):
        m = evaluate(run.collector, run.eval_ids, run.cfg.eval.split, run.eval_sampling, run.cfg.rollout.max_env_steps)
        if run.cfg.eval.probe_states and run.ref_teacher is not None:
            if run.probe is None:
                run.probe = probe_states(run)
            m.update(probe(run))
    run.logger.log({"kind": "eval", "step": step, "when": when, **m})
    run.results[f"eval_{when}"] = m
    run.accelerator.print(f"[eval {when} step {step}] success {m['eval_success_rate']:.3f} score {m['eval_score']:.3f}")


def already_logged(run: Run, when: str, step: int) -> bool:
    """An eval a resumed run already has (its log is cut at the checkpoint)."""
    path = run.logger.path
    return path.exists() and any(
        r.get("kind") == "eval" and r.get("when") == when and r.get("step") == step
        for r in map(json.loads, filter(str.strip, path.read_text().splitlines())))


# -- the fixed probe set ---------------------------------------------------------------------------
def probe_states(run: Run) -> list[Sample]:
    """The first ``eval.probe_states`` states the reference teacher meets playing the eval tasks greedily,
    each with the teacher's own reply: fixed for the whole run (and the same after a resume), so the
    curves measure the student moving toward the teacher, not the student's own drift."""
    if run.ref_agent is None:
        raise ValueError("eval.probe_states needs a reference teacher that can play (a local hf teacher)")
    collector = run.collector
    student, collector.student = collector.student, run.ref_agent
    saved, collector.max_invalid_actions = collector.max_invalid_actions, None
    try:
        eps = [Episode(t, i, run.cfg.eval.split) for i, t in enumerate(run.eval_ids)]
        trajs = collector.collect(eps, [RolloutPlan(max_env_steps=run.cfg.rollout.max_env_steps) for _ in eps],
                                  sampling=SamplingParams(temperature=0.0, max_new_tokens=run.cfg.rollout.max_new_tokens))
    finally:
        collector.student, collector.max_invalid_actions = student, saved
    states = []
    for k, t in enumerate(trajs):
        for i, turn in enumerate(t.turns if t.error is None else []):
            if turn.role == "student":
                sample = turn_sample(t, k, i)
                sample.meta.update(context=turn.context, action=turn.action)
                states.append(sample)
    return states[: run.cfg.eval.probe_states]


def probe(run: Run) -> dict[str, float]:
    """On the fixed probe states: ``probe/kl_token``, the mean full-vocabulary KL(S||T_ref) over the
    teacher's reply tokens, and ``probe/agreement``, the share of states where the student's greedy
    action is the teacher's."""
    model = run.accelerator.unwrap_model(run.model)
    model.eval()
    kls = []
    with torch.no_grad():
        for batch in micro_batches(run.probe, "token_mean", run.tokenizer.pad_token_id, run.cfg.micro_batch_tokens):
            student = student_forward(model, batch)
            kls.append(reference_kl(run.ref_teacher, student, batch.to(student.logits.device)).cpu())
    greedy = SamplingParams(temperature=0.0, max_new_tokens=run.cfg.rollout.max_new_tokens)
    outs = run.collector.student.act([s.meta["context"] for s in run.probe], greedy)
    agree = [run.collector.prompt.parse_action(o.text) == s.meta["action"] for o, s in zip(outs, run.probe)]
    kl = torch.cat(kls) if kls else torch.zeros(0)
    return {"probe/kl_token": float(kl.mean()) if kl.numel() else 0.0,
            "probe/agreement": sum(agree) / len(agree) if agree else 0.0, "probe/states": len(run.probe)}
