"""The eval loop: planned episode units -> worker envs -> a batched agent -> ``episodes.jsonl``.

Each env of a leaderboard runs in ``make_vec`` workers (``num_envs`` episodes at once); every turn, the
replies of all live episodes come from one batched ``agent.act`` call. An episode is written to disk
the moment it ends. A worker that dies or hangs yields an *errored* episode, which is retried once
from scratch; a second failure is written with its error and reported.

The env layer reaches agents only through ``madopd_agents.registry`` imported inside functions: the
import of this module stays free of the agent layer.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from madopd_envs.eval.config import ConfigError, Entry, Plan, Unit, plan_entry, with_env_limits
from madopd_envs.eval.results import EpisodeRecord, EpisodeStore, StepRecord
from madopd_envs.prompts import EpisodeHistory, PromptFormat, extract_action, render_conversation

REPO_ROOT = Path(__file__).resolve().parents[2]


# -- versions ------------------------------------------------------------------------------------
def harness_version() -> str:
    """``madopd <version>`` plus the git commit of this checkout when there is one."""
    try:
        version = importlib.metadata.version("madopd")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    try:
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"madopd {version}" + (f" ({commit})" if commit else "")


def engine_versions(env_id: str) -> dict[str, str]:
    """Versions of the distributions that provide the env's engine modules (``EnvCard.requires``)."""
    from madopd_envs.registry import spec

    dists = importlib.metadata.packages_distributions()
    out = {}
    for module in spec(env_id).card.requires:
        for dist in dists.get(module.split(".")[0], []):
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
    return out


# -- planning ------------------------------------------------------------------------------------
def env_traits(env_id: str) -> tuple[str, bool]:
    """``(family, open_ended)`` of a registered env, read from its class (no engine starts)."""
    from madopd_envs.registry import _resolve, spec

    s = spec(env_id)
    cls = _resolve(s.entry_point)
    return s.card.family, bool(getattr(cls, "open_ended", False))


def plan_entries(entries: list[Entry]) -> list[tuple[Entry, Plan]]:
    """Every entry's units, from the split's task ids (env constructors are cheap: engines start at reset)."""
    from madopd_envs.registry import make

    plans = []
    for entry in map(with_env_limits, entries):
        env = make(entry.env, **dict(entry.env_kwargs))
        try:
            task_ids = list(env.tasks(entry.split))
        finally:
            env.close()
        plans.append((entry, plan_entry(entry, task_ids)))
    return plans


# -- running -------------------------------------------------------------------------------------
@dataclass
class _Episode:
    unit: Unit
    attempt: int
    first_error: str | None
    history: EpisodeHistory
    record: EpisodeRecord
    info: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)


@dataclass
class RunStats:
    finished: int = 0
    won: int = 0
    errored: int = 0
    retried: int = 0


