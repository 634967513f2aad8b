"""Token-level teacher routing with FusionRoute's complementary logit: per student token, one teacher
supervises, corrected by a small trained head.

Paper: "Token-Level LLM Collaboration via FusionRoute" (Xiong et al., arXiv 2601.05106; Meta AI).
Its router (i) selects an expert per decoding step and (ii) adds a complementary logit to the
selected expert's logits; it is trained by SFT on informative tokens (where the experts disagree),
then by a preference stage (CDPO). Here the experts are the teachers and the fused distribution is
the student's distillation target. Code: the paper names github.com/xiongny/FusionRoute, which could
not be read here; every choice below rests on the paper's text or is ours.

Relative to vanilla OPD:
  1. every teacher scores the student's tokens (as in MT-OPD);
  2. a router picks one teacher per token (``confidence``: the most confident; or ``learned``);
  3. the target at each token is ``softmax(z_routed + c(h))``: the routed teacher's logits plus the
     complementary logit of a small head over the student's hidden state ``h`` (``complementary``);
     the log reports each teacher's share of tokens (``route/share/<name>``).

Provenance of each choice:
- per-token selection + complementary logit by logit addition: paper text (abstract; Sec. 3);
- the complementary generator trained by next-token cross-entropy of the fused distribution on
  informative positions (the experts' top-1 tokens differ): paper text (SFT stage); the labels here
  are the student's own tokens in *won* episodes (OPD has no reference answers): ours;
- the paper's second stage (CDPO on preference pairs) is not implemented: OPD gives no pairs;
- the complementary logit from a low-rank head over the student's (detached) hidden state, zero-
  initialised so training starts from pure routing, with its own Adam optimizer: ours (the paper's
  router is a small LM whose own logits are the complementary ones);
- the confidence router (max-prob / entropy / sampled-token probability) and the learned router over
  per-teacher features, trained on won episodes to pick the teacher that gave the student's token the
  highest probability: ours (the paper's router is a linear projection of the router LM's hidden
  state, trained in its SFT stage);
- ``complementary=false`` gives plain token routing, a multi-teacher combiner that is not FusionRoute.

The head and the learned router are not saved in checkpoints (a resumed run retrains them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from madopd_distill.batch import StepBatch
from madopd_distill.methods.base import LossOutput, MethodContext, StudentOutput, reduce_rows, row_divergence, sampled_kl
from madopd_distill.methods.mt_opd import MTOPD, MTOPDConfig
from madopd_distill.methods.routing_core import (ComplementaryHead, LearnedRouter, best_teacher_targets,
                                                 complementary_sft_loss, confidence_route, fuse_logits, gather_routed,
                                                 route_shares, teacher_features)
from madopd_distill.methods.sage import token_confidence
from madopd_distill.rollout import Sample, Trajectory, to_samples
from madopd_distill.teachers import TokenScores


@dataclass
class RoutingConfig(MTOPDConfig):
    """Token routing's knobs (plus :class:`MethodConfig`'s; ``teacher_weights`` is unused).

    Attributes:
        router: ``confidence`` (most confident teacher per token) or ``learned``.
        confidence: the confidence statistic: ``max_prob``, ``entropy`` or ``sampled``.
        router_hidden: hidden units of the learned router.
        router_lr: its learning rate.
        router_top_k: how many of each teacher's top log-probs feed the router's features.
        complementary: add FusionRoute's complementary logit (a trained head over the student's hidden
            state) to the routed teacher's logits; needs full-distribution (``hf``) teachers.
        complementary_rank: inner width of the head (``hidden -> rank -> vocab``).
        complementary_lr: the head's Adam learning rate.
        complementary_rows: rows the head trains on, among tokens of won episodes: ``disagree``
            (the teachers' top-1 tokens differ: the paper's informative positions) or ``all``.
        teacher_weights: unused: the router picks one teacher per token.
        loop_filter: MT-OPD's loop filter; off here (not part of FusionRoute).
    """

    router: str = "confidence"
    confidence: str = "max_prob"
    router_hidden: int = 32
    router_lr: float = 1e-2
    router_top_k: int = 20
    complementary: bool = True
    complementary_rank: int = 64
    complementary_lr: float = 1e-3
    complementary_rows: str = "disagree"
    loop_filter: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.router not in ("confidence", "learned"):
            raise ValueError(f"router must be 'confidence' or 'learned', got {self.router!r}")
        if self.confidence not in ("max_prob", "entropy", "sampled"):
            raise ValueError(f"confidence must be max_prob, entropy or sampled, got {self.confidence!r}")
        if self.router_hidden < 1 or self.router_lr <= 0 or self.router_top_k < 1:
            raise ValueError("router_hidden and router_top_k must be >= 1, router_lr > 0")
        if self.complementary_rank < 1 or self.complementary_lr <= 0:
            raise ValueError("complementary_rank must be >= 1 and complementary_lr > 0")
        if self.complementary_rows not in ("disagree", "all"):
            raise ValueError(f"complementary_rows must be 'disagree' or 'all', got {self.complementary_rows!r}")


class TokenRouting(MTOPD):
    """One supervising teacher per token (confidence or trained router) + a complementary logit."""

    name = "routing"
    Config = RoutingConfig

    def __init__(self, cfg: RoutingConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        self.needs_student_hidden = cfg.complementary  # instance override: the trainer reads it per batch
        self.head: ComplementaryHead | None = None  # built at the first batch (hidden and vocab sizes)
        if len(ctx.teachers) < 2:
            raise ValueError(f"routing needs >= 2 teachers, got {len(ctx.teachers)}")
        self.router: LearnedRouter | None = None
        self.router_trained = False
        if cfg.router == "learned":
            self.router = LearnedRouter(len(ctx.teachers), cfg.router_hidden)
            self.router_opt = torch.optim.Adam(self.router.parameters(), lr=cfg.router_lr)

    def make_samples(self, trajectories: Sequence[Trajectory], step: int) -> list[Sample]:
        samples = self.drop_loops(to_samples(trajectories, self.cfg.sample_mode), trajectories)
        for s in samples:
            s.meta["won"] = bool(trajectories[s.traj_index].won)
        return samples

    def _distributions(self, scores: Sequence[TokenScores]) -> torch.Tensor:
        """``[K, N, k]`` each teacher's top-k log-probs (from its full logits or its sparse top-k)."""
        out = []
        for s in scores:
            if s.logits is not None:
                lp = torch.log_softmax(s.logits.float() / self.cfg.temperature, -1)
                out.append(lp.topk(min(self.cfg.router_top_k, lp.shape[-1]), -1).values)
            else:
                out.append(s.topk_logprobs.float()[:, : self.cfg.router_top_k])
        k = min(x.shape[-1] for x in out)
        return torch.stack([x[:, :k] for x in out])

    def route(self, batch: StepBatch, scores: Sequence[TokenScores]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[N]`` teacher index per row (and the router features when learning)."""
        dists = self._distributions(scores)
        sampled = torch.stack([s.token_logprobs.float() for s in scores])
        valid = torch.isfinite(sampled)
        feats = None
        if self.router is not None:
            feats = teacher_features(dists.unsqueeze(1), sampled.unsqueeze(1)).squeeze(0)  # [N, K*3]
        if self.router is not None and self.router_trained:
            return self.router.route(feats), feats
        conf = token_confidence(self.cfg.confidence, dists, sampled)  # type: ignore[arg-type]
        return confidence_route(conf, valid), feats

    def complementary(self, hidden: torch.Tensor, vocab: int) -> torch.Tensor:
        """``[N, V]`` complementary logits of the (detached) hidden states, no grad."""
        if self.head is None:
            self.head = ComplementaryHead(hidden.shape[-1], vocab, self.cfg.complementary_rank).to(hidden.device)
            self.head_opt = torch.optim.Adam(self.head.parameters(), lr=self.cfg.complementary_lr)
        with torch.no_grad():
            return self.head(hidden.detach())

    def fused_scores(self, scores: Sequence[TokenScores], comp: torch.Tensor, batch: StepBatch) -> list[TokenScores]:
        """Each teacher's scores with the complementary logit added (the target if it is routed)."""
        out = []
        for s in scores:
            if s.logits is None:
                raise ValueError("FusionRoute's complementary logit needs full-distribution teachers (backend hf); "
                                 "set method.complementary=false for sparse (vllm/openai) teachers")
            fused = fuse_logits(s.logits.to(comp.device), comp)
            z = fused / self.cfg.temperature  # gather - logsumexp: no second [N, V] log-softmax copy
            tok = z.gather(-1, batch.targets.to(z.device)[:, None]).squeeze(-1) - torch.logsumexp(z, -1)
            out.append(TokenScores(tok.to(s.token_logprobs.dtype), logits=fused))
        return out

    def loss(self, student: StudentOutput, scores: Sequence[TokenScores], weights: torch.Tensor,
             batch: StepBatch, step: int) -> LossOutput:
        route, feats = self.route(batch, scores)
        targets = list(scores)
        if self.cfg.complementary:
            if student.hidden is None:
                raise ValueError("the complementary logit needs the student's hidden states (needs_student_hidden)")
            comp = self.complementary(student.hidden, student.logits.shape[-1])
            targets = self.fused_scores(scores, comp, batch)
        per_teacher = torch.stack([row_divergence(student, s, batch, self.cfg) for s in targets])
        routed = gather_routed(per_teacher, route.to(per_teacher.device))
        names = list(self.ctx.teachers)
        shares = route_shares(route, torch.ones_like(route, dtype=torch.bool), len(names))
        metrics = {f"route/share/{n}": v for n, v in zip(names, shares)}
        if self.router is not None:
            metrics.update(self._train_router(batch, scores, feats))
        if self.cfg.complementary:
            metrics["route/comp_abs_mean"] = float(comp.abs().mean())
            metrics.update(self._train_head(batch, scores, student.hidden, route))
        return LossOutput(reduce_rows(routed, weights, batch), sampled_kl(student, scores[0]), metrics)

    def _train_head(self, batch: StepBatch, scores: Sequence[TokenScores], hidden: torch.Tensor,
                    route: torch.Tensor) -> dict[str, float]:
        """One Adam step of the complementary head (FusionRoute's SFT stage, on won episodes' tokens)."""
        won = torch.tensor([s.meta.get("won", False) for s in batch.samples], dtype=torch.bool)[batch.rows]
        top = torch.stack([s.logits.argmax(-1).cpu() for s in scores])  # [K, N]
        disagree = (top != top[:1]).any(0)  # as routing_core.disagreement_rows, without a [K, N, V] stack
        rows = won if self.cfg.complementary_rows == "all" else won & disagree
        if not bool(rows.any()):
            return {"route/comp_rows": 0.0}
        routed_logits = scores[0].logits.float().clone()
        for k, s in enumerate(scores[1:], start=1):
            pick = (route == k).to(routed_logits.device)
            routed_logits[pick] = s.logits.float().to(routed_logits.device)[pick]
        dev = hidden.device
        self.head_opt.zero_grad()
        loss = complementary_sft_loss(self.head, hidden.to(dev), routed_logits.to(dev), batch.targets.to(dev),
                                      rows.to(dev), self.cfg.temperature)
        loss.backward()
        self.head_opt.step()
        return {"route/comp_loss": float(loss.detach()), "route/comp_rows": float(rows.sum())}

    def _train_router(self, batch: StepBatch, scores: Sequence[TokenScores], feats: torch.Tensor) -> dict[str, float]:
        won = torch.tensor([s.meta.get("won", False) for s in batch.samples], dtype=torch.bool)[batch.rows]
        if not bool(won.any()):
            return {"route/router_rows": 0.0}
        targets = best_teacher_targets(torch.stack([s.token_logprobs.float() for s in scores]))
        self.router_opt.zero_grad()
        loss = self.router.loss(feats, targets, won)
        loss.backward()
        self.router_opt.step()
        self.router_trained = True
        return {"route/router_loss": float(loss.detach()), "route/router_rows": float(won.sum())}
