"""Vanilla on-policy distillation (OPD): the baseline every other method is measured against.

Papers: "On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes"
(Agarwal et al., arXiv 2306.13649; GKD with ``lmbda=1``) and Thinking Machines' "On-Policy
Distillation" (thinking-machines-lab/tinker-cookbook, sampled-token reverse KL as a per-token
advantage).

Relative to itself: nothing changes. The student plays every turn of its own multi-turn episodes;
one teacher scores every student token in the student's context; the loss is the configured
divergence (reverse KL by default) over student tokens only, reduced per ``reduction``.

Provenance of each choice:
- on-policy samples, one teacher, a divergence on student tokens: paper text (2306.13649);
- ``divergence=reverse_kl`` default: paper text (2306.13649 and the tinker-cookbook write-up both
  favour the mode-seeking direction for OPD);
- ``divergence=sampled_token`` = advantage ``kl_coef * (log p_T(y) - log p_S(y))`` with an importance
  ratio: tinker-cookbook's on-policy distillation recipe, and the TCOD code
  (kokolerk/TCOD@465eef4:trinity/algorithm/advantage_fn/on_policy_distill_advantage.py:35);
- ``jsd`` with TRL's beta convention (0 = forward, 1 = reverse): TRL ``GKDTrainer.generalized_jsd_loss``
  and chiefovoavicii/MAD-OPD@6c7a66a:mad_opd/trainers/mad_opd_core.py:105-108;
- trajectory samples, ``token_mean``: ours (defaults); the papers' baselines are presets:
  ``method=opd_madopd_paper`` (MAD-OPD's OPD row) and ``method=opd_tcod_paper`` (TCOD's OPD baseline).
"""
from __future__ import annotations

from dataclasses import dataclass

from madopd_distill.methods.base import Method, MethodConfig


@dataclass
class OPDConfig(MethodConfig):
    """Vanilla OPD has exactly the shared knobs (see :class:`MethodConfig`)."""


class OPD(Method):
    name = "opd"
    Config = OPDConfig
