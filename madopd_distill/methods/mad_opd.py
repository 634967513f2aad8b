"""MAD-OPD: teachers debate over the student's on-policy state; confidence-weighted distillation.

Paper: "MAD-OPD: Multi-Agent Debate driven On-Policy Distillation" (arXiv 2605.01347); code
chiefovoavicii/MAD-OPD@6c7a66a, read for semantics only, not copied.

Relative to vanilla OPD:
  1. per student turn, K >= 2 teachers debate for R rounds over the student's state (round 1 blind);
  2. each teacher scores the student's tokens conditioned on state + transcript (privileged: the
     student never sees it), and the loss is ``sum_k w_k D(student || teacher_k)``, each teacher
     averaged over its own valid rows, ``w = softmax(c / 100 / tau)`` from ``<<CONFIDENCE=N>>`` tags;
  3. the divergence adapts to the task: JSD beta=0.5 for agentic envs, reverse KL for code envs.

Provenance of each choice (paper code paths are in chiefovoavicii/MAD-OPD@6c7a66a):
- blind round 1, then revisions on the transcript: ``mad_opd/trainers/mad_opd_trainer.py:1180-1198``;
- ``w = softmax(c / 100 / tau)``, ``tau = 1``: ``mad_opd/trainers/mad_opd_core.py:31-38``; uniform
  weights when a tag is missing: ``mad_opd/trainers/vllm_teacher_manager.py:1006-1033``;
- ``rounds=2``, dynamic weights on: ``scripts/run_mad_opd.sh:57``;
- debate sampling 0.7 / 0.8: ``scripts/run_mad_opd.sh:58``;
- JSD beta=0.5 on agentic tasks, reverse KL on code: ``scripts/run_mad_opd.sh:55`` and
  ``mad_opd/trainers/mad_opd_core.py:16-17``;
- each teacher averaged over its own rows; a failed teacher's weight goes to the other:
  ``mad_opd/trainers/mad_opd_core.py:348-386``;
- the loop filter (inherited from MT-OPD): ``mad_opd/trainers/mad_opd_trainer.py:1172,1270-1330``;
- ``history=expert`` (debate over OPAD's teacher-forced per-turn states, the paper's agentic run):
  ``mad_opd/_mad_opd_args.py:70``; the default ``history=student`` is ours;
- per-sample reduction (mean over samples of each sample's token mean): ``scripts/run_mad_opd.sh:63``
  (one sample per device batch) with ``mad_opd/trainers/mad_opd_trainer.py:744``; the default here
  is ``token_mean`` (ours) and ``method=mad_opd_paper`` sets ``sample_mean``;
- debate instructions appended to the state's last user message (``placement``); any K >= 2 (the
  code runs K=2; names Expert A, B, C...); dropping a teacher whose privileged context exceeds
  ``max_teacher_tokens``: ours.

Debate prompts live in :mod:`madopd_distill.methods.debate`. The published configuration:
``method=mad_opd_paper`` (``leaderboards/conf/distill/method/mad_opd_paper.yaml``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from madopd_agents.base import SamplingParams
from madopd_distill.batch import StepBatch
from madopd_distill.methods.base import MethodContext
from madopd_distill.methods.debate import PLACEMENTS, MODES, run_debate, scoring_context
from madopd_distill.methods.mt_opd import MTOPD, MTOPDConfig
from madopd_distill.rollout import Sample, Trajectory, to_samples
from madopd_distill.teachers import ScoreRequest, TokenScores

CODE_FAMILIES = ("code",)


def task_divergence(family: str | None, open_ended: bool = False) -> tuple[str, float]:
    """MAD-OPD's task-adaptive default: reverse KL (beta=1) for code, JSD beta=0.5 otherwise."""
    if open_ended or (family or "") in CODE_FAMILIES:
        return "reverse_kl", 1.0
    return "jsd", 0.5


