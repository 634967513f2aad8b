"""SAGE-OPD: the teacher judges each student turn after env feedback (skip or intervene);
confidence-weighted tokens; the loss keeps OPD's scale.

Paper: "SAGE-OPD: Selective Agent-Guided Intervention for Multi-Turn On-Policy Distillation"
(Zhou et al., arXiv 2606.19659, Meta AI, 2026). No public code; only the abstract is read.

Relative to vanilla OPD:
  1. after the env answers a student turn, the teacher judges it: skip or intervene;
  2. each token's loss is weighted by the turn's level weight x the teacher's confidence;
  3. the weights are renormalised to mean 1 over the batch's trained tokens, keeping OPD's scale.

Provenance of each choice:
- judging each turn after observing the env's feedback, two levels (skip / intervene), confidence
  weighting of the token loss, loss normalisation to OPD's scale: paper text (abstract);
- ``levels="three"`` (skip / weak / strong, weights 0 / 0.5 / 1): an option of ours, not in the
  abstract;
- the judge prompt and its tag ``<<JUDGE=skip|intervene>>``, judged greedily: ours;
- a reply without a valid tag (or with a tag of the other scheme) is a *parse failure*: counted
  (``sage/unparsed_frac`` in the log), never counted as a level, and weighted ``unparsed_weight``
  (default 1.0: plain OPD on that turn, i.e. no selection where the judge said nothing usable;
  0.0 skips it): ours;
- confidence at a token: ``max_prob`` (max_v p_T(v), default), ``entropy`` (exp(-H(p_T))),
  ``sampled`` (p_T of the student's token) or ``none``: ours (the abstract names no statistic);
- normalisation ``w <- w * N / sum(w)`` over the N trained tokens (reduction-weighted), so uniform
  weights give exactly the OPD loss; all turns skipped -> loss 0: ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from madopd_agents.base import SamplingParams
from madopd_distill.batch import StepBatch
from madopd_distill.methods.base import Method, MethodConfig, MethodContext
from madopd_distill.methods.debate import Conversation, with_instruction
from madopd_distill.rollout import Sample, Trajectory, to_samples
from madopd_distill.teachers import TokenScores

LEVELS: dict[str, tuple[str, ...]] = {"two": ("skip", "intervene"), "three": ("skip", "weak", "strong")}
DEFAULT_LEVEL_WEIGHTS: dict[str, dict[str, float]] = {"two": {"skip": 0.0, "intervene": 1.0},
                                                      "three": {"skip": 0.0, "weak": 0.5, "strong": 1.0}}
ConfidenceKind = Literal["max_prob", "entropy", "sampled", "none"]
JUDGE_TAG = re.compile(r"<<JUDGE=([A-Za-z]+)>>", re.IGNORECASE)

_ASK = {
    "two": ("Answer skip if it was good and needs no correction, intervene if the teacher should correct it. "
            "End your answer with EXACTLY one tag: <<JUDGE=skip>> or <<JUDGE=intervene>>."),
    "three": ("Answer skip if it was good and needs no correction, weak if it was acceptable but could be "
              "better, strong if it was wrong or harmful. End your answer with EXACTLY one tag: "
              "<<JUDGE=skip>>, <<JUDGE=weak>> or <<JUDGE=strong>>."),
}
JUDGE_INSTRUCTION = (
    "You are a teacher watching a student agent. The student's last response was:\n\n{action}\n\n"
    "The environment answered:\n\n{feedback}\n\nJudge that response. {ask}"
)


def judge_prompt(state: Conversation, student_reply: str, feedback: str, levels: str = "two") -> Conversation:
    """The judge's conversation: a copy of the student's state, its reply and the env's answer."""
    return with_instruction(state, JUDGE_INSTRUCTION.format(action=student_reply, feedback=feedback,
                                                            ask=_ASK[levels]))


def parse_judgement(text: str, levels: str = "two") -> str | None:
    """The level named by the reply's last ``<<JUDGE=...>>`` tag, or ``None`` (a parse failure: no tag,
    or the last tag names no level of this scheme)."""
    tags = JUDGE_TAG.findall(text or "")
    if not tags:
        return None
    level = tags[-1].lower()
    return level if level in LEVELS[levels] else None


