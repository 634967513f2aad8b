"""The eval loop: planned episode units -> worker envs -> a batched agent -> ``episodes.jsonl``.

Each env of a leaderboard runs in ``make_vec`` workers (``num_envs`` episodes at once); every turn, the
replies of all live episodes come from one batched ``agent.act`` call. An episode is written to disk
the moment it ends. A worker that dies or hangs, or an agent that raises, returns something that is not
an ``ActionOutput`` with a ``str`` text, or does not answer within ``agent_timeout``, yields an *errored*
episode (its cause in ``error``/``error_kind``), which is retried once from scratch; a second failure is
written with its error and reported. A batched ``act`` that fails is asked again one conversation at a
time, so one bad conversation costs one episode, not the batch.

Everything that can be checked without the model is checked before it loads: arguments, backend, the
output folder (writable, not a file, space for a record), the plan (splits, data, tasks) and, on
resume, that the run in the folder used the same data.

The env layer reaches agents only through ``madopd_agents.registry`` imported inside functions: the
import of this module stays free of the agent layer.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import inspect
import os
import subprocess
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from madopd_envs.eval.config import ConfigError, Entry, Plan, Unit, plan_entry, with_env_limits
from madopd_envs.eval.results import EpisodeRecord, EpisodeStore, OutputError, StepRecord, output_problem
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


def env_cards(env_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each env's card for ``run.json``: family, splits, licence and data provenance, package and version."""
    from madopd_envs.registry import spec

    return {env_id: spec(env_id).describe() for env_id in dict.fromkeys(env_ids)}


# -- planning ------------------------------------------------------------------------------------
def env_traits(env_id: str) -> tuple[str, bool]:
    """``(family, open_ended)`` of a registered env, read from its class (no engine starts)."""
    from madopd_envs.registry import _resolve, spec

    s = spec(env_id)
    cls = _resolve(s.entry_point)
    return s.card.family, bool(getattr(cls, "open_ended", False))


def data_source(env: Any) -> str:
    """Where an env's tasks come from, in words that change when the data does (compared on resume).

    ALFWorld: official data and its resolved path, or the generated set (generator, alfworld version,
    seed). WebShop: the catalogue and the digest of its indexed text. Other envs: their engine, whose
    version is recorded separately.
    """
    src = getattr(env, "source", None)
    if src is not None and hasattr(src, "describe"):
        if getattr(src, "root", None) is not None:
            return f"official data at {Path(src.root).resolve()}"
        if getattr(src, "cache", None) is not None:
            return f"generated games ({Path(src.cache).parent.name})"
        return str(src.describe())
    catalogue = getattr(env, "catalogue", None)
    if catalogue is not None and hasattr(catalogue, "products"):
        from madopd_envs.webshop.search import corpus_key

        digest = corpus_key(catalogue.products)
        return f"catalogue {catalogue.source or '?'} (sha256 {digest}, {len(catalogue.goals)} goals)"
    return "the engine's own tasks"


def _skipped_note(env: Any, entry: Entry) -> str | None:
    skipped = getattr(getattr(env, "source", None), "skipped", {}).get(entry.split) or {}
    if not skipped:
        return None
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
    return f"{entry.env}/{entry.split}: {sum(skipped.values())} games skipped ({why})"


def plan_entries(entries: list[Entry]) -> list[tuple[Entry, Plan]]:
    """Every entry's units, from the split's task ids (env constructors are cheap: engines start at reset).

    An unknown split, data that cannot be read, or an entry with nothing to play is a ``ConfigError``.
    """
    from madopd_envs.registry import MissingEngineError, UnknownEnvError, make, spec

    plans = []
    for entry in entries:
        splits = spec(entry.env).card.splits  # unknown ids fail here, with suggestions
        if splits and entry.split not in splits:
            raise ConfigError(f"{entry.env} has no split {entry.split!r}; known: {', '.join(splits)}")
        entry = with_env_limits(entry)
        try:
            env = make(entry.env, **dict(entry.env_kwargs))
            try:
                task_ids = list(env.tasks(entry.split))
                source, skipped = data_source(env), _skipped_note(env, entry)
            finally:
                env.close()
        except (MissingEngineError, UnknownEnvError, ConfigError):
            raise
        except Exception as e:  # missing ALFWORLD_DATA, unreadable data, bad env_kwargs: the user's to fix
            raise ConfigError(f"{entry.env} split {entry.split!r}: cannot list its tasks: {type(e).__name__}: "
                              f"{' '.join(str(e).split())}") from e
        plan = plan_entry(entry, task_ids)
        plan.source = source
        if skipped:
            plan.notes.append(skipped)
        if not plan.units:
            raise ConfigError(f"{entry.env} split {entry.split!r} has no tasks to play ({source}"
                              f"{'; ' + skipped if skipped else ''}): nothing can be evaluated")
        plans.append((entry, plan))
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


