"""The results schema: one JSON line per finished episode, and the summary computed from them.

``episodes.jsonl`` is the source of truth. Each line is written when its episode finishes, then
flushed and fsynced, so a killed eval loses at most the episodes in flight; a line cut by the kill (even
inside a multi-byte UTF-8 character) is dropped, said so, and cut off the file on resume. A write that
fails (full disk, read-only filesystem) is undone and raised as :class:`OutputError`, one line.
``summary.json`` is a pure function of the records of the planned units, so an interrupted-and-resumed
eval ends with the summary of an uninterrupted one.
"""

from __future__ import annotations

import errno
import json
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = 1


class OutputError(RuntimeError):
    """Results cannot be written where asked (full disk, read-only filesystem, a file in the way)."""


def output_problem(path: Path, e: OSError) -> OutputError:
    """One line naming the file, the cause and what to do."""
    cause = e.strerror or str(e)
    hint = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
            errno.EROFS: "the filesystem is read-only: choose another --output"}.get(e.errno, "choose another --output")
    return OutputError(f"cannot write {path}: {cause} ({hint}; finished episodes are kept, rerun with --resume)")


@dataclass
class StepRecord:
    """One action: what the agent said, what the env made of it."""

    action: str
    observation: str
    reward: float
    score: float
    valid: bool  # the env accepted the action (info["action_valid"])
    format_ok: bool  # the reply had <action> tags (always True for scripted agents)
    reply: str | None = None  # the model's full reply when it differs from the action
    completion_tokens: int = 0


@dataclass
class EpisodeRecord:
    """One finished (or errored) episode of an eval."""

    key: str
    env: str
    split: str
    task_id: str
    seed: int
    agent: str
    family: str
    task: str = ""
    task_type: str | None = None
    initial_observation: str = ""
    won: bool = False
    score: float = 0.0
    raw_score: float = 0.0
    steps: int = 0
    terminated: bool = False
    truncated: bool = False
    invalid_actions: int = 0
    invalid_format: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    error: str | None = None  # set when the episode could not be played to its end (dead worker, agent...)
    error_kind: str | None = None  # "env", "agent raised", "agent output", "agent timeout"
    attempts: int = 1
    first_error: str | None = None  # the error of a first attempt that was retried
    sandboxed: bool | None = None  # code envs: every code run was isolated (None: the env runs no code)
    versions: dict[str, str] = field(default_factory=dict)
    source: str = ""  # where the task came from (generated / official data and its path, catalogue hash)
    trajectory: list[StepRecord] = field(default_factory=list)
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


class EpisodeStore:
    """Append-only ``episodes.jsonl`` with crash-safe appends and a tolerant reader."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.dropped: list[str] = []  # what the last load() left out, one line each

    def load(self, *, repair: bool = False) -> dict[str, dict[str, Any]]:
        """Records by key (the last one wins if a key repeats).

        A line that is not a complete JSON record -- a write cut by kill -9, possibly inside a UTF-8
        character -- is dropped and described in ``self.dropped``. With ``repair`` the file is mended so
        appends start on a clean line: a cut tail is truncated (which needs no free space), a bad line
        elsewhere (never written by this store) is removed by an atomic rewrite.
        """
        self.dropped = []
        records: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return records
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        good: list[bytes] = []
        bad_at: list[int] = []
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line.decode("utf-8"))
                if not isinstance(rec, dict) or not isinstance(rec.get("key"), str):
                    raise ValueError("not an episode record")
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                bad_at.append(n)
                self.dropped.append(f"line {n + 1} ({len(line)} bytes): {type(e).__name__}")
                continue
            records[rec["key"]] = rec
            good.append(line)
        if repair:
            tail_only = all(n == len(lines) - 1 for n in bad_at)
            try:
                if bad_at and tail_only:  # the usual case: the last write was cut
                    with open(self.path, "r+b") as fh:
                        fh.truncate(len(data) - len(lines[-1]))
                elif bad_at:
                    tmp = Path(f"{self.path}.tmp")
                    try:
                        tmp.write_bytes(b"".join(x + b"\n" for x in good))
                        os.replace(tmp, self.path)
                    finally:
                        tmp.unlink(missing_ok=True)
                elif data and not data.endswith(b"\n"):  # a complete record whose newline was lost
                    with open(self.path, "ab") as fh:
                        fh.write(b"\n")
            except OSError as e:
                raise output_problem(self.path, e) from None
        return records

    def append(self, record: EpisodeRecord) -> None:
        """Append one line, flushed and fsynced; a failed write is cut back off and raised as OutputError."""
        line = (record.to_json() + "\n").encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise output_problem(self.path, e) from None
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as e:
                try:
                    os.ftruncate(fd, start)  # no half line is left behind (truncating needs no space)
                except OSError:
                    pass  # load() drops a partial line anyway
                raise output_problem(self.path, e) from None
        finally:
            os.close(fd)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _stderr(xs: list[float]) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n)); 0 for n == 1."""
    n = len(xs)
    if n < 2:
        return 0.0 if n == 1 else float("nan")
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) / n)


