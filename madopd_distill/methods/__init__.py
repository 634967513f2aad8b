"""OPD methods: a registry of name -> ``"module:Class"``, imported only when used.

Adding a method (one file + one line):

1. Write ``madopd_distill/methods/<name>.py``. Start it with the paper (title, arXiv id, code
   read for semantics) and three lines on what it changes relative to vanilla OPD.
2. Subclass :class:`madopd_distill.methods.base.Method`; set ``name`` and ``Config`` (a dataclass
   subclassing ``MethodConfig``: new fields with defaults and help text in the docstring, ranges
   checked in ``__post_init__`` after calling ``super().__post_init__()``).
3. Override only the hooks it changes (see ``methods/base.py`` for the loop and the conventions):

   ====================  ==========================================================================
   hook                  typical use
   ====================  ==========================================================================
   ``rollout_plan``      who writes each turn (student / teacher / expert replay), step caps:
                         TCOD F2B/B2F, Guided-OPD teacher turns, OPAD dataset prefixes
   ``collect``           a different way to get trajectories (rarely needed)
   ``make_samples``      per-turn vs whole-trajectory samples, privileged teacher contexts
                         (``Sample.teacher_input_ids``: MAD-OPD's debate transcript)
   ``score``             several teachers (MT-OPD, MAD-OPD), teacher routing
   ``token_weights``     per-token weights [N] (SAGE, token routing, confidence weights)
   ``loss``              another divergence / mixture / reduction of per-row losses
   ``log_metrics``       extra scalars in the step log
   ====================  ==========================================================================

4. Add one line to ``METHODS`` below and a config ``leaderboards/conf/distill/method/<name>.yaml``
   (``name: <name>`` plus the Config's fields); ``python -m madopd_distill.train method=<name>``
   then runs it, and ``tests/distill/`` should gain a pure-tensor test of what the method changes.

Divergences come from :mod:`madopd_distill.divergences` only (never re-derive a KL in a method);
``methods.base.row_divergence`` applies the configured one to a teacher's scores.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from madopd_distill.methods.base import Method, MethodConfig, MethodContext

METHODS: dict[str, str] = {
    "opd": "madopd_distill.methods.opd:OPD",
    # The papers' methods side by side (issue 9).
    "mt_opd": "madopd_distill.methods.mt_opd:MTOPD",
    "mad_opd": "madopd_distill.methods.mad_opd:MADOPD",
    "opad": "madopd_distill.methods.opad:OPAD",
    "tcod": "madopd_distill.methods.tcod:TCOD",
    "guided": "madopd_distill.methods.guided:GuidedOPD",
    "sage": "madopd_distill.methods.sage:SageOPD",
    "omni": "madopd_distill.methods.omni:OmniOPD",
    "routing": "madopd_distill.methods.routing:TokenRouting",
    # What a user would pick instead: RL on the env's reward, and an OPD -> RL hybrid (issue 24).
    "grpo": "madopd_distill.methods.grpo:GRPO",
    "gigpo": "madopd_distill.methods.gigpo:GiGPO",
    "atod": "madopd_distill.methods.atod:ATOD",
}


class UnknownMethodError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register_method(name: str, entry_point: str) -> None:
    """Register ``name`` -> ``"module:Class"`` (for methods defined outside this package)."""
    if ":" not in entry_point:
        raise ValueError(f"entry points look like 'package.module:Class', got {entry_point!r}")
    METHODS[name] = entry_point


def method_class(name: str) -> type[Method]:
    """The Method class registered as ``name`` (imported now); unknown names get suggestions."""
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownMethodError(f"No method {name!r}.{hint} Known: {', '.join(sorted(METHODS))}.")
    module, _, attr = METHODS[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"{METHODS[name]} is not a Method subclass")
    return cls


def build_method(name: str, config: dict[str, Any], ctx: MethodContext) -> Method:
    """Instantiate method ``name`` from a config mapping (checked by its ``Config``)."""
    cls = method_class(name)
    return cls(cls.Config.from_dict(dict(config)), ctx)


__all__ = ["METHODS", "Method", "MethodConfig", "MethodContext", "UnknownMethodError", "build_method",
           "method_class", "register_method"]
