"""Vanilla on-policy distillation (OPD): the baseline every other method is measured against.

Papers: "On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes"
(Agarwal et al., arXiv 2306.13649; GKD with ``lmbda=1``) and Thinking Machines' "On-Policy
Distillation" (tinker-cookbook, sampled-token reverse KL as a per-token advantage).

Relative to itself: nothing changes. The student plays every turn of its own multi-turn episodes;
one teacher scores every student token in the student's context; the loss is the configured
divergence (reverse KL by default) over student tokens only, reduced per ``reduction``.
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
