"""Trajectories and training samples: who wrote which tokens, and what the student is trained on.

A :class:`Trajectory` is one episode of one task: an ordered list of :class:`Turn` s. Each turn
records its *role* (who produced it: ``prompt``, ``env``, ``student``, ``teacher``), its
*provenance* (how: sampled, replayed expert action, env observation...), its token ids, the
sampler's per-token log-probs and a per-token loss mask. The mask is ``True`` only on tokens the
student sampled itself; prompt, observation and teacher/expert-written tokens are never trained on
(unless a method says otherwise and sets the mask itself).

Every *sampled* turn (student, or a teacher model) also keeps the exact token context it continued
(``context_ids``, straight from the agent's ``ActionOutput.prompt_token_ids``) and the
conversation it saw (``context``). Training samples are built from these (:func:`to_samples`):

- ``turn`` mode: one sample per student turn = its context + its tokens. Always exact, whatever
  the prompt format does with history (windows, stripped thoughts, a reminder under the newest
  observation only).
- ``trajectory`` mode: one sample per trajectory = the last context + its completion, with every
  student turn's tokens unmasked. Exact only when each context extends the previous context plus
  the previous completion token for token (``Trajectory.contiguous``); otherwise that trajectory
  falls back to ``turn`` mode, and the sample says so. (The project's default prompt format is not
  contiguous: it lists the admissible actions under the newest observation only.)

These types are re-exported by :mod:`madopd_distill.rollout`, which collects them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from madopd_agents.base import Conversation

Role = Literal["prompt", "env", "student", "teacher"]
# Who writes a turn: the student (sampled, trained on), a teacher model (sampled, not trained on),
# or the env's expert (``info["expert_action"]``, replayed as text, not trained on).
Writer = Literal["student", "teacher", "expert"]
ROLES: tuple[str, ...] = ("prompt", "env", "student", "teacher")


@dataclass
class Turn:
    """One segment of a trajectory.

    Attributes:
        role: who produced it -- ``prompt`` (system + first observation), ``env`` (an observation),
            ``student`` or ``teacher`` (a generated action turn; expert replays are ``teacher``).
        text: the segment's text (for generated turns: the full reply, thoughts included).
        token_ids: its tokens. Generated turns: exactly the sampled tokens. ``prompt``/``env``
            turns: the tokens they added to the next context where that is known (contiguous
            trajectories), else empty.
        logprobs: the sampler's log-probability of each token (generated turns), else ``None``.
        loss_mask: per token, train the student on it. Default: all ``True`` for student turns,
            all ``False`` otherwise.
        provenance: how it was made: ``"sampled"`` (student), ``"teacher_sampled"``, ``"expert"``
            (replayed ``info["expert_action"]``), ``"observation"``, ``"system"``.
        env_step: the env step this turn belongs to (the action of step ``k`` and the observation it
            produced share ``k``; the initial prompt is step 0).
        context_ids: generated turns: the exact token context the turn continued.
        context: generated turns: the conversation (chat messages) that context renders.
        action: generated turns: the action extracted from ``text`` and sent to the env.
        info: small per-turn facts (``action_valid``, ``reward``, ``finish_reason``...).
    """

    role: Role
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    loss_mask: list[bool] | None = None
    provenance: str = ""
    env_step: int = 0
    context_ids: list[int] | None = None
    context: Conversation | None = None
    action: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown turn role {self.role!r}; known: {ROLES}")
        if self.loss_mask is None:
            self.loss_mask = [self.role == "student"] * len(self.token_ids)
        if len(self.loss_mask) != len(self.token_ids):
            raise ValueError(f"loss_mask has {len(self.loss_mask)} entries for {len(self.token_ids)} tokens")
        if self.logprobs is not None and len(self.logprobs) != len(self.token_ids):
            raise ValueError(f"logprobs has {len(self.logprobs)} entries for {len(self.token_ids)} tokens")

    @property
    def sampled(self) -> bool:
        """A model sampled it (student or teacher model), so its exact context and tokens are known.

        Replayed expert actions are ``teacher`` turns that are not sampled: their text reaches the
        next context through the prompt format, and they carry no ``context_ids``.
        """
        return self.context_ids is not None


@dataclass
class Trajectory:
    """One episode of one task.

    Attributes:
        task_id: the env task played.
        group_id: rollouts of the same task in one batch share it (GRPO-style group sampling).
        turns: the segments in order.
        rewards: the env reward of each step.
        won: the env said the task is solved.
        score: the env's final normalised score in ``[0, 1]``.
        env_id: the environment.
        split: the split the task came from.
        truncated: the episode hit a step limit (env's or the plan's) before terminating.
        error: why the episode broke (a dead worker...), else ``None``; errored episodes are kept
            for the record and dropped from training by :func:`to_samples`.
        meta: anything a method wants to carry (e.g. the B2F replay length).
    """

    task_id: str
    group_id: int = 0
    turns: list[Turn] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    won: bool = False
    score: float = 0.0
    env_id: str = ""
    split: str = ""
    truncated: bool = False
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sampled_turns(self) -> list[Turn]:
        return [t for t in self.turns if t.sampled]

    @property
    def student_turns(self) -> list[Turn]:
        return [t for t in self.turns if t.role == "student"]

    @property
    def num_steps(self) -> int:
        return len(self.rewards)

    @property
    def total_reward(self) -> float:
        return float(sum(self.rewards))

    @property
    def contiguous(self) -> bool:
        """Each sampled turn's context extends the previous context + completion, token for token."""
        prev: list[int] | None = None
        for t in self.sampled_turns:
            if t.context_ids is None:
                return False
            if prev is not None and t.context_ids[: len(prev)] != prev:
                return False
            prev = t.context_ids + t.token_ids
        return True

    def token_ids(self) -> list[int]:
        """The whole episode as one token sequence (contiguous trajectories only)."""
        gen = self.sampled_turns
        if not gen:
            return []
        if not self.contiguous:
            raise ValueError(f"trajectory of {self.task_id} is not contiguous: its turns have separate contexts")
        return list(gen[-1].context_ids) + list(gen[-1].token_ids)

    def turn_boundaries(self) -> list[tuple[int, int]]:
        """``(start, end)`` token offsets of every turn in :meth:`token_ids` (contiguous only).

        A sampled turn spans its tokens. Other turns (prompt, observation, replayed expert action)
        fill the gap up to the next sampled turn's context: each takes its own ``token_ids`` where
        they are known and match, and the last one of a gap takes what is left (a replayed expert
        action has no tokens of its own: its text reaches the context through the prompt format).
        """
        seq = self.token_ids()
        spans: list[tuple[int, int]] = []
        cursor = 0
        for i, t in enumerate(self.turns):
            if t.sampled:
                start = len(t.context_ids)
                spans.append((start, start + len(t.token_ids)))
            else:
                nxt = next((j for j in range(i + 1, len(self.turns)) if self.turns[j].sampled), None)
                gap_end = len(self.turns[nxt].context_ids) if nxt is not None else len(seq)
                n = len(t.token_ids)
                if nxt == i + 1 or nxt is None and i == len(self.turns) - 1:
                    spans.append((cursor, gap_end))  # the last turn of a gap takes what is left of it
                elif n and seq[cursor: cursor + n] == t.token_ids:
                    spans.append((cursor, cursor + n))
                else:
                    spans.append((cursor, cursor))
            cursor = spans[-1][1]
        return spans


