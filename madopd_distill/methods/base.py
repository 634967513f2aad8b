"""The Method interface: what an OPD variant may change in the one training loop.

The loop (:mod:`madopd_distill.trainer`) is fixed; per training step it calls, in order::

    plans   = [method.rollout_plan(step, ep) for ep in episodes]      # 1. who writes which turn
    trajs   = method.collect(collector, episodes, step)                 #    (default: collector.collect(episodes, plans))
    samples = method.make_samples(trajs, step)                           # 2. whole trajectory or per turn
    for batch in micro_batches(samples, cfg.reduction, ...):
        scores  = method.score(batch, step)                             # 3. one TokenScores per teacher
        student = student_forward(model, batch, cfg.temperature)         #    (the loop's, not the method's)
        weights = method.token_weights(batch, scores, step)             # 4. per-token weights [N]
        out     = method.loss(student, scores, weights, batch, step)    # 5. divergence + reduction
        backward(out.loss)
    log(method.log_metrics(trajs, step) | out.metrics)                   # 6. extra logging

:class:`Method` itself *is* vanilla on-policy distillation (Agarwal et al. 2306.13649 / GKD with
``lmbda=1``; Thinking Machines' OPD with ``divergence="sampled_token"``): the student writes every
turn, samples are whole trajectories, one teacher scores every student token, weights are 1, the
loss is the configured divergence reduced by ``reduction``. A variant overrides only the hooks
it changes and adds its knobs to a ``Config`` dataclass subclassing :class:`MethodConfig`.

Conventions every hook can rely on:

- rows: one per trained token, packed over the micro-batch's samples (``batch.rows/cols``);
  ``student.logits`` is ``[N, V]``, ``scores[k].token_logprobs`` is ``[N]``...
- ``batch.reduce_weight`` already holds the step-wide reduction; a loss is
  ``sum(batch.reduce_weight * weights * per_row_loss)`` (:func:`reduce_rows`).
- teachers: ``self.ctx.teachers`` (name -> Teacher, in config order); teachers that can also
  write text: ``self.ctx.teacher_agents``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Sequence

import torch

from madopd_distill import divergences as D
from madopd_distill.batch import REDUCTIONS, StepBatch
from madopd_distill.rollout import Episode, RolloutPlan, RolloutPrompt, Sample, Trajectory, to_samples
from madopd_distill.teachers import Teacher, TokenScores

if TYPE_CHECKING:
    from madopd_agents.base import Agent
    from madopd_distill.rollout import RolloutCollector

DivergenceName = Literal["forward_kl", "reverse_kl", "jsd", "sampled_token"]
DIVERGENCES: tuple[str, ...] = (*D.KINDS, "sampled_token")


@dataclass
class MethodConfig:
    """The knobs of vanilla OPD, shared by every method (subclass to add yours).

    Attributes:
        divergence: ``reverse_kl`` = KL(S||T) (OPD's default), ``forward_kl`` = KL(T||S), ``jsd``
            (generalized JSD with ``beta``), or ``sampled_token``: the policy-gradient form with
            per-token advantage ``kl_coef * (log p_T(y) - log p_S(y))`` (tinker-cookbook, TCOD).
        beta: generalized-JSD beta in [0, 1] (0 = forward KL, 1 = reverse KL); ``jsd`` only.
        temperature: divides student and teacher logits before the softmax (> 0).
        top_k: ``None``: full-vocabulary teacher distributions; ``k``: the teacher's top-k only
            (sparse teachers), see ``topk_mode``.
        topk_mode: ``remainder`` (k tokens + "the rest") or ``renorm`` (renormalised over k).
        kl_coef: the sampled-token advantage coefficient (``sampled_token`` only).
        clip_ratio: PPO clip of the importance ratio for ``sampled_token`` (``None``: no clipping).
        sample_mode: ``trajectory`` (one sample per episode) or ``turn`` (one per student turn).
        reduction: ``token_mean``, ``sample_mean``, ``trajectory_mean`` or ``sample_sum``.
        chunk_size: rows per chunk of the full-vocabulary divergence (memory vs speed).
        max_env_steps: per-episode env step cap for rollouts (``None``: the env's own).
    """

    divergence: DivergenceName = "reverse_kl"
    beta: float = 0.5
    temperature: float = 1.0
    top_k: int | None = None
    topk_mode: D.TopKMode = "remainder"
    kl_coef: float = 1.0
    clip_ratio: float | None = None
    sample_mode: Literal["trajectory", "turn"] = "trajectory"
    reduction: str = "token_mean"
    chunk_size: int = 64
    max_env_steps: int | None = None

    def __post_init__(self) -> None:
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {DIVERGENCES}, got {self.divergence!r}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.topk_mode not in ("remainder", "renorm"):
            raise ValueError(f"topk_mode must be 'remainder' or 'renorm', got {self.topk_mode!r}")
        if self.clip_ratio is not None and self.clip_ratio <= 0:
            raise ValueError(f"clip_ratio must be > 0 or None, got {self.clip_ratio}")
        if self.sample_mode not in ("trajectory", "turn"):
            raise ValueError(f"sample_mode must be 'trajectory' or 'turn', got {self.sample_mode!r}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.max_env_steps is not None and self.max_env_steps < 1:
            raise ValueError(f"max_env_steps must be >= 1 or None, got {self.max_env_steps}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MethodConfig:
        """Build from a (Hydra) mapping; unknown keys fail with the known ones listed."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MethodContext:
    """What a method may use besides its config.

    Attributes:
        teachers: name -> Teacher, in config order (the first is "the" teacher of single-teacher methods).
        teacher_agents: name -> Agent for teachers that also write text (debates, teacher turns).
        tokenizer: the student's tokenizer (teachers share it).
        prompt: the prompt format the rollouts use.
        total_steps: planned optimizer steps (for schedules).
        seed: the run's seed.
        student: the student model being trained (read-only use: e.g. OmniOPD's no-grad entropy pass);
            ``None`` where the caller has none.
    """

    teachers: dict[str, Teacher]
    teacher_agents: dict[str, Agent] = field(default_factory=dict)
    tokenizer: Any = None
    prompt: RolloutPrompt | None = None
    total_steps: int = 1
    seed: int = 0
    student: Any = None

    @property
    def teacher(self) -> Teacher:
        if not self.teachers:
            raise ValueError("this method needs at least one teacher")
        return next(iter(self.teachers.values()))


@dataclass
class StudentOutput:
    """The student's forward pass on a batch's rows.

    Attributes:
        logits: ``[N, V]`` next-token logits at the rows (not divided by the temperature), with grad.
        token_logprobs: ``[N]`` log p_S(target) at ``temperature``, with grad.
        hidden: ``[N, H]`` the student's last hidden state at the rows (the position that predicts
            each target), only when the method sets ``needs_student_hidden`` (FusionRoute's head).
        temperature: the loss temperature ``token_logprobs`` are at (teachers are compared at it too).
        targets: ``[N]`` the sampled token of each row (to score a full teacher at ``temperature``).
    """

    logits: torch.Tensor
    token_logprobs: torch.Tensor
    hidden: torch.Tensor | None = None
    temperature: float = 1.0
    targets: torch.Tensor | None = None


@dataclass
class LossOutput:
    """What :meth:`Method.loss` returns.

    Attributes:
        loss: the scalar to backpropagate (already reduced with ``batch.reduce_weight``).
        token_kl: ``[N]`` detached per-token KL to log (mean per-token KL, trajectory KL); by
            convention :func:`sampled_kl` against the (main) teacher.
        metrics: extra scalars for the log.
    """

    loss: torch.Tensor
    token_kl: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def reduce_rows(per_row: torch.Tensor, weights: torch.Tensor, batch: StepBatch) -> torch.Tensor:
    """``sum(reduce_weight * weights * per_row)``: the micro-batch's share of the step's loss."""
    like = dict(device=per_row.device, dtype=per_row.dtype)
    return (batch.reduce_weight.to(**like) * weights.to(**like) * per_row).sum()


def teacher_token_logprobs(student: StudentOutput, scores: TokenScores) -> torch.Tensor:
    """``[N]`` the teacher's log-prob of each sampled token at the student's (loss) temperature, on the
    student's device. A teacher's ``token_logprobs`` are at temperature 1; at another temperature they
    are recomputed from its full logits (a top-k teacher cannot give them: refused)."""
    like = dict(device=student.token_logprobs.device, dtype=student.token_logprobs.dtype)
    if student.temperature == 1.0:
        return scores.token_logprobs.to(**like)
    if scores.logits is None or student.targets is None:
        raise ValueError(f"a top-k teacher's sampled-token log-probs are at temperature 1, not the loss temperature "
                         f"{student.temperature}: set the method's temperature to 1 or use a full-distribution teacher")
    return D.tempered_token_logprobs(scores.logits, student.targets, student.temperature).to(**like)


def row_divergence(student: StudentOutput, scores: TokenScores, batch: StepBatch, cfg: MethodConfig,
                   kind: str | None = None, beta: float | None = None) -> torch.Tensor:
    """``[N]`` per-row loss against one teacher, as ``cfg`` (or the ``kind``/``beta`` overrides) says.

    Full distributions use :func:`divergences.chunked_divergence`; top-k teachers the top-k
    variant; ``sampled_token`` the importance-weighted policy-gradient surrogate whose gradient
    at ratio 1 is ``-A * grad log p_S(y)`` with ``A = kl_coef * (log p_T(y) - log p_S(y))``.
    """
    kind = kind or cfg.divergence
    beta = cfg.beta if beta is None else beta
    if kind == "sampled_token":
        # The advantage compares teacher and student at the loss temperature, both on the full
        # distribution. Tinker uses the sampler's log-prob for the student's side, which is the same
        # number only when rollouts sample at that temperature without top-p: with top_p 0.9 an exact
        # copy of the student got -0.1 on every token. The sampler's log-probs enter the importance ratio.
        adv = D.sampled_token_advantage(teacher_token_logprobs(student, scores), student.token_logprobs.detach(),
                                        cfg.kl_coef)
        return policy_gradient_rows(student, adv, batch, cfg.clip_ratio)
    if cfg.top_k is not None or not scores.full:
        if scores.topk_ids is None:
            raise ValueError("a top-k divergence needs a teacher that returns top-k (score with top_k=k)")
        s_lp, t_lp = D.topk_logprobs(student.logits, scores.topk_ids, scores.topk_logprobs.to(student.logits.dtype),
                                     cfg.topk_mode, cfg.temperature)
        return D.divergence(s_lp, t_lp, kind, beta)
    return D.chunked_divergence(student.logits, scores.logits.to(student.logits.dtype), kind, beta,
                                cfg.temperature, cfg.chunk_size)


def policy_gradient_rows(student: StudentOutput, advantage: torch.Tensor, batch: StepBatch,
                         clip_ratio: float | None = None) -> torch.Tensor:
    """``[N]`` the (PPO-clipped) policy-gradient surrogate ``-min(r A, clip(r) A)`` with importance ratio
    ``r = p_S(y) / p_sampler(y)`` (1 on fresh on-policy samples, where its gradient is ``-A grad log p_S(y)``).
    The one surrogate of the sampled-token OPD loss and of the RL methods (GRPO, GiGPO, ATOD)."""
    old = batch.sampler_logprobs.to(student.token_logprobs.device, student.token_logprobs.dtype)
    adv = advantage.detach().to(student.token_logprobs.device, student.token_logprobs.dtype)
    ratio = torch.exp(student.token_logprobs - old)
    surrogate = ratio * adv
    if clip_ratio is not None:
        surrogate = torch.minimum(surrogate, ratio.clamp(1 - clip_ratio, 1 + clip_ratio) * adv)
    return -surrogate


def sampled_kl(student: StudentOutput, scores: TokenScores) -> torch.Tensor:
    """``[N]`` detached ``log p_S(y) - log p_T(y)`` on the sampled tokens: the one-sample estimate of
    KL(S||T) every method logs (whatever its loss), so runs stay comparable. Summed over a
    trajectory's student tokens it is TCOD's trajectory-level KL. Both sides at the loss temperature
    (at temperature 1 for a top-k teacher, which has no other)."""
    if student.temperature != 1.0 and scores.logits is None and student.targets is not None:
        plain = D.tempered_token_logprobs(student.logits.detach(), student.targets)
        return (plain - scores.token_logprobs.to(plain.device, plain.dtype)).to(student.token_logprobs.dtype)
    return (student.token_logprobs.detach() - teacher_token_logprobs(student, scores)).detach()


class Method:
    """Vanilla on-policy distillation; every other method subclasses it and overrides hooks.

    Class attributes:
        name: the registry name (``method=<name>`` in Hydra).
        Config: the config dataclass (a :class:`MethodConfig` subclass).
        needs_expert: rollouts need ``info["expert_action"]`` (envs made with ``expert=True``).
        needs_teacher_agents: the method makes teachers write text (debate, teacher turns).
        needs_student_hidden: the loop's student forward also returns the last hidden state.
        needs_teacher: the method scores with a teacher (RL methods learn from the env's reward alone).
        min_group_size: rollouts of the same task per group it needs (``rollout.group_size``; 2 for
            group-relative advantages).
    """

    name: ClassVar[str] = "opd"
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    needs_expert: ClassVar[bool] = False
    needs_teacher_agents: ClassVar[bool] = False
    needs_student_hidden: ClassVar[bool] = False
    needs_teacher: ClassVar[bool] = True
    min_group_size: ClassVar[int] = 1

    def __init__(self, cfg: MethodConfig, ctx: MethodContext):
        if not isinstance(cfg, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}, got {type(cfg).__name__}")
        if self.needs_teacher and not ctx.teachers:
            raise ValueError(f"{self.name} needs at least one teacher")
        if self.needs_teacher_agents and not ctx.teacher_agents:
            raise ValueError(f"{self.name} needs teachers that generate text (teacher_agents)")
        self.cfg, self.ctx = cfg, ctx

    # 1. rollouts ---------------------------------------------------------------------------------
    def rollout_plan(self, step: int, episode: Episode) -> RolloutPlan:
        """How episode ``episode`` is played at ``step``. Default: the student writes every turn."""
        return RolloutPlan(max_env_steps=self.cfg.max_env_steps)

    def collect(self, collector: RolloutCollector, episodes: Sequence[Episode], step: int) -> list[Trajectory]:
        """Play the step's episodes. Override to collect differently (e.g. dataset prefixes)."""
        return collector.collect(episodes, [self.rollout_plan(step, ep) for ep in episodes])

    # 2. samples ----------------------------------------------------------------------------------
    def make_samples(self, trajectories: Sequence[Trajectory], step: int) -> list[Sample]:
        """Training samples; default: ``to_samples`` in ``cfg.sample_mode``."""
        return to_samples(trajectories, self.cfg.sample_mode)

    # 3. teacher scoring --------------------------------------------------------------------------
    def score(self, batch: StepBatch, step: int) -> list[TokenScores]:
        """One :class:`TokenScores` per teacher used (rows aligned with ``batch``). Default: the first teacher."""
        top_k = self.cfg.top_k
        return [self.ctx.teacher.score(batch.teacher_requests(), top_k=top_k)]

    # 4. per-token weights ------------------------------------------------------------------------
    def token_weights(self, batch: StepBatch, scores: Sequence[TokenScores], step: int) -> torch.Tensor:
        """``[N]`` weight of each row's loss (before the reduction). Default: 1."""
        return torch.ones(batch.num_rows)

    # 5. loss -------------------------------------------------------------------------------------
    def loss(self, student: StudentOutput, scores: Sequence[TokenScores], weights: torch.Tensor,
             batch: StepBatch, step: int) -> LossOutput:
        """Default: the configured divergence against the first teacher, reduced."""
        per_row = row_divergence(student, scores[0], batch, self.cfg)
        return LossOutput(reduce_rows(per_row, weights, batch), sampled_kl(student, scores[0]))

    # 6. logging ----------------------------------------------------------------------------------
    def log_metrics(self, trajectories: Sequence[Trajectory], step: int) -> dict[str, float]:
        """Extra scalars for the step's log line (after rollouts). Default: none."""
        return {}
