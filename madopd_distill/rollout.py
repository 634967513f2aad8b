"""On-policy multi-turn rollouts: the student (and, where a method says so, a teacher or the env's
expert) plays episodes in ``madopd_envs.make_vec`` workers, and every turn is recorded with its
tokens, the sampler's log-probs, its loss mask and its provenance (:mod:`madopd_distill.trajectory`,
re-exported here).

- :class:`RolloutPrompt`: the project's prompt layer (``madopd_envs.prompts``) as rollouts use it.
- :class:`RolloutPlan`: how a method shapes one episode (who writes turn ``t``, step caps).
- :class:`RolloutCollector`: plays :class:`Episode` s in waves of ``num_envs`` workers.
- :func:`group_episodes` / :class:`TaskSampler`: group sampling (n rollouts per task) and the
  tasks of each training step.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from madopd_agents.base import ActionOutput, Agent, Conversation, SamplingParams
from madopd_distill.trajectory import (ROLES, Role, Sample, Trajectory, Turn, Writer, to_samples, trajectory_sample,
                                       turn_sample)

__all__ = ["ROLES", "Episode", "Role", "RolloutCollector", "RolloutPlan", "RolloutPrompt", "RolloutStats", "Sample",
           "TaskSampler", "Trajectory", "Turn", "Writer", "group_episodes", "to_samples", "trajectory_sample",
           "turn_sample"]


# -- the prompt layer ------------------------------------------------------------------------------
class RolloutPrompt:
    """The project's prompt layer (:mod:`madopd_envs.prompts`) as the collector uses it.

    Observations and replies go into an ``EpisodeHistory``; each turn's conversation is
    ``render_conversation(history, fmt)``; the action is ``extract_action(reply)``. An expert's
    action is written as the reply the format asks for (``<action>...</action>``).

    Args:
        family: the env family (instructions), e.g. ``"textworldexpress"``.
        fmt: a ``madopd_envs.prompts.PromptFormat``; ``history=None`` (the default here) keeps all
            turns, so contexts stay contiguous and trajectory-mode samples are exact.
        open_ended: the env takes free-form answers (code).
    """

    def __init__(self, family: str = "text", fmt: Any = None, open_ended: bool = False):
        from madopd_envs import prompts

        self._p = prompts
        self.family, self.open_ended = family, open_ended
        self.fmt = fmt if fmt is not None else prompts.PromptFormat(history=None)

    @classmethod
    def for_env(cls, env_id: str, **fmt: Any) -> RolloutPrompt:
        from madopd_envs import prompts, spec

        card = spec(env_id).card
        return cls(card.family, prompts.PromptFormat.from_dict({"history": None, **fmt}), open_ended=card.family == "code")

    def new_history(self) -> Any:
        return self._p.EpisodeHistory(family=self.family, open_ended=self.open_ended)

    def conversation(self, history: Any) -> Conversation:
        return self._p.render_conversation(history, self.fmt)

    def parse_action(self, text: str) -> str:
        return self._p.extract_action(text, open_ended=self.open_ended)[0]

    def format_action(self, action: str) -> str:
        """An expert's action written as the reply the student should have given."""
        return action if self.open_ended else f"<action>{action}</action>"


# -- collection ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Episode:
    """One episode to play: a task, its group (same task, several rollouts) and its split."""

    task_id: str
    group_id: int = 0
    split: str = "train"


