"""Token-level teacher routing: per student token, one teacher supervises (FusionRoute-style).

Paper: "Token-Level LLM Collaboration via FusionRoute" (Xiong et al., arXiv 2601.05106; Meta AI):
a lightweight router picks the expert at each decoding step. Used here as a multi-teacher
combiner for OPD, the token-level counterpart of MAD-OPD's per-teacher weights.

Relative to vanilla OPD:
  1. every teacher scores the student's tokens (as in MT-OPD);
  2. a router picks one teacher per token: by default the most confident at that position
     (``confidence``: max-prob, entropy or sampled-token probability), or a small trained router;
  3. the loss at each token is the divergence to the routed teacher only; the log reports each
     teacher's share of tokens (``route/share/<name>``), comparable with MAD-OPD's ``w_k``.

The trained router (``router=learned``) is the natural OPD reading of FusionRoute's supervised
router (which learns from labelled data which expert is right): on tokens of *won* episodes it
learns to pick the teacher that gave the student's token the highest probability, from per-teacher
features (log max-prob, entropy, log-prob of the student's token); until it has seen a won episode
the confidence router is used. Its parameters have their own Adam optimizer, stepped in ``loss``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from madopd_distill.batch import StepBatch
from madopd_distill.methods.base import LossOutput, MethodContext, StudentOutput, reduce_rows, row_divergence, sampled_kl
from madopd_distill.methods.mt_opd import MTOPD, MTOPDConfig
from madopd_distill.methods.routing_core import (LearnedRouter, best_teacher_targets, confidence_route,
                                                 gather_routed, route_shares, teacher_features)
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
        teacher_weights: unused: the router picks one teacher per token.
    """

    router: str = "confidence"
    confidence: str = "max_prob"
    router_hidden: int = 32
    router_lr: float = 1e-2
    router_top_k: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.router not in ("confidence", "learned"):
            raise ValueError(f"router must be 'confidence' or 'learned', got {self.router!r}")
        if self.confidence not in ("max_prob", "entropy", "sampled"):
            raise ValueError(f"confidence must be max_prob, entropy or sampled, got {self.confidence!r}")
        if self.router_hidden < 1 or self.router_lr <= 0 or self.router_top_k < 1:
            raise ValueError("router_hidden and router_top_k must be >= 1, router_lr > 0")


class TokenRouting(MTOPD):
    """One supervising teacher per token, chosen by confidence or by a small trained router."""

    name = "routing"
    Config = RoutingConfig

    def __init__(self, cfg: RoutingConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        if len(ctx.teachers) < 2:
            raise ValueError(f"routing needs >= 2 teachers, got {len(ctx.teachers)}")
        self.router: LearnedRouter | None = None
        self.router_trained = False
        if cfg.router == "learned":
            self.router = LearnedRouter(len(ctx.teachers), cfg.router_hidden)
            self.router_opt = torch.optim.Adam(self.router.parameters(), lr=cfg.router_lr)

    def make_samples(self, trajectories: Sequence[Trajectory], step: int) -> list[Sample]:
        samples = to_samples(trajectories, self.cfg.sample_mode)
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

    def loss(self, student: StudentOutput, scores: Sequence[TokenScores], weights: torch.Tensor,
             batch: StepBatch, step: int) -> LossOutput:
        route, feats = self.route(batch, scores)
        per_teacher = torch.stack([row_divergence(student, s, batch, self.cfg) for s in scores])
        routed = gather_routed(per_teacher, route.to(per_teacher.device))
        names = list(self.ctx.teachers)
        shares = route_shares(route, torch.ones_like(route, dtype=torch.bool), len(names))
        metrics = {f"route/share/{n}": v for n, v in zip(names, shares)}
        if self.router is not None:
            metrics.update(self._train_router(batch, scores, feats))
        return LossOutput(reduce_rows(routed, weights, batch), sampled_kl(student, scores[0]), metrics)

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