def token_confidence(kind: ConfidenceKind, teacher_logprobs: torch.Tensor | None = None,
                     sampled_logprobs: torch.Tensor | None = None) -> torch.Tensor | None:
    """Per-token teacher confidence in ``[0, 1]`` (``None`` for ``kind="none"``).

    Args:
        teacher_logprobs: ``[..., V]`` teacher log-probs over the vocabulary or its top-k (the mass
            outside the top-k, if any, is ignored: max-prob is exact, entropy is over the top-k).
        sampled_logprobs: ``[...]`` the teacher's log-prob of the student's tokens.
    """
    if kind == "none":
        return None
    if kind == "sampled":
        if sampled_logprobs is None:
            raise ValueError("confidence 'sampled' needs the teacher's log-prob of the student's tokens")
        return sampled_logprobs.detach().exp().clamp(0.0, 1.0)
    if teacher_logprobs is None:
        raise ValueError(f"confidence {kind!r} needs the teacher's distribution (full or top-k log-probs)")
    lp = teacher_logprobs.detach().float()
    if kind == "max_prob":
        return lp.max(dim=-1).values.exp().clamp(0.0, 1.0)
    if kind == "entropy":
        p = lp.exp()
        ent = -(p * lp.clamp(min=-1e4)).nansum(dim=-1)
        return torch.exp(-ent).clamp(0.0, 1.0)
    raise ValueError(f"unknown confidence kind {kind!r}; known: max_prob, entropy, sampled, none")


def normalise_to_opd_scale(weights: torch.Tensor, mask: torch.Tensor,
                           coef: torch.Tensor | None = None) -> torch.Tensor:
    """Rescale ``weights`` so their ``coef``-weighted mean over the ``mask`` tokens is 1.

    ``coef`` is each token's reduction weight (``batch.reduce_weight``; default: all equal, i.e.
    the plain token mean). Then ``sum(coef * w * d) == sum(coef * d)`` whenever ``d`` is constant:
    the weighted loss has the scale of the unweighted OPD loss. All-zero weights stay 0.
    """
    m = mask.to(weights.dtype)
    c = m if coef is None else coef.to(weights.dtype) * m
    w = weights * m
    total = (c * w).sum()
    if total <= 0:
        return torch.zeros_like(w)
    return w * (c.sum() / total)


def sage_token_weights(levels: torch.Tensor, confidence: torch.Tensor | None, mask: torch.Tensor,
                       normalise: bool = True, coef: torch.Tensor | None = None) -> torch.Tensor:
    """Token weights = intervention level weight x teacher confidence, renormalised (see module doc).

    Args:
        levels: ``[B, T]`` each token's turn level weight (``SageConfig.level_weights``).
        confidence: ``[B, T]`` teacher confidence, or ``None``.
        mask: ``[B, T]`` trained tokens.
        coef: the tokens' reduction weights (see :func:`normalise_to_opd_scale`).
    """
    w = levels.float() if confidence is None else levels.float() * confidence.float()
    w = w * mask.float()
    return normalise_to_opd_scale(w, mask, coef) if normalise else w


