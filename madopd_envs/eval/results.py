"""The results schema: one JSON line per finished episode, and the summary computed from them.

``episodes.jsonl`` is the source of truth. Each line is written when its episode finishes, then
flushed and fsynced, so a killed eval loses at most the episodes in flight; a line cut by the kill is
dropped (and cut off the file) on resume. ``summary.json`` is a pure function of the records of the
planned units, so an interrupted-and-resumed eval ends with the summary of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = 1


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
    error: str | None = None  # set when the episode could not be played to its end (dead worker...)
    attempts: int = 1
    first_error: str | None = None  # the error of a first attempt that was retried
    versions: dict[str, str] = field(default_factory=dict)
    trajectory: list[StepRecord] = field(default_factory=list)
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


class EpisodeStore:
    """Append-only ``episodes.jsonl`` with crash-safe appends and a tolerant reader."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self, *, repair: bool = False) -> dict[str, dict[str, Any]]:
        """Records by key (the last one wins if a key repeats). With ``repair``, a partial last line
        (a write cut by kill -9) is cut off the file so appends start on a clean line."""
        records: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return records
        data = self.path.read_bytes()
        good_end = 0
        for line in data.split(b"\n"):
            end = good_end + len(line) + 1
            if not line.strip():
                good_end = min(end, len(data))
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break  # only the last line can be partial: appends are sequential
            if end > len(data):  # a complete JSON object without its newline: keep it, add the newline
                records[rec["key"]] = rec
                good_end = len(data)
                if repair:
                    with open(self.path, "ab") as fh:
                        fh.write(b"\n")
                break
            records[rec["key"]] = rec
            good_end = end
        if repair and good_end < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)
        return records

    def append(self, record: EpisodeRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(record.to_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _stderr(xs: list[float]) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n)); 0 for n == 1."""
    n = len(xs)
    if n < 2:
        return 0.0 if n == 1 else float("nan")
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) / n)


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
        entry = {**metrics(rs), "split": rs[0]["split"], "family": rs[0]["family"]}
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
        "overall": overall,
        "envs": envs,
        "versions": versions,
        "notes": list(notes or []),
    }


def write_json(path: Path, data: Any) -> None:
    """Write atomically (temp file + rename): a kill never leaves a half-written summary."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
