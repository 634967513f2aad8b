"""Token-level teacher routing, pure tensors: which teacher supervises each student token.

Idea: FusionRoute (Xiong et al., arXiv 2601.05106, "Token-Level LLM Collaboration via
FusionRoute"), whose lightweight router picks one expert per decoding step. Here the router
picks, per student token, the teacher whose distribution the student is distilled towards at that
position. MAD-OPD weighs whole teachers per sample (``w_k``); routing is the token-level contrast.

Routers (``routing.py`` makes them a config option):
- ``confidence`` (default): the most confident teacher at that position (max-prob, entropy or the
  student's-token probability, as in SAGE's confidence kinds), ties -> lowest index;
- ``learned``: a small MLP over per-teacher features at that position. OPD has no label for "the
  right teacher"; the natural reading of FusionRoute's supervised router here trains it on tokens
  of *won* episodes to pick the teacher that gave the student's (successful) token the highest
  probability, and uses its argmax everywhere (the confidence router until it has trained).
"""

from __future__ import annotations

import torch
from torch import nn

NUM_FEATURES = 3  # per teacher: log max-prob, entropy, log-prob of the student's token


def teacher_features(topk_logprobs: torch.Tensor, sampled_logprobs: torch.Tensor) -> torch.Tensor:
    """``[K, B, T, k]`` top-k (or full) log-probs and ``[K, B, T]`` sampled-token log-probs
    -> ``[B, T, K * NUM_FEATURES]`` router features (detached)."""
    lp = topk_logprobs.detach().float()
    p = lp.exp()
    feats = torch.stack([lp.max(-1).values, -(p * lp.clamp(min=-1e4)).nansum(-1),
                         sampled_logprobs.detach().float().clamp(min=-30.0)], dim=-1)  # [K,B,T,3]
    k, b, t, f = feats.shape
    return feats.permute(1, 2, 0, 3).reshape(b, t, k * f)


def confidence_route(confidence: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
    """``[K, B, T]`` confidences -> ``[B, T]`` index of the most confident available teacher."""
    conf = confidence.detach().float()
    if available is not None:
        conf = conf.masked_fill(~available.bool(), -float("inf"))
    return conf.argmax(dim=0)


def gather_routed(per_token: torch.Tensor, route: torch.Tensor) -> torch.Tensor:
    """``[K, B, T]`` per-teacher per-token losses, ``[B, T]`` route -> ``[B, T]`` routed losses."""
    return per_token.gather(0, route.unsqueeze(0)).squeeze(0)


def route_shares(route: torch.Tensor, mask: torch.Tensor, num_teachers: int) -> list[float]:
    """Fraction of trained tokens routed to each teacher (comparable with MAD-OPD's ``w_k``)."""
    sel = route[mask.bool()]
    if sel.numel() == 0:
        return [0.0] * num_teachers
    counts = torch.bincount(sel.flatten(), minlength=num_teachers).float()
    return (counts / counts.sum()).tolist()


def best_teacher_targets(sampled_logprobs: torch.Tensor) -> torch.Tensor:
    """``[K, B, T]`` -> ``[B, T]``: the teacher that gave the student's token the highest log-prob."""
    return sampled_logprobs.detach().argmax(dim=0)


class LearnedRouter(nn.Module):
    """A two-layer MLP: per-teacher features at a position -> a score per teacher."""

    def __init__(self, num_teachers: int, hidden: int = 32):
        super().__init__()
        if num_teachers < 2:
            raise ValueError("routing needs >= 2 teachers")
        self.num_teachers = num_teachers
        self.net = nn.Sequential(nn.Linear(num_teachers * NUM_FEATURES, hidden), nn.Tanh(),
                                 nn.Linear(hidden, num_teachers))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)

    def route(self, features: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self(features).argmax(dim=-1)

    def loss(self, features: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the router's choice against ``targets`` on the ``mask`` tokens."""
        m = mask.bool()
        if not bool(m.any()):
            return self(features).sum() * 0.0
        return nn.functional.cross_entropy(self(features)[m], targets[m])


class ComplementaryHead(nn.Module):
    """FusionRoute's complementary logit, here a small head over the student's last hidden state.

    FusionRoute (arXiv 2601.05106) adds the router's own next-token logits to the selected expert's
    (``log pi_final = log pi_router + log pi_expert``). Here the router is not a language model, so a
    low-rank head ``c(h) = U (D h) + b`` (``D``: ``hidden -> rank``, ``U``: ``rank -> vocab``) over the
    student's hidden state plays that part. ``U`` and ``b`` start at zero: until trained, the fused
    distribution is exactly the routed teacher's.
    """

    def __init__(self, hidden: int, vocab: int, rank: int = 64):
        super().__init__()
        if min(hidden, vocab, rank) < 1:
            raise ValueError("hidden, vocab and rank must be >= 1")
        self.down = nn.Linear(hidden, rank, bias=False)
        self.up = nn.Linear(rank, vocab)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(hidden.float()))


def fuse_logits(expert_logits: torch.Tensor, complementary: torch.Tensor) -> torch.Tensor:
    """Logit addition: ``[N, V]`` routed expert logits + ``[N, V]`` complementary logits (the fused
    next-token distribution is their softmax; adding to logits or to log-probs gives the same one)."""
    return expert_logits.float() + complementary.float()


def disagreement_rows(teacher_logits: torch.Tensor) -> torch.Tensor:
    """``[K, N, V]`` -> ``[N]`` bool: the rows where the teachers' top-1 tokens are not all equal
    (FusionRoute trains on such "informative" positions only)."""
    top = teacher_logits.argmax(-1)  # [K, N]
    return (top != top[:1]).any(0)


def complementary_sft_loss(head: ComplementaryHead, hidden: torch.Tensor, routed_logits: torch.Tensor,
                           targets: torch.Tensor, rows: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Next-token cross-entropy of the fused distribution on ``rows`` (FusionRoute's SFT stage):
    ``-log softmax((z_routed + c(h)) / T)[y]``. Only ``head`` gets gradient (inputs are detached)."""
    m = rows.bool()
    if not bool(m.any()):
        return head(hidden[:1].detach()).sum() * 0.0
    fused = fuse_logits(routed_logits[m].detach(), head(hidden[m].detach())) / temperature
    return nn.functional.cross_entropy(fused, targets[m])