def run_entry(agent: Any, *, agent_name: str, needs_expert: bool, sampling: Any, fmt: PromptFormat, entry: Entry,
              units: list[Unit], store: EpisodeStore, num_envs: int, versions: dict[str, str],
              on_done: Callable[[dict[str, Any]], None], step_timeout: float = 120.0) -> RunStats:
    """Play ``units`` (all of one env) with ``agent``; each finished episode is appended to ``store``."""
    from madopd_envs.vector import make_vec

    stats = RunStats()
    if not units:
        return stats
    family, open_ended = env_traits(entry.env)
    n = min(num_envs, len(units))
    env_kwargs: dict[str, Any] = {**dict(entry.env_kwargs), "max_episode_steps": entry.max_steps}
    if needs_expert:
        env_kwargs["expert"] = True
    queue: deque[tuple[Unit, int, str | None]] = deque((u, 1, None) for u in units)
    slots: list[_Episode | None] = [None] * n

    def finish(i: int, error: str | None = None) -> None:
        ep = slots[i]
        slots[i] = None
        if error and ep.attempt == 1:  # retry once, from scratch, before anything is written
            stats.retried += 1
            queue.appendleft((ep.unit, 2, error))
            return
        rec = ep.record
        rec.error, rec.attempts, rec.first_error = error, ep.attempt, ep.first_error
        rec.seconds = round(time.perf_counter() - ep.started, 3)
        store.append(rec)
        stats.finished += 1
        stats.won += int(rec.won and not error)
        stats.errored += int(bool(error))
        on_done({"won": rec.won, "error": error})

    with make_vec(entry.env, n, step_timeout=step_timeout, **env_kwargs) as vec:
        while queue or any(s is not None for s in slots):
            starting = []
            for i in range(n):
                if slots[i] is None and queue:
                    starting.append((i, *queue.popleft()))
            if starting:
                obs, infos = vec.reset(seed=[u.seed for _, u, _, _ in starting], indices=[i for i, *_ in starting],
                                       options=[{"task_id": u.task_id, "split": u.split} for _, u, _, _ in starting])
                for (i, unit, attempt, first_error), o, info in zip(starting, obs, infos):
                    history = EpisodeHistory(family=family, open_ended=open_ended)
                    record = EpisodeRecord(key=unit.key, env=unit.env, split=unit.split, task_id=unit.task_id,
                                           seed=unit.seed, agent=agent_name, family=family, versions=versions)
                    slots[i] = _Episode(unit, attempt, first_error, history, record, info)
                    if info.get("error"):
                        finish(i, f"reset: {info['error']}")
                        continue
                    history.observe(o, info)
                    record.task, record.initial_observation = info.get("task", ""), o
                    record.task_type = info.get("task_type")
                    record.score, record.raw_score = info.get("score", 0.0), info.get("raw_score", 0.0)
            active = [i for i in range(n) if slots[i] is not None]
            if not active:
                continue
            conversations = [render_conversation(slots[i].history, fmt) for i in active]
            outs = agent.act(conversations, sampling, infos=[{**slots[i].info, "family": family} for i in active])
            if len(outs) != len(active):
                raise RuntimeError(f"agent {agent_name} returned {len(outs)} outputs for {len(active)} conversations")
            actions: list[str | None] = [None] * n
            replies: dict[int, tuple[str, bool, Any]] = {}
            for i, out in zip(active, outs):
                if out.finish_reason == "scripted":
                    action, ok = out.text, True
                else:
                    action, ok = extract_action(out.text, open_ended=open_ended,
                                                admissible=slots[i].history.admissible_actions)
                actions[i] = action
                replies[i] = (action, ok, out)
            obs, rewards, terminated, truncated, infos = vec.step(actions)
            for i in active:
                ep, (action, ok, out) = slots[i], replies[i]
                info = infos[i]
                if info.get("error"):
                    finish(i, f"step {ep.record.steps + 1}: {info['error']}")
                    continue
                rec = ep.record
                rec.steps += 1
                rec.prompt_tokens += len(out.prompt_token_ids or [])
                rec.completion_tokens += len(out.token_ids)
                rec.invalid_actions += int(not info.get("action_valid", True))
                rec.invalid_format += int(not ok)
                rec.won, rec.score, rec.raw_score = bool(info.get("won")), float(info.get("score", 0.0)), \
                    float(info.get("raw_score", 0.0))
                rec.task_type = rec.task_type or info.get("task_type")
                rec.trajectory.append(StepRecord(
                    action=action, observation=obs[i], reward=float(rewards[i]), score=rec.score,
                    valid=bool(info.get("action_valid", True)), format_ok=ok,
                    reply=None if out.text == action else out.text, completion_tokens=len(out.token_ids)))
                ep.history.reply(out.text if out.finish_reason != "scripted" else f"<action>{action}</action>", action)
                ep.info = info
                if terminated[i] or truncated[i] or rec.steps >= entry.max_steps:
                    rec.terminated, rec.truncated = bool(terminated[i]), not bool(terminated[i])
                    finish(i)
                else:
                    ep.history.observe(obs[i], info)
    return stats


# -- a whole eval ----------------------------------------------------------------------------------
class ResumeError(RuntimeError):
    """The output folder holds a different run, or a finished run without ``--resume``."""


