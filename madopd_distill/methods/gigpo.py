"""GiGPO: GRPO's episode groups plus step-level groups of turns that acted on the same state.

Paper: "Group-in-Group Policy Optimization for LLM Agent Training" (Feng et al., arXiv 2505.10978);
code read for the exact form: verl-agent's ``gigpo/core_gigpo.py`` (the original langfengQ/verl-agent
could not be fetched here; read in the fork johnhaofu/verl-agent@c23d586:gigpo/core_gigpo.py,
``compute_gigpo_outcome_advantage``, ``episode_norm_reward``, ``build_step_group``, ``step_norm_reward``,
``compute_step_discounted_returns``).

Relative to vanilla OPD: no teacher; each student *turn* gets ``A = A_E + w * A_S``:
``A_E`` the group-normalised episode return (GRPO's), ``A_S`` the discounted return from that turn on,
normalised within its *anchor group*: the turns of the same episode group whose observation was
identical. A state revisited across the group's episodes thus compares the actions taken there.

Provenance of each choice:
- ``A = A_E + step_weight * A_S``, ``step_weight`` 1.0: code (``scores = episode_advantages +
  step_advantage_w * step_advantages``; verl-agent's examples set ``step_advantage_w=1.0``);
- episode statistics over the group's *turns*, not its episodes (a longer episode weighs more): code
  (``compute_mean_std_cross_steps=True``, the default, "more stable");
- exact-match anchor states per episode group: code (``build_step_group`` without similarity);
- ``G_t = r_t + gamma G_{t+1}``, ``gamma`` 0.95: paper eq. 5 and verl-agent's example scripts (``algorithm.gamma=0.95``);
- ``normalise_std`` True = the code's ``mean_std_norm`` (its ALFWorld example); ``False`` = ``mean_norm``
  (the code's default argument);
- a step group of one gets 0 (the code: its mean is its own value); an episode group of one gets 0
  (the code: the raw return; ours, see :mod:`~madopd_distill.methods.rl_core`);
- the anchor observation is the text of the prompt/observation turn the student answered (the env's
  observation; in the code ``anchor_obs``, the env's raw observation without the history prompt).
Always per-turn samples: each turn carries its own advantage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from madopd_distill.methods.grpo import GRPO, GRPOConfig, episode_reward
from madopd_distill.methods.rl_core import anchor_groups, discounted_returns, group_normalise
from madopd_distill.rollout import Sample, Trajectory


@dataclass
class GiGPOConfig(GRPOConfig):
    """GRPO's knobs plus the step level.

    Attributes:
        gamma: discount of the step returns, in [0, 1].
        step_weight: ``w`` in ``A_E + w * A_S`` (>= 0; 0 is GRPO with per-turn samples).
    """

    gamma: float = 0.95
    step_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if self.step_weight < 0:
            raise ValueError(f"step_weight must be >= 0, got {self.step_weight}")


def anchor_observation(traj: Trajectory, turn_index: int) -> str:
    """The observation turn ``turn_index`` acted on: the latest prompt/env turn before it."""
    for t in reversed(traj.turns[:turn_index]):
        if t.role in ("prompt", "env"):
            return t.text
    return ""


class GiGPO(GRPO):
    name = "gigpo"
    Config = GiGPOConfig
    per_turn_samples = True

    def advantages(self, trajectories: Sequence[Trajectory], samples: Sequence[Sample]) -> list[float]:
        """One advantage per (turn) sample: ``A_E + w * A_S``."""
        trajs = [trajectories[s.traj_index] for s in samples]
        turns = [s.turn_indices[0] for s in samples]
        groups = [t.group_id for t in trajs]
        a_e = group_normalise([episode_reward(t, self.cfg.reward) for t in trajs], groups, self.cfg.normalise_std)
        step_returns = [discounted_returns(t.rewards, self.cfg.gamma)[t.turns[i].env_step - 1]
                        for t, i in zip(trajs, turns)]
        keys = anchor_groups(groups, [anchor_observation(t, i) for t, i in zip(trajs, turns)])
        a_s = group_normalise(step_returns, keys, self.cfg.normalise_std)
        return [e + self.cfg.step_weight * s for e, s in zip(a_e, a_s)]