class AgentTimeout(RuntimeError):
    pass


def _act(agent: Any, conversations: list[Any], sampling: Any, infos: list[dict[str, Any]],
         timeout: float | None) -> Any:
    """``agent.act``, abandoned after ``timeout`` seconds (it runs in a daemon thread, which a hung backend
    keeps; its late answer is dropped). Without a timeout it runs in this thread."""
    if not timeout:
        return agent.act(conversations, sampling, infos=infos)
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["out"] = agent.act(conversations, sampling, infos=infos)
        except BaseException as e:  # travels to the caller's thread
            box["exc"] = e

    thread = threading.Thread(target=call, name="agent.act", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise AgentTimeout(f"agent.act gave no answer within --agent-timeout {timeout:g} s")
    if "exc" in box:
        raise box["exc"]
    return box["out"]


def _output_problem(out: Any) -> str | None:
    """Why ``out`` is not a usable ``ActionOutput`` (None when it is)."""
    if out is None or isinstance(out, str):
        return f"act returned {type(out).__name__} {str(out)[:40]!r} in place of an ActionOutput"
    text = getattr(out, "text", None)
    if not isinstance(text, str):
        return f"ActionOutput.text is {type(text).__name__}, not str"
    try:
        len(getattr(out, "token_ids", None) or [])
        len(getattr(out, "prompt_token_ids", None) or [])
    except TypeError:
        return "ActionOutput.token_ids/prompt_token_ids are not lists"
    return None


def ask_agent(agent: Any, conversations: list[Any], sampling: Any, infos: list[dict[str, Any]],
              timeout: float | None) -> list[tuple[Any, str | None, str | None]]:
    """One ``(output, error_kind, error)`` per conversation; a failure never escapes (Ctrl-C does).

    A batch that raises or comes back malformed is asked again one conversation at a time, so only the
    conversations that fail alone are errored. A timeout errors the whole batch (asking again would
    cost a timeout per conversation).
    """
    n = len(conversations)
    try:
        outs = _act(agent, conversations, sampling, infos, timeout)
        if not isinstance(outs, (list, tuple)) or len(outs) != n:
            size = f"{len(outs)} outputs" if isinstance(outs, (list, tuple)) else type(outs).__name__
            problem: tuple[str, str] | None = ("agent output", f"act returned {size} for {n} conversations")
        else:
            problem = None
    except AgentTimeout as e:
        return [(None, "agent timeout", str(e))] * n
    except Exception as e:
        problem = ("agent raised", f"{type(e).__name__}: {' '.join(str(e).split())[:500]}")
    if problem is not None:
        if n == 1:
            return [(None, *problem)]
        return [ask_agent(agent, [c], sampling, [i], timeout)[0] for c, i in zip(conversations, infos)]
    results = []
    for out in outs:
        why = _output_problem(out)
        results.append((None, "agent output", why) if why else (out, None, None))
    return results


@contextlib.contextmanager
def _closing(vec: Any, prof: Any) -> Any:
    """Close the workers on the way out, timed as ``env shutdown``."""
    try:
        yield vec
    finally:
        with prof.phase("env shutdown"):
            vec.close()


@dataclass
class RunStats:
    finished: int = 0
    won: int = 0
    errored: int = 0
    retried: int = 0


def run_entry(agent: Any, *, agent_name: str, needs_expert: bool, sampling: Any, fmt: PromptFormat, entry: Entry,
              units: list[Unit], store: EpisodeStore, num_envs: int, versions: dict[str, str],
              on_done: Callable[[dict[str, Any]], None], step_timeout: float = 120.0,
              agent_timeout: float | None = None, source: str = "",
              vec_options: dict[str, Any] | None = None, profile: Any = None) -> RunStats:
    """Play ``units`` (all of one env) with ``agent``; each finished episode is appended to ``store``.

    ``vec_options``: the worker backend and its settings for ``make_vec`` (``backend="ray"``, ``ray_address``).
    ``profile``: a :class:`madopd_envs.profile.Profile` that gets the env, prompt, agent and I/O seconds.
    """
    from madopd_envs.profile import Profile
    from madopd_envs.vector import make_vec

    prof = profile if profile is not None else Profile()

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

    def finish(i: int, error: str | None = None, kind: str = "env") -> None:
        ep = slots[i]
        slots[i] = None
        if error and ep.attempt == 1:  # retry once, from scratch, before anything is written
            stats.retried += 1
            queue.appendleft((ep.unit, 2, error))
            return
        rec = ep.record
        rec.error, rec.attempts, rec.first_error = error, ep.attempt, ep.first_error
        rec.error_kind = kind if error else None
        rec.seconds = round(time.perf_counter() - ep.started, 3)
        with prof.phase("I/O"):
            store.append(rec)
        stats.finished += 1
        stats.won += int(rec.won and not error)
        stats.errored += int(bool(error))
        on_done({"won": rec.won, "error": error})

    with prof.phase("env start-up"):
        vec = make_vec(entry.env, n, step_timeout=step_timeout, **dict(vec_options or {}), **env_kwargs)
    with _closing(vec, prof):
        while queue or any(s is not None for s in slots):
            starting = []
            for i in range(n):
                if slots[i] is None and queue:
                    starting.append((i, *queue.popleft()))
            if starting:
                with prof.phase("env"):
                    obs, infos = vec.reset(seed=[u.seed for _, u, _, _ in starting], indices=[i for i, *_ in starting],
                                           options=[{"task_id": u.task_id, "split": u.split} for _, u, _, _ in starting])
                for (i, unit, attempt, first_error), o, info in zip(starting, obs, infos):
                    history = EpisodeHistory(family=family, open_ended=open_ended)
                    record = EpisodeRecord(key=unit.key, env=unit.env, split=unit.split, task_id=unit.task_id,
                                           seed=unit.seed, agent=agent_name, family=family, versions=versions,
                                           source=source)
                    slots[i] = _Episode(unit, attempt, first_error, history, record, info)
                    if info.get("error"):
                        finish(i, f"reset: {info['error']}")
                        continue
                    history.observe(o, info)
                    record.task, record.initial_observation = info.get("task", ""), o
                    record.task_type = info.get("task_type")
                    record.sandboxed = info.get("sandboxed")
                    record.score, record.raw_score = info.get("score", 0.0), info.get("raw_score", 0.0)
            active = [i for i in range(n) if slots[i] is not None]
            if not active:
                continue
            with prof.phase("prompt"):
                conversations = [render_conversation(slots[i].history, fmt) for i in active]
            with prof.agent(agent):
                answers = ask_agent(agent, conversations, sampling,
                                    [{**slots[i].info, "family": family} for i in active], agent_timeout)
            actions: list[str | None] = [None] * n
            replies: dict[int, tuple[str, bool, Any]] = {}
            for i, (out, kind, error) in list(zip(active, answers)):
                if error:
                    finish(i, f"step {slots[i].record.steps + 1}: {error}", kind=kind)
                    active.remove(i)
                    continue
                if getattr(out, "finish_reason", "stop") == "scripted":
                    action, ok = out.text, True
                else:
                    action, ok = extract_action(out.text, open_ended=open_ended,
                                                admissible=slots[i].history.admissible_actions)
                actions[i] = action
                replies[i] = (action, ok, out)
            with prof.phase("env"):
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
                rec.completion_tokens += len(out.token_ids or [])
                rec.invalid_actions += int(not info.get("action_valid", True))
                rec.invalid_format += int(not ok)
                rec.won, rec.score, rec.raw_score = bool(info.get("won")), float(info.get("score", 0.0)), \
                    float(info.get("raw_score", 0.0))
                rec.task_type = rec.task_type or info.get("task_type")
                if info.get("sandboxed") is not None:  # code envs: False once any code ran unisolated
                    rec.sandboxed = bool(info["sandboxed"]) and rec.sandboxed is not False
                rec.trajectory.append(StepRecord(
                    action=action, observation=obs[i], reward=float(rewards[i]), score=rec.score,
                    valid=bool(info.get("action_valid", True)), format_ok=ok,
                    reply=None if out.text == action else out.text, completion_tokens=len(out.token_ids or [])))
                scripted = getattr(out, "finish_reason", "stop") == "scripted"
                ep.history.reply(f"<action>{action}</action>" if scripted else out.text, action)
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


def check_output(output: Path) -> None:
    """Fail now, in one line (:class:`OutputError`), when results could not be written under ``output``.

    Checked before any model loads: a file in the way, a read-only filesystem, no permission, a full disk
    (a small probe file is written and fsynced in the nearest existing folder, then removed).
    """
    target = Path(output).absolute()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == target else f"cannot hold folders: {existing} is a file"
        raise OutputError(f"--output {output} {where}; choose a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".madopd-write-check-")
    except OSError as e:
        raise output_problem(existing, e) from None
    try:
        view = memoryview(bytes(64 * 1024))  # about one large episode record
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as e:
        raise output_problem(existing, e) from None
    finally:
        os.close(fd)
        os.unlink(probe)


FROM_CARD_ARGS = {"OpenAIAgent": {"served_model"}}  # read by from_card, not by __init__


def _check_backend_args(card: Any, agent_args: dict[str, Any]) -> None:
    """Unknown ``--agent-args`` keys fail here instead of being ignored by a backend that takes ``**_``."""
    from madopd_agents import registry as agents

    try:
        cls = agents._resolve(card.backend)
    except ConfigError:
        raise
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"agent {card.name}: backend {card.backend!r} cannot be loaded: {type(e).__name__}: "
                          f"{' '.join(str(e).split())}") from e
    passed = set(agent_args) - agents._CARD_KEYS - agents._SAMPLING_KEYS - agents._PROMPT_KEYS
    if not passed:
        return
    # Backend args reach __init__, or from_pretrained for model backends; ``**_`` means "ignored".
    params = {**inspect.signature(cls.__init__).parameters}
    if hasattr(cls, "from_pretrained"):
        params.update(inspect.signature(cls.from_pretrained).parameters)
    if any(p.kind is p.VAR_KEYWORD and p.name != "_" for p in params.values()):
        return  # the backend forwards extra keywords (to the model loader): it checks them itself
    known = sorted({k for k, p in params.items() if k not in ("self", "name") and p.kind is not p.VAR_KEYWORD}
                   | FROM_CARD_ARGS.get(cls.__name__, set()) | {"batch_size"})  # batch_size: every card may set it
    unknown = sorted(passed - set(known))
    if unknown:
        options = sorted(set(known) | agents._SAMPLING_KEYS | agents._PROMPT_KEYS | agents._CARD_KEYS)
        raise ConfigError(f"--agent-args: unknown key(s) {', '.join(unknown)} for agent {card.name} (backend "
                          f"{card.backend}); known: {', '.join(options)}")


def _source_change(before: list[dict[str, Any]], now: list[dict[str, Any]], records: dict[str, dict[str, Any]],
                   output: Path) -> str | None:
    """Why the episodes already in ``output`` came from other data than this run would use (None: same)."""
    current = {(s["env"], s["split"]): s for s in now}
    for old in before:
        new = current.get((old.get("env"), old.get("split")))
        if new is None:
            continue
        for what in ("data", "engines"):
            if old.get(what) != new[what]:
                return (f"{old['env']} {old['split']}: {what} was {old.get(what)!r}, now {new[what]!r}")
    for r in records.values():  # the records themselves, for runs whose run.json predates sources
        new = current.get((r.get("env"), r.get("split")))
        if new is not None and r.get("source") and r["source"] != new["data"]:
            return f"{r['env']} {r['split']}: episodes in {output} came from {r['source']!r}, now {new['data']!r}"
    return None


def evaluate(*, agent_name: str, agent_args: dict[str, Any], entries: list[Entry], output: Path,
             leaderboard: str | None = None, num_envs: int = 4, resume: bool = False, progress: bool = True,
             step_timeout: float = 120.0, agent_timeout: float | None = None, retry_errored: bool = False,
             command: str = "", log: Callable[[str], None] = print, rerun_changed: bool = False,
             vec_options: dict[str, Any] | None = None, profile: Any = None) -> dict[str, Any]:
    """Run (or resume) an eval into ``output``; returns the summary written to ``output/summary.json``.

    Everything checkable without the model is checked first (card, backend and its arguments, output
    folder, plan, resume compatibility), then the agent is built, so missing weights fail before any
    env starts. ``retry_errored`` (with ``resume``) plays the errored episodes of the run again;
    ``rerun_changed`` (with ``resume``) starts the run over when the agent's weights changed since.
    """
    import json

    from madopd_agents.registry import build_agent, get_card  # the lazy edge from env layer to agents
    from madopd_agents.zoo import weights_fingerprint

    from madopd_envs.eval.results import summarize, write_json

    card = get_card(agent_name)
    if agent_args:
        card = card.with_overrides(agent_args)
    _check_backend_args(card, agent_args)
    try:
        fmt = PromptFormat.from_dict(card.prompt)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"agent {card.name}: bad prompt settings {card.prompt}: {e}") from e
    output = Path(output)
    check_output(output)
    store = EpisodeStore(output / "episodes.jsonl")
    # The weights' hash: a model retrained or rebuilt under the same name never inherits the old records.
    run_info = {"agent": card.name, "agent_card": card.source, "agent_args": agent_args,
                "agent_weights": weights_fingerprint(card.model) if card.model else None, "leaderboard": leaderboard,
                "entries": [{**e.__dict__, "seeds": list(e.seeds), "env_kwargs": dict(e.env_kwargs),
                             "task_ids": None if e.task_ids is None else list(e.task_ids)} for e in entries]}
    run_path = output / "run.json"
    if store.path.exists() and not resume:
        raise ResumeError(f"{output} already holds results; pass --resume to continue that run, or choose "
                          f"another --output")
    before: dict[str, Any] = {}
    if resume and run_path.exists():
        try:
            before = json.loads(run_path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ResumeError(f"{run_path} is not readable JSON ({e}); choose another --output") from None
        mismatch = [k for k in run_info if before.get(k) != run_info[k]]
        if mismatch == ["agent_weights"] and rerun_changed:
            log(f"note: the weights behind {card.name} changed since the run in {output}; playing it again")
            for stale in (store.path, output / "summary.json"):
                stale.unlink(missing_ok=True)
            before = {}
        elif mismatch == ["agent_weights"]:
            raise ResumeError(f"{output} holds episodes of {card.name} played by other weights than {card.model} "
                              f"has now (or by a version that did not record them); delete that folder or "
                              f"choose another --output")
        elif mismatch:
            raise ResumeError(f"{output} holds a run with different {', '.join(mismatch)}; --resume continues the "
                              f"same run only (see {run_path}); choose another --output")

    phase = profile.phase if profile is not None else (lambda name: contextlib.nullcontext())
    with phase("setup (task lists, versions)"):
        plans = plan_entries(entries)
        sources = [{"env": e.env, "split": e.split, "data": p.source, "engines": engine_versions(e.env)}
                   for e, p in plans]
    done = store.load(repair=True) if resume else {}
    for dropped in store.dropped:
        log(f"note: dropped an unreadable record in {store.path} ({dropped}), cut by an interrupted write; "
            f"its episode is played again")
    changed = _source_change(before.get("sources", []), sources, done, output) if resume else None
    if changed:
        raise ResumeError(f"{output} holds a run on other data ({changed}); --resume continues the same run "
                          f"only: restore the data setting (ALFWORLD_DATA, data_path...) or choose another --output")

    with phase("agent start-up"):
        agent = build_agent(card)
    try:
        for note in (n for _, p in plans for n in p.notes):
            log(f"note: {note}")
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise output_problem(output, e) from None
        write_json(run_path, {**run_info, "sources": sources, "env_cards": env_cards([e.env for e, _ in plans]),
                              "command": command})
        planned = [u for _, p in plans for u in p.units]
        planned_keys = {u.key for u in planned}
        have = {k for k in done if k in planned_keys}
        if retry_errored:
            again = {k for k in have if done[k].get("error")}
            if again:
                log(f"retrying {len(again)} errored episode(s)")
            have -= again
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
            for (entry, plan), source in zip(plans, sources):
                todo = [u for u in plan.units if u.key not in have]
                versions = {"harness": harness, **source["engines"]}
                if not todo:
                    continue
                s = run_entry(agent, agent_name=card.name, needs_expert=card.needs_expert,
                              sampling=card.sampling_params, fmt=fmt, entry=entry,
                              units=todo, store=store, num_envs=num_envs, versions=versions, on_done=on_done,
                              step_timeout=step_timeout, agent_timeout=agent_timeout, source=plan.source,
                              vec_options=vec_options, profile=profile)
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