@dataclass
class RolloutPlan:
    """How a method shapes one episode (default: the student writes every turn).

    Attributes:
        writer: ``(turn_index, info) -> "student" | "teacher" | "expert"``: who writes action turn
            ``turn_index`` (0-based) given the env's latest info. ``expert`` replays
            ``info["expert_action"]`` (the collector's envs must be made with ``expert=True``);
            when the env has no expert action there, the student writes the turn instead and
            the turn's ``info["expert_missing"]`` says so. ``teacher`` samples from the
            collector's ``teacher_agent``.
        max_env_steps: end the episode (truncated) after this many env steps.
        max_student_turns: end the episode after this many student turns (TCOD F2B depth).
        meta: copied into ``Trajectory.meta``.
    """

    writer: Callable[[int, dict[str, Any]], Writer] | None = None
    max_env_steps: int | None = None
    max_student_turns: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def group_episodes(task_ids: Sequence[str], group_size: int, split: str = "train", first_group: int = 0) -> list[Episode]:
    """``group_size`` episodes per task, consecutive, each task its own ``group_id``."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    return [Episode(t, first_group + g, split) for g, t in enumerate(task_ids) for _ in range(group_size)]


class TaskSampler:
    """Draws the tasks of each training step from a split, reproducibly (seeded by the step)."""

    def __init__(self, task_ids: Sequence[str], seed: int = 0):
        if not task_ids:
            raise ValueError("TaskSampler needs at least one task id")
        self.task_ids, self.seed = list(task_ids), seed

    def sample(self, step: int, num_tasks: int) -> list[str]:
        rng = random.Random(self.seed * 1_000_003 + step)
        if num_tasks <= len(self.task_ids):
            return rng.sample(self.task_ids, num_tasks)
        return [rng.choice(self.task_ids) for _ in range(num_tasks)]


@dataclass
class RolloutStats:
    """What one ``collect`` call cost."""

    episodes: int = 0
    env_steps: int = 0
    sampled_tokens: int = 0
    seconds: float = 0.0
    env_seconds: float = 0.0  # inside the workers' reset/step calls (the rest is sampling and prompts)

    @property
    def tokens_per_second(self) -> float:
        return self.sampled_tokens / self.seconds if self.seconds > 0 else 0.0


class _Live:
    """The running state of one env slot in a wave."""

    def __init__(self, episode: Episode, plan: RolloutPlan, env_id: str):
        self.episode, self.plan = episode, plan
        self.traj = Trajectory(task_id=episode.task_id, group_id=episode.group_id, env_id=env_id,
                               split=episode.split, meta=dict(plan.meta))
        self.history: Any = None  # madopd_envs.prompts.EpisodeHistory
        self.info: dict[str, Any] = {}
        self.done = False
        self.action_turns = 0
        self.student_turns = 0
        self.prev_seq: list[int] | None = None  # context + tokens of the last sampled turn
        self.expert_missing = False
        self.invalid_actions = 0


class RolloutCollector:
    """Plays episodes with the student (and, where a plan says so, a teacher or the expert).

    Args:
        env_id: a registered ``madopd/...`` id.
        num_envs: worker processes (episodes run in waves of this size).
        student: the policy being trained (an ``Agent`` that returns token ids and logprobs).
        sampling: the student's sampling parameters (``n`` must be 1: groups are separate episodes).
        prompt: the prompt layer (default: :meth:`RolloutPrompt.for_env`).
        teacher_agent: writes the turns a plan gives to ``"teacher"`` (same tokenizer as the student).
        expert: make the envs with ``expert=True`` so ``info["expert_action"]`` is available.
        max_env_steps: default per-episode step cap (a plan may lower it).
        max_invalid_actions: end an episode after this many invalid actions (``info["action_valid"]``
            False; ``None``: never). After an invalid action many envs leave the agent in a state
            whose observation no longer shows the task, so the turns that follow teach nothing;
            the invalid turn itself is kept (the teacher's view of it is the lesson).
        env_kwargs: passed to ``make_vec``/``make``.
        vec_options: the worker backend for ``make_vec`` (``{"backend": "ray", "ray_address": ...}``).
    """

    def __init__(self, env_id: str, num_envs: int, student: Agent | None, sampling: SamplingParams, *,
                 prompt: RolloutPrompt | None = None, teacher_agent: Agent | None = None,
                 expert: bool = False, max_env_steps: int | None = None,
                 max_invalid_actions: int | None = None, env_kwargs: dict[str, Any] | None = None,
                 vec_options: dict[str, Any] | None = None):
        from madopd_envs import make_vec

        if sampling.n != 1:
            raise ValueError("RolloutCollector samples one reply per conversation; use group_size for groups")
        self.env_id, self.num_envs = env_id, num_envs
        self.student, self.sampling, self.teacher_agent = student, sampling, teacher_agent
        self.prompt = prompt or RolloutPrompt.for_env(env_id)
        self.expert, self.max_env_steps = expert, max_env_steps
        if max_invalid_actions is not None and max_invalid_actions < 1:
            raise ValueError(f"max_invalid_actions must be >= 1 or None, got {max_invalid_actions}")
        self.max_invalid_actions = max_invalid_actions
        self.vec = make_vec(env_id, num_envs, expert=expert, **(vec_options or {}), **(env_kwargs or {}))
        self.last_stats = RolloutStats()

    def close(self) -> None:
        self.vec.close()

    def __enter__(self) -> RolloutCollector:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def collect(self, episodes: Sequence[Episode], plans: Sequence[RolloutPlan] | None = None, *,
                sampling: SamplingParams | None = None, student: Agent | None = None) -> list[Trajectory]:
        """Play ``episodes`` (in order; ``plans[i]`` shapes episode ``i``) and return their trajectories.

        ``sampling``/``student`` override the collector's for this call (e.g. greedy evaluation).
        """
        plans = list(plans) if plans is not None else [RolloutPlan() for _ in episodes]
        saved = self.sampling, self.student
        self.sampling, self.student = sampling or self.sampling, student or self.student
        try:
            return self._collect(episodes, plans)
        finally:
            self.sampling, self.student = saved

    def _collect(self, episodes: Sequence[Episode], plans: list[RolloutPlan]) -> list[Trajectory]:
        if len(plans) != len(episodes):
            raise ValueError(f"{len(episodes)} episodes but {len(plans)} plans")
        stats, t0 = RolloutStats(episodes=len(episodes)), time.perf_counter()
        out: list[Trajectory] = []
        for start in range(0, len(episodes), self.num_envs):
            wave = [_Live(e, p, self.env_id) for e, p in zip(episodes[start:start + self.num_envs],
                                                              plans[start:start + self.num_envs])]
            self._play(wave, stats)
            out.extend(live.traj for live in wave)
        stats.seconds = time.perf_counter() - t0
        self.last_stats = stats
        return out

    # -- one wave ---------------------------------------------------------------------------------
    def _play(self, wave: list[_Live], stats: RolloutStats) -> None:
        idx = list(range(len(wave)))
        t_env = time.perf_counter()
        obs, infos = self.vec.reset(options=[{"task_id": lv.episode.task_id, "split": lv.episode.split} for lv in wave],
                                    indices=idx)
        stats.env_seconds += time.perf_counter() - t_env
        for lv, o, info in zip(wave, obs, infos):
            if o is None:
                lv.traj.error, lv.done = info.get("error", "reset failed"), True
                continue
            lv.info = info
            lv.history = self.prompt.new_history()
            lv.history.observe(o, info)
            lv.traj.turns.append(Turn("prompt", text=o, provenance="system", env_step=0))
        while True:
            active = [i for i in idx if not wave[i].done]
            if not active:
                return
            writers = {i: self._writer(wave[i]) for i in active}
            actions: list[str | None] = [None] * self.num_envs
            for who in ("student", "teacher"):
                ids = [i for i in active if writers[i] == who]
                if ids:
                    self._sample(who, [wave[i] for i in ids], stats)
            for i in active:
                if writers[i] == "expert":
                    self._expert_turn(wave[i])
                actions[i] = wave[i].traj.turns[-1].action
            t_env = time.perf_counter()
            obs, rewards, term, trunc, infos = self.vec.step(actions)
            stats.env_seconds += time.perf_counter() - t_env
            stats.env_steps += len(active)
            for i in active:
                self._observe(wave[i], obs[i], float(rewards[i]), bool(term[i]), bool(trunc[i]), infos[i])

    def _writer(self, lv: _Live) -> Writer:
        who = lv.plan.writer(lv.action_turns, lv.info) if lv.plan.writer is not None else "student"
        if who not in ("student", "teacher", "expert"):
            raise ValueError(f"a plan's writer returned {who!r}; expected 'student', 'teacher' or 'expert'")
        if who == "expert" and not self.expert:
            raise ValueError("a plan asks for expert turns but the collector's envs were made without expert=True")
        lv.expert_missing = who == "expert" and not lv.info.get("expert_action")
        if lv.expert_missing:  # off the expert's path: the student carries on, and the turn says so
            return "student"
        if who == "teacher" and self.teacher_agent is None:
            raise ValueError("a plan asks for teacher-written turns but the collector has no teacher_agent")
        return who

    def _sample(self, who: Writer, lives: list[_Live], stats: RolloutStats) -> None:
        agent = self.student if who == "student" else self.teacher_agent
        if agent is None:
            raise ValueError("a turn fell to the student, but the collector has no student agent "
                             "(expert-only collection left the expert's path)")
        convs = [self.prompt.conversation(lv.history) for lv in lives]
        outs: list[ActionOutput] = agent.act(convs, self.sampling, [lv.info for lv in lives])
        if len(outs) != len(lives):
            raise RuntimeError(f"{agent.name} returned {len(outs)} outputs for {len(lives)} conversations")
        for lv, o, conv in zip(lives, outs, convs):
            if o.prompt_token_ids is None or len(o.logprobs) != len(o.token_ids):
                raise ValueError(f"{agent.name} must return prompt_token_ids and one logprob per token for on-policy rollouts")
            ctx = list(o.prompt_token_ids)
            self._fill_gap(lv, ctx)
            turn = Turn(who, text=o.text, token_ids=list(o.token_ids), logprobs=list(o.logprobs),
                        provenance="sampled" if who == "student" else "teacher_sampled",
                        env_step=lv.action_turns + 1, context_ids=ctx, context=conv,
                        action=self.prompt.parse_action(o.text),
                        info={"finish_reason": o.finish_reason, "expert_missing": lv.expert_missing})
            lv.traj.turns.append(turn)
            lv.prev_seq = ctx + turn.token_ids
            lv.history.reply(o.text)
            if who == "student":
                lv.student_turns += 1
                stats.sampled_tokens += len(o.token_ids)

    def _fill_gap(self, lv: _Live, ctx: list[int]) -> None:
        """Give the prompt/observation turn before this sampled turn the tokens it added to ``ctx``."""
        gap_turn = lv.traj.turns[-1] if lv.traj.turns and not lv.traj.turns[-1].sampled else None
        if gap_turn is None:
            return
        prev = lv.prev_seq or []
        if ctx[: len(prev)] == prev:
            gap_turn.token_ids = ctx[len(prev):]
            gap_turn.loss_mask = [False] * len(gap_turn.token_ids)

    def _expert_turn(self, lv: _Live) -> None:
        action = lv.info["expert_action"]
        text = self.prompt.format_action(action)
        lv.traj.turns.append(Turn("teacher", text=text, provenance="expert", env_step=lv.action_turns + 1,
                                  action=action, context=self.prompt.conversation(lv.history)))
        lv.history.reply(text)

    def _observe(self, lv: _Live, obs: str | None, reward: float, terminated: bool, truncated: bool,
                 info: dict[str, Any]) -> None:
        lv.action_turns += 1
        last = lv.traj.turns[-1]
        last.info["reward"] = reward
        if "error" in info:
            lv.traj.error, lv.traj.truncated, lv.done = info["error"], True, True
            return
        last.info["action_valid"] = bool(info.get("action_valid", True))
        lv.invalid_actions += not last.info["action_valid"]
        lv.info = info
        lv.traj.rewards.append(reward)
        lv.traj.won = bool(info.get("won", False))
        lv.traj.score = float(info.get("score", 0.0))
        lv.traj.turns.append(Turn("env", text=obs or "", provenance="observation", env_step=lv.action_turns))
        lv.history.observe(obs or "", info)
        cap = min(x for x in (lv.plan.max_env_steps, self.max_env_steps, math.inf) if x is not None)
        plan_stop = lv.plan.max_student_turns is not None and lv.student_turns >= lv.plan.max_student_turns
        invalid_stop = self.max_invalid_actions is not None and lv.invalid_actions >= self.max_invalid_actions
        if terminated or truncated or lv.action_turns >= cap or plan_stop or invalid_stop:
            lv.done = True
            lv.traj.truncated = not terminated
            lv.traj.meta["stopped_by_plan"] = bool(plan_stop and not terminated)
            lv.traj.meta["stopped_invalid"] = bool(invalid_stop and not terminated)

