"""SAGE-OPD: the teacher judges each student turn after env feedback; confidence-weighted tokens.

Paper: SAGE-OPD (arXiv 2606.19659, Meta AI, 2026). No public code; only the abstract and a
third-party summary are known (../shared/reference/anchors-research.md §A.4).

Relative to vanilla OPD:
  1. after the env answers a student turn, the teacher judges it: skip / weak / strong intervention;
  2. each token's loss is weighted by the turn's intervention level x the teacher's confidence;
  3. the weights are renormalised to mean 1 over the batch's trained tokens, keeping OPD's scale.

Open details, chosen here and configurable (the paper's exact definitions are not public):
- the judge answers with a tag ``<<JUDGE=skip|weak|strong>>``; an unparsable reply counts as
  ``unparsed_as`` (default ``strong``: fall back to plain OPD on that turn);
- level weights default to skip 0, weak 0.5, strong 1;
- teacher confidence at a token is ``max_prob`` (max_v p_T(v)), ``entropy`` (exp(-H(p_T)), 1 for a
  one-hot teacher), ``sampled`` (p_T of the student's token) or ``none``;
- normalisation: ``w <- w * N / sum(w)`` over the N trained tokens, so a uniform weight gives
  exactly the OPD loss; when every token has weight 0 (all turns skipped) the loss is 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import torch

from madopd_agents.base import SamplingParams
from madopd_distill.batch import StepBatch
from madopd_distill.methods.base import Method, MethodConfig, MethodContext
from madopd_distill.methods.debate import Conversation, with_instruction
from madopd_distill.rollout import Sample, Trajectory, to_samples
from madopd_distill.teachers import TokenScores

Judgement = Literal["skip", "weak", "strong"]
JUDGEMENTS: tuple[str, ...] = ("skip", "weak", "strong")
ConfidenceKind = Literal["max_prob", "entropy", "sampled", "none"]
JUDGE_TAG = re.compile(r"<<JUDGE=(skip|weak|strong)>>", re.IGNORECASE)

JUDGE_INSTRUCTION = (
    "You are a teacher watching a student agent. The student's last response was:\n\n{action}\n\n"
    "The environment answered:\n\n{feedback}\n\n"
    "Judge that response. Answer skip if it was good and needs no correction, weak if it was "
    "acceptable but could be better, strong if it was wrong or harmful. End your answer with "
    "EXACTLY one tag: <<JUDGE=skip>>, <<JUDGE=weak>> or <<JUDGE=strong>>."
)


def judge_prompt(state: Conversation, student_reply: str, feedback: str) -> Conversation:
    """The judge's conversation: a copy of the student's state, its reply and the env's answer."""
    return with_instruction(state, JUDGE_INSTRUCTION.format(action=student_reply, feedback=feedback))


def parse_judgement(text: str, unparsed_as: Judgement = "strong") -> tuple[Judgement, bool]:
    """``(judgement, parsed)`` from the judge's reply: the last tag, else ``unparsed_as``."""
    tags = JUDGE_TAG.findall(text or "")
    if tags:
        return tags[-1].lower(), True  # type: ignore[return-value]
    return unparsed_as, False


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
        levels: ``[B, T]`` each token's turn level weight (skip 0, weak 0.5, strong 1 by default).
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
        level_weights: loss weight (>= 0) of a turn judged skip / weak / strong.
        confidence: per-token teacher confidence: max_prob, entropy, sampled or none.
        normalise: renormalise the weights to mean 1 over trained tokens (OPD's loss scale).
        unparsed_as: the level of a turn whose judgement has no valid tag.
        judge_max_new_tokens: the judge's reply budget (tokens).
    """

    level_weights: Mapping[str, float] = field(default_factory=lambda: {"skip": 0.0, "weak": 0.5, "strong": 1.0})
    confidence: str = "max_prob"
    normalise: bool = True
    unparsed_as: str = "strong"
    judge_max_new_tokens: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        self.level_weights = {k: float(v) for k, v in dict(self.level_weights).items()}
        if set(self.level_weights) != set(JUDGEMENTS):
            raise ValueError(f"level_weights needs exactly the keys {JUDGEMENTS}, got {sorted(self.level_weights)}")
        if any(float(v) < 0 for v in self.level_weights.values()):
            raise ValueError(f"level_weights must be >= 0, got {self.level_weights}")
        if self.confidence not in ("max_prob", "entropy", "sampled", "none"):
            raise ValueError(f"confidence must be max_prob, entropy, sampled or none; got {self.confidence!r}")
        if self.unparsed_as not in JUDGEMENTS:
            raise ValueError(f"unparsed_as must be one of {JUDGEMENTS}, got {self.unparsed_as!r}")
        if self.judge_max_new_tokens < 1:
            raise ValueError("judge_max_new_tokens must be >= 1")



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

    def judge_turns(self, trajectories: Sequence[Trajectory]) -> dict[tuple[int, int], str]:
        """``(trajectory, turn) -> level`` for every student turn, judged after the env's answer."""
        keys, prompts = [], []
        for k, traj in enumerate(trajectories):
            if traj.error is not None:
                continue
            for i, turn in enumerate(traj.turns):
                if turn.role != "student" or turn.context is None:
                    continue
                feedback = next((t.text for t in traj.turns[i + 1:] if t.role == "env"), "(the episode ended)")
                keys.append((k, i))
                prompts.append(judge_prompt(turn.context, turn.text, feedback))
        replies = [o.text for o in self.judge.act(prompts, self.sampling)] if prompts else []
        levels, parsed = {}, 0
        for key, reply in zip(keys, replies):
            level, ok = parse_judgement(reply, self.cfg.unparsed_as)  # type: ignore[arg-type]
            levels[key] = level
            parsed += ok
        n = max(len(keys), 1)
        self._last = {"sage/judged_turns": float(len(keys)), "sage/parsed_frac": parsed / n,
                      **{f"sage/{j}_frac": sum(v == j for v in levels.values()) / n for j in JUDGEMENTS}}
        return levels

    def make_samples(self, trajectories: Sequence[Trajectory], step: int) -> list[Sample]:
        levels = self.judge_turns(trajectories)
        samples = to_samples(trajectories, self.cfg.sample_mode)
        for s in samples:
            traj = trajectories[s.traj_index]
            # Rows follow the sample's positions; its student turns appear in order, each with
            # as many rows as trained tokens.
            row_levels: list[float] = []
            for i in s.turn_indices:
                w = self.cfg.level_weights[levels.get((s.traj_index, i), self.cfg.unparsed_as)]
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