def evaluate(*, agent_name: str, agent_args: dict[str, Any], entries: list[Entry], output: Path,
             leaderboard: str | None = None, num_envs: int = 4, resume: bool = False, progress: bool = True,
             step_timeout: float = 120.0, command: str = "", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) an eval into ``output``; returns the summary written to ``output/summary.json``.

    The agent is built first, so missing weights fail before any env starts.
    """
    import json

    from madopd_agents.registry import build_agent, get_card  # the lazy edge from env layer to agents

    from madopd_envs.eval.results import summarize, write_json

    card = get_card(agent_name)
    if agent_args:
        card = card.with_overrides(agent_args)
    try:
        fmt = PromptFormat.from_dict(card.prompt)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"agent {card.name}: bad prompt settings {card.prompt}: {e}") from e
    output = Path(output)
    store = EpisodeStore(output / "episodes.jsonl")
    run_info = {"agent": card.name, "agent_card": card.source, "agent_args": agent_args, "leaderboard": leaderboard,
                "entries": [{**e.__dict__, "seeds": list(e.seeds), "env_kwargs": dict(e.env_kwargs),
                             "task_ids": None if e.task_ids is None else list(e.task_ids)} for e in entries]}
    run_path = output / "run.json"
    if store.path.exists() and not resume:
        raise ResumeError(f"{output} already holds results; pass --resume to continue that run, or choose "
                          f"another --output")
    if resume and run_path.exists():
        before = json.loads(run_path.read_text())
        mismatch = [k for k in run_info if before.get(k) != run_info[k]]
        if mismatch:
            raise ResumeError(f"{output} holds a run with different {', '.join(mismatch)}; --resume continues the "
                              f"same run only (see {run_path}); choose another --output")

    agent = build_agent(card)
    try:
        plans = plan_entries(entries)
        for note in (n for _, p in plans for n in p.notes):
            log(f"note: {note}")
        output.mkdir(parents=True, exist_ok=True)
        write_json(run_path, {**run_info, "command": command})
        done = store.load(repair=True)
        planned = [u for _, p in plans for u in p.units]
        planned_keys = {u.key for u in planned}
        have = {k for k in done if k in planned_keys}
        if have:
            log(f"resuming: {len(have)} of {len(planned)} episodes already in {store.path}")
        won0 = sum(1 for k in have if done[k]["won"] and not done[k].get("error"))
        bar = _progress(total=len(planned), initial=len(have), desc=card.name, enabled=progress)
        totals = {"done": len(have), "won": won0}

        def on_done(r: dict[str, Any]) -> None:
            totals["done"] += 1
            totals["won"] += int(r["won"] and not r["error"])
            bar.set_postfix_str(f"success {totals['won']}/{totals['done']} = {totals['won'] / totals['done']:.0%}")
            bar.update(1)

        harness = harness_version()
        stats = RunStats()
        try:
            for entry, plan in plans:
                todo = [u for u in plan.units if u.key not in have]
                versions = {"harness": harness, **engine_versions(entry.env)}
                if not todo:
                    continue
                s = run_entry(agent, agent_name=card.name, needs_expert=card.needs_expert,
                              sampling=card.sampling_params, fmt=fmt, entry=entry,
                              units=todo, store=store, num_envs=num_envs, versions=versions, on_done=on_done,
                              step_timeout=step_timeout)
                stats.retried += s.retried
        finally:
            bar.close()
        records = [r for k, r in store.load().items() if k in planned_keys]
        errored = [r for r in records if r.get("error")]
        notes = [n for _, p in plans for n in p.notes]
        if stats.retried:
            log(f"{stats.retried} episode(s) errored and were retried once")
        for r in errored:
            log(f"errored after retry: {r['key']}: {r['error'].splitlines()[0]}")
        summary = summarize(records, agent=card.name, leaderboard=leaderboard, planned=len(planned),
                            versions=_merge_versions(records), notes=notes)
        write_json(output / "summary.json", summary)
        return summary
    finally:
        agent.close()


def _merge_versions(records: list[dict[str, Any]]) -> dict[str, str]:
    """The versions the records were produced with (several values if a run was resumed after an upgrade)."""
    seen: dict[str, set[str]] = {}
    for r in records:
        for k, v in r.get("versions", {}).items():
            seen.setdefault(k, set()).add(str(v))
    return {k: ", ".join(sorted(v)) for k, v in sorted(seen.items())}


def _progress(total: int, initial: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="ep", disable=not enabled, dynamic_ncols=True)