def weighted_token_mean(per_token: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum(w * d) / N`` over the N trained tokens: with ``w == 1`` this is the OPD token mean."""
    m = mask.to(per_token.dtype)
    n = m.sum().clamp(min=1.0)
    return (per_token * weights.detach() * m).sum() / n


@dataclass
class SageConfig(MethodConfig):
    """SAGE-OPD's knobs (plus :class:`MethodConfig`'s).

    Attributes:
        levels: ``two`` (skip / intervene: the paper's abstract) or ``three`` (skip / weak / strong).
        level_weights: loss weight (>= 0) per level (``None``: skip 0, intervene 1; three levels:
            skip 0, weak 0.5, strong 1).
        unparsed_weight: loss weight of a turn whose judgement could not be parsed (>= 0; 1.0: plain
            OPD on it, 0.0: skip it). Such turns are counted in ``sage/unparsed_frac``.
        confidence: per-token teacher confidence: max_prob, entropy, sampled or none.
        normalise: renormalise the weights to mean 1 over trained tokens (OPD's loss scale).
        judge_max_new_tokens: the judge's reply budget (tokens).
    """

    levels: str = "two"
    level_weights: dict[str, float] | None = None
    unparsed_weight: float = 1.0
    confidence: str = "max_prob"
    normalise: bool = True
    judge_max_new_tokens: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.levels not in LEVELS:
            raise ValueError(f"levels must be one of {tuple(LEVELS)}, got {self.levels!r}")
        if self.level_weights is not None:
            self.level_weights = {k: float(v) for k, v in dict(self.level_weights).items()}
        if set(self.weights) != set(LEVELS[self.levels]):
            raise ValueError(f"level_weights needs exactly the keys {LEVELS[self.levels]} for levels={self.levels!r}, "
                             f"got {sorted(self.weights)}")
        if any(v < 0 for v in self.weights.values()) or self.unparsed_weight < 0:
            raise ValueError(f"level_weights and unparsed_weight must be >= 0, got {self.weights}, "
                             f"{self.unparsed_weight}")
        if self.confidence not in ("max_prob", "entropy", "sampled", "none"):
            raise ValueError(f"confidence must be max_prob, entropy, sampled or none; got {self.confidence!r}")
        if self.judge_max_new_tokens < 1:
            raise ValueError("judge_max_new_tokens must be >= 1")

    @property
    def weights(self) -> dict[str, float]:
        """``level_weights``, or the default of ``levels`` when unset."""
        return dict(self.level_weights) if self.level_weights is not None else dict(DEFAULT_LEVEL_WEIGHTS[self.levels])


class SageOPD(Method):
    """A judged, confidence-weighted OPD: per-turn intervention levels x per-token confidence."""

    name = "sage"
    Config = SageConfig
    needs_teacher_agents = True

    def __init__(self, cfg: SageConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        self.judge = next(iter(ctx.teacher_agents.values()))
        self.sampling = SamplingParams(temperature=0.0, max_new_tokens=cfg.judge_max_new_tokens)
        self._last: dict[str, float] = {}

    def judge_turns(self, trajectories: Sequence[Trajectory]) -> dict[tuple[int, int], str | None]:
        """``(trajectory, turn) -> level`` (``None``: unparsed) for every student turn, judged after
        the env's answer."""
        keys, prompts = [], []
        for k, traj in enumerate(trajectories):
            if traj.error is not None:
                continue
            for i, turn in enumerate(traj.turns):
                if turn.role != "student" or turn.context is None:
                    continue
                feedback = next((t.text for t in traj.turns[i + 1:] if t.role == "env"), "(the episode ended)")
                keys.append((k, i))
                prompts.append(judge_prompt(turn.context, turn.text, feedback, self.cfg.levels))
        replies = [o.text for o in self.judge.act(prompts, self.sampling)] if prompts else []
        levels = {key: parse_judgement(reply, self.cfg.levels) for key, reply in zip(keys, replies)}
        n = max(len(keys), 1)
        unparsed = sum(v is None for v in levels.values())
        self._last = {"sage/judged_turns": float(len(keys)), "sage/unparsed": float(unparsed),
                      "sage/unparsed_frac": unparsed / n,
                      **{f"sage/{j}_frac": sum(v == j for v in levels.values()) / n for j in LEVELS[self.cfg.levels]}}
        return levels

    def turn_weight(self, level: str | None) -> float:
        """A judged turn's loss weight (``unparsed_weight`` for a parse failure)."""
        return self.cfg.unparsed_weight if level is None else self.cfg.weights[level]

    def make_samples(self, trajectories: Sequence[Trajectory], step: int) -> list[Sample]:
        levels = self.judge_turns(trajectories)
        samples = to_samples(trajectories, self.cfg.sample_mode)
        for s in samples:
            traj = trajectories[s.traj_index]
            # Rows follow the sample's positions; its student turns appear in order, each with
            # as many rows as trained tokens.
            row_levels: list[float] = []
            for i in s.turn_indices:
                w = self.turn_weight(levels.get((s.traj_index, i)))
                row_levels += [w] * sum(traj.turns[i].loss_mask)
            if len(row_levels) != s.num_tokens:
                raise RuntimeError(f"SAGE: {len(row_levels)} level weights for {s.num_tokens} trained tokens")
            s.meta["row_levels"] = row_levels
        return samples

    def token_weights(self, batch: StepBatch, scores: Sequence[TokenScores], step: int) -> torch.Tensor:
        levels = torch.tensor([w for s in batch.samples for w in s.meta["row_levels"]], dtype=torch.float32)
        sc = scores[0]
        dist = None
        if self.cfg.confidence in ("max_prob", "entropy"):
            dist = (torch.log_softmax(sc.logits.float() / self.cfg.temperature, -1) if sc.logits is not None
                    else sc.topk_logprobs)
        conf = token_confidence(self.cfg.confidence, dist, sc.token_logprobs)  # type: ignore[arg-type]
        mask = torch.ones_like(levels, dtype=torch.bool)
        return sage_token_weights(levels, conf, mask, self.cfg.normalise, batch.reduce_weight)

    def log_metrics(self, trajectories: Sequence[Trajectory], step: int) -> dict[str, float]:
        return dict(self._last)