def error_kinds(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many episodes errored, by cause (records written before ``error_kind`` existed count as env)."""
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        if r.get("error"):
            counts[r.get("error_kind") or "env"] += 1
    return dict(sorted(counts.items()))


def metrics(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Success rate, mean score, their standard errors, and action-quality rates of some episodes.

    Errored episodes are counted (``errored``) but left out of the rates: an engine crash is not an
    agent failure. ``invalid_action_rate`` = actions the env rejected / actions taken;
    ``invalid_format_rate`` = replies without ``<action>`` tags / replies.
    """
    records = list(records)
    ok = [r for r in records if not r.get("error")]
    won = [1.0 if r["won"] else 0.0 for r in ok]
    score = [float(r["score"]) for r in ok]
    steps = sum(r["steps"] for r in ok)
    return {
        "episodes": len(ok),
        "errored": len(records) - len(ok),
        "success_rate": _round(_mean(won)),
        "stderr": _round(_stderr(won)),
        "mean_score": _round(_mean(score)),
        "score_stderr": _round(_stderr(score)),
        "mean_steps": _round(_mean([float(r["steps"]) for r in ok])),
        "invalid_action_rate": _round(sum(r["invalid_actions"] for r in ok) / steps) if steps else 0.0,
        "invalid_format_rate": _round(sum(r["invalid_format"] for r in ok) / steps) if steps else 0.0,
        "completion_tokens": sum(r.get("completion_tokens", 0) for r in ok),
    }


def sandboxed(records: Iterable[dict[str, Any]]) -> bool | None:
    """False if any record's code ran unisolated, True if all code runs were isolated, None without code."""
    flags = [r["sandboxed"] for r in records if r.get("sandboxed") is not None]
    return all(flags) if flags else None


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 6)


def summarize(records: list[dict[str, Any]], *, agent: str, leaderboard: str | None, planned: int,
              versions: dict[str, str], notes: list[str] | None = None) -> dict[str, Any]:
    """The summary of an eval: overall, per env, and per task type within each env.

    Deterministic in the records (sorted by key), so a resumed eval reproduces it byte for byte.
    """
    records = sorted(records, key=lambda r: r["key"])
    splits: dict[str, set[str]] = defaultdict(set)
    for r in records:
        splits[r["env"]].add(r["split"])
    by_env: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:  # an env evaluated on several splits gets one row per split
        by_env[r["env"] if len(splits[r["env"]]) == 1 else f"{r['env']} [{r['split']}]"].append(r)
    envs = {}
    for env_id in sorted(by_env):
        rs = by_env[env_id]
        entry = {**metrics(rs), "split": rs[0]["split"], "family": rs[0]["family"], "sandboxed": sandboxed(rs)}
        types: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rs:
            if r.get("task_type"):
                types[r["task_type"]].append(r)
        if types:
            entry["task_types"] = {t: metrics(types[t]) for t in sorted(types)}
        envs[env_id] = entry
    overall = metrics(records)
    return {
        "schema": SCHEMA_VERSION,
        "agent": agent,
        "leaderboard": leaderboard,
        "planned_episodes": planned,
        "finished_episodes": len(records),
        **{k: overall[k] for k in ("success_rate", "stderr", "mean_score", "score_stderr", "invalid_action_rate",
                                   "invalid_format_rate", "errored")},
        "errors": error_kinds(records),
        "sandboxed": sandboxed(records),
        "overall": overall,
        "envs": envs,
        "versions": versions,
        "notes": list(notes or []),
    }


def write_json(path: Path, data: Any) -> None:
    """Write atomically (temp file + rename): a kill never leaves a half-written summary, and a failed
    write (full disk) leaves no temporary file and raises :class:`OutputError`."""
    tmp = Path(f"{path}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise output_problem(path, e) from None
