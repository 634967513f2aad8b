"""Group-relative advantages of the RL baselines (GRPO, GiGPO, ATOD's RL term), as pure functions.

No torch and no trainer here: lists of floats in, lists out, so each formula can be checked by hand.

- :func:`group_normalise`: ``(x - mean_g) / (std_g + eps)`` within each group (GRPO, DeepSeekMath
  arXiv 2402.03300 eq. in section 4.1.2; ``std=False`` subtracts the mean only, verl-agent's
  ``mean_norm``). A group of one has no baseline to be relative to: its advantage is 0 (verl's
  GRPO would give the raw reward instead; our RL methods refuse ``group_size`` 1 up front, so a
  group of one only happens when its other episodes errored).
- :func:`discounted_returns`: ``G_t = r_t + gamma * G_{t+1}`` (GiGPO eq. 5).
- :func:`anchor_groups`: GiGPO's step-level groups: within one episode group, the turns that
  acted on an identical observation share a key (GiGPO eq. 6, exact-match clustering).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Hashable, Sequence


def group_normalise(values: Sequence[float], groups: Sequence[Hashable], std: bool = True,
                    eps: float = 1e-6) -> list[float]:
    """Each value relative to its group: minus the group mean, divided by the group's (unbiased,
    ``torch.std``) standard deviation + ``eps`` when ``std``. A group of one, or of equal values, gets 0."""
    if len(values) != len(groups):
        raise ValueError(f"{len(values)} values for {len(groups)} group keys")
    members: dict[Hashable, list[float]] = defaultdict(list)
    for v, g in zip(values, groups):
        members[g].append(float(v))
    stats = {}
    for g, vs in members.items():
        mean = sum(vs) / len(vs)
        sd = math.sqrt(sum((v - mean) ** 2 for v in vs) / (len(vs) - 1)) if len(vs) > 1 else 0.0
        stats[g] = (mean, sd, len(vs))
    out = []
    for v, g in zip(values, groups):
        mean, sd, n = stats[g]
        out.append(0.0 if n == 1 or sd == 0.0 else (v - mean) / (sd + eps) if std else v - mean)
    return out


def discounted_returns(rewards: Sequence[float], gamma: float) -> list[float]:
    """``G_t = sum_{k >= t} gamma^(k - t) r_k`` for every step ``t`` of one episode."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    out, running = [0.0] * len(rewards), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + gamma * running
        out[t] = running
    return out


def anchor_groups(episode_groups: Sequence[Hashable], observations: Sequence[str]) -> list[tuple[Hashable, str]]:
    """GiGPO's step-level group key of each turn: (its episode group, the observation it acted on).
    Turns of different tasks never share a key, even on identical text."""
    if len(episode_groups) != len(observations):
        raise ValueError(f"{len(episode_groups)} episode groups for {len(observations)} observations")
    return list(zip(episode_groups, observations))