@dataclass
class Sample:
    """One training sequence: the student is trained on ``input_ids[t]`` where ``loss_mask[t]``.

    Attributes:
        input_ids: context + completion tokens.
        loss_mask: per token, whether the student is trained on it (only student-sampled tokens).
        sampler_logprobs: per token, the sampler's log-prob (0.0 where not sampled by the student).
        traj_index: index of the source trajectory in the step's trajectory list.
        turn_indices: indices (in ``Trajectory.turns``) of the student turns it trains on.
        teacher_input_ids: the teacher's own token sequence, where a method gives the teacher a
            different context (privileged information); ``None``: the teacher sees ``input_ids``.
        teacher_loss_mask: with ``teacher_input_ids``: the positions that correspond, in order, to
            the ``True`` positions of ``loss_mask`` (same count, same tokens).
        mode: ``"turn"`` or ``"trajectory"``.
        meta: method extras (e.g. per-sample teacher weights).
    """

    input_ids: list[int]
    loss_mask: list[bool]
    sampler_logprobs: list[float]
    traj_index: int = 0
    turn_indices: list[int] = field(default_factory=list)
    teacher_input_ids: list[int] | None = None
    teacher_loss_mask: list[bool] | None = None
    mode: str = "turn"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.input_ids)
        if len(self.loss_mask) != n or len(self.sampler_logprobs) != n:
            raise ValueError("input_ids, loss_mask and sampler_logprobs must have the same length")
        if self.loss_mask and self.loss_mask[0]:
            raise ValueError("the first token has no context: it cannot be trained on")
        if self.teacher_input_ids is not None:
            if self.teacher_loss_mask is None or len(self.teacher_loss_mask) != len(self.teacher_input_ids):
                raise ValueError("teacher_input_ids needs a teacher_loss_mask of the same length")
            ours = [x for x, m in zip(self.input_ids, self.loss_mask) if m]
            theirs = [x for x, m in zip(self.teacher_input_ids, self.teacher_loss_mask) if m]
            if ours != theirs:
                raise ValueError("the teacher's scored tokens must be the student's trained tokens, in order")

    @property
    def num_tokens(self) -> int:
        return sum(self.loss_mask)