@dataclass
class MADOPDConfig(MTOPDConfig):
    """MAD-OPD's knobs (plus :class:`MethodConfig`'s; ``divergence="auto"`` = task-adaptive).

    Attributes:
        rounds: debate rounds R (>= 1); round 1 is blind, 2..R revise on the transcript.
        tau: confidence temperature of ``softmax(c / 100 / tau)`` (> 0; the paper uses 1).
        dynamic_weights: ask for ``<<CONFIDENCE=N>>`` tags and weight teachers by them; off: uniform.
        mode: prompt family: ``agentic`` (next action), ``code`` or ``generic``; ``auto``: ``code``
            for code envs, else ``agentic``.
        placement: debate text appended to the state's last user message (``last_user``) or
            added as a new user message (``new_user``).
        debate_max_new_tokens: tokens per teacher reply per round.
        debate_temperature / debate_top_p: debate sampling (the paper: 0.7 / 0.8).
        max_teacher_tokens: drop a teacher for a turn when its privileged context is longer
            (``None``: never).
        history: whose states are debated (MT-OPD's field): ``student`` or ``expert`` (OPAD's
            teacher-forced per-turn states, the paper's agentic configuration).
        teacher_weights: unused: each turn's debate sets the weights.
    """

    divergence: str = "auto"
    sample_mode: str = "turn"
    rounds: int = 2
    tau: float = 1.0
    dynamic_weights: bool = True
    mode: str = "auto"
    placement: str = "last_user"
    debate_max_new_tokens: int = 256
    debate_temperature: float = 0.7
    debate_top_p: float = 0.8
    max_teacher_tokens: int | None = None

    def __post_init__(self) -> None:
        auto = self.divergence == "auto"
        if auto:
            self.divergence = "jsd"  # validated as such; resolved per env family by the method
        super().__post_init__()
        if auto:
            self.divergence = "auto"
        if self.sample_mode != "turn":
            raise ValueError("MAD-OPD debates each student turn's state: sample_mode must be 'turn'")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.mode not in (*MODES, "auto"):
            raise ValueError(f"mode must be one of {(*MODES, 'auto')}, got {self.mode!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if self.debate_max_new_tokens < 1:
            raise ValueError("debate_max_new_tokens must be >= 1")
        if not 0 < self.debate_top_p <= 1 or self.debate_temperature < 0:
            raise ValueError("debate_top_p must be in (0, 1] and debate_temperature >= 0")
        if self.max_teacher_tokens is not None and self.max_teacher_tokens < 2:
            raise ValueError("max_teacher_tokens must be >= 2 or None")


class MADOPD(MTOPD):
    """Debate per student turn -> privileged teacher contexts + per-turn confidence weights."""

    name = "mad_opd"
    Config = MADOPDConfig
    needs_teacher_agents = True

    def __init__(self, cfg: MADOPDConfig, ctx: MethodContext):
        super().__init__(cfg, ctx)
        if len(ctx.teachers) < 2:
            raise ValueError(f"MAD-OPD needs >= 2 teachers, got {len(ctx.teachers)} ({', '.join(ctx.teachers)})")
        self.agents = _match_agents(ctx)
        family = getattr(ctx.prompt, "family", None)
        open_ended = bool(getattr(ctx.prompt, "open_ended", False))
        if cfg.divergence == "auto":
            self.kind, self.beta = task_divergence(family, open_ended)
        else:
            self.kind, self.beta = cfg.divergence, cfg.beta
        is_code = open_ended or (family or "") in CODE_FAMILIES
        self.mode = cfg.mode if cfg.mode != "auto" else ("code" if is_code else "agentic")
        self.sampling = SamplingParams(temperature=cfg.debate_temperature, top_p=cfg.debate_top_p,
                                       max_new_tokens=cfg.debate_max_new_tokens, seed=ctx.seed)
        self._last: dict[str, float] = {}

    # -- samples: one per student turn, with each teacher's privileged sequence -----------------
    def make_samples(self, trajectories: Sequence[Trajectory], step: int) -> list[Sample]:
        samples = self.drop_loops(to_samples(trajectories, "turn"), trajectories)
        states = []
        for s in samples:
            turn = trajectories[s.traj_index].turns[s.turn_indices[0]]
            if turn.context is None:
                raise ValueError("MAD-OPD needs each student turn's conversation (Turn.context)")
            states.append(turn.context)
        generate = [self._generator(a) for a in self.agents]
        debates = run_debate(states, generate, rounds=self.cfg.rounds, tau=self.cfg.tau,
                             dynamic_weights=self.cfg.dynamic_weights, mode=self.mode, placement=self.cfg.placement)
        for s, state, d in zip(samples, states, debates):
            turn = trajectories[s.traj_index].turns[s.turn_indices[0]]
            completion = list(turn.token_ids)
            inputs, valid = [], []
            for k, agent in enumerate(self.agents):
                ctx_ids = _render(agent, self.ctx.tokenizer, scoring_context(state, d.transcript(), k, self.mode,
                                                                             self.cfg.placement))
                ids = ctx_ids + completion
                ok = self.cfg.max_teacher_tokens is None or len(ids) <= self.cfg.max_teacher_tokens
                inputs.append((ids, [False] * len(ctx_ids) + list(turn.loss_mask)) if ok else None)
                valid.append(ok)
            s.meta.update(teacher_inputs=inputs, teacher_valid=valid, teacher_weights=list(d.weights),
                          confidences=list(d.confidences))
        n = max(len(debates), 1)
        self._last = {"mad/tags_found": sum(d.tags_found for d in debates) / (n * len(self.agents)),
                      "mad/debated_turns": float(len(debates))}
        for k, name in enumerate(self.ctx.teachers):
            ws = [d.weights[k] for d in debates]
            mean = sum(ws) / n if debates else 0.0
            self._last[f"mad/weight/{name}"] = mean
            # spread over the step's states: 0 when every state got the same weights (e.g. no tags)
            self._last[f"mad/weight_std/{name}"] = (sum((w - mean) ** 2 for w in ws) / n) ** 0.5 if debates else 0.0
        return samples

    def _generator(self, agent: Any):
        def generate(convs: list) -> list[str]:
            return [o.text for o in agent.act(convs, self.sampling)]
        return generate

    # -- scoring: teacher k scores the student's tokens after ITS privileged context ------------
    def score(self, batch: StepBatch, step: int) -> list[TokenScores]:
        plain = batch.teacher_requests()  # the student's own sequences (fallback for dropped teachers)
        out = []
        for k, teacher in enumerate(self.ctx.teachers.values()):
            reqs = []
            for s, fallback in zip(batch.samples, plain):
                entry = s.meta["teacher_inputs"][k]
                if entry is None:
                    reqs.append(fallback)
                else:
                    ids, mask = entry
                    reqs.append(ScoreRequest(ids, [t for t, m in enumerate(mask) if m]))
            out.append(teacher.score(reqs, top_k=self.cfg.top_k))
        return out

    def sample_weights(self, batch: StepBatch) -> torch.Tensor:
        return torch.tensor([s.meta["teacher_weights"] for s in batch.samples], dtype=torch.float32)

    def teacher_valid(self, batch: StepBatch, scores: Sequence[TokenScores]) -> torch.Tensor:
        per_sample = torch.tensor([s.meta["teacher_valid"] for s in batch.samples], dtype=torch.bool)  # [S, K]
        return per_sample.T[:, batch.rows] & super().teacher_valid(batch, scores)

    def log_metrics(self, trajectories: Sequence[Trajectory], step: int) -> dict[str, float]:
        return {**self._last, **self._loops, "mad/divergence_beta": self.beta}


def _match_agents(ctx: MethodContext) -> list[Any]:
    """The text-writing agent of each scoring teacher, by name (else by position)."""
    names = list(ctx.teachers)
    agents = ctx.teacher_agents
    if all(n in agents for n in names):
        return [agents[n] for n in names]
    if len(agents) == len(names):
        return list(agents.values())
    raise ValueError(f"MAD-OPD needs a text-writing agent for each teacher {names}; got agents {list(agents)}")


def _render(agent: Any, tokenizer: Any, conversation: list[dict[str, str]]) -> list[int]:
    """Prompt ids of ``conversation`` as the student's rollouts render them (assistant turn opened)."""
    if hasattr(agent, "render"):
        return list(agent.render(conversation))
    if tokenizer is None:
        raise ValueError("MAD-OPD needs the tokenizer (MethodContext.tokenizer) to render teacher contexts")
    return list(tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                              return_dict=False))