def turn_sample(traj: Trajectory, traj_index: int, turn_index: int) -> Sample:
    """The sample of one student turn: its exact context + its sampled tokens."""
    t = traj.turns[turn_index]
    if t.context_ids is None:
        raise ValueError(f"turn {turn_index} of {traj.task_id} has no context_ids: cannot train on it")
    ctx = list(t.context_ids)
    return Sample(
        input_ids=ctx + list(t.token_ids),
        loss_mask=[False] * len(ctx) + list(t.loss_mask),
        sampler_logprobs=[0.0] * len(ctx) + list(t.logprobs or [0.0] * len(t.token_ids)),
        traj_index=traj_index,
        turn_indices=[turn_index],
        mode="turn",
    )


def trajectory_sample(traj: Trajectory, traj_index: int) -> Sample:
    """The whole (contiguous) trajectory as one sample; every student token unmasked."""
    ids = traj.token_ids()
    mask, lps, turn_indices = [False] * len(ids), [0.0] * len(ids), []
    for i, t in enumerate(traj.turns):
        if not t.sampled:
            continue
        start = len(t.context_ids)
        for j, (m, lp) in enumerate(zip(t.loss_mask, t.logprobs or [0.0] * len(t.token_ids))):
            mask[start + j], lps[start + j] = m, lp if m else 0.0
        if any(t.loss_mask):
            turn_indices.append(i)
    return Sample(ids, mask, lps, traj_index=traj_index, turn_indices=turn_indices, mode="trajectory")


def to_samples(trajectories: Sequence[Trajectory], mode: Literal["turn", "trajectory"] = "trajectory") -> list[Sample]:
    """Training samples of the student turns of ``trajectories`` (errored episodes are skipped).

    ``trajectory`` mode falls back to ``turn`` mode for a trajectory that is not contiguous.
    Samples with no trainable token are dropped.
    """
    if mode not in ("turn", "trajectory"):
        raise ValueError(f"sample mode is 'turn' or 'trajectory', got {mode!r}")
    out: list[Sample] = []
    for k, traj in enumerate(trajectories):
        if traj.error is not None:
            continue
        if mode == "trajectory" and traj.contiguous and traj.sampled_turns:
            samples = [trajectory_sample(traj, k)]
        else:
            samples = [turn_sample(traj, k, i) for i, t in enumerate(traj.turns) if t.role == "student"]
        out.extend(s for s in samples if s.num_tokens > 0)
    return out
