"""Tables of eval summaries: one renderer (pandas -> markdown) for the CLI, the store and the web page.

``summary_frame`` flattens summaries into one row per (agent, env); ``summary_table`` renders one
agent's summary, ``leaderboard_table`` agents x envs. Markdown is written here (no ``tabulate``
dependency) so the CLI table needs only pandas.
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

METRIC_COLUMNS = ["episodes", "success_rate", "stderr", "mean_score", "invalid_action_rate", "invalid_format_rate",
                  "mean_steps", "errored"]


def summary_frame(summaries: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (agent, env) plus an ``(all)`` row per agent."""
    rows = []
    for s in summaries:
        for env_id, m in s.get("envs", {}).items():
            rows.append({"agent": s["agent"], "leaderboard": s.get("leaderboard"), "env": env_id,
                         "split": m.get("split"), **{k: m.get(k) for k in METRIC_COLUMNS}})
        rows.append({"agent": s["agent"], "leaderboard": s.get("leaderboard"), "env": "(all)", "split": "",
                     **{k: s["overall"].get(k) for k in METRIC_COLUMNS}})
    return pd.DataFrame(rows, columns=["agent", "leaderboard", "env", "split", *METRIC_COLUMNS])


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table (numbers right-aligned, 3 decimals)."""
    headers = [str(c) for c in df.columns]
    body = [[_fmt(v) for v in row] for row in df.itertuples(index=False)]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    widths = [max([len(h)] + [len(r[j]) for r in body]) for j, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in body)])


def summary_table(summary: dict[str, Any]) -> str:
    """One agent: a row per env (and per task type where envs report them), then the overall row."""
    rows = []
    for env_id, m in summary.get("envs", {}).items():
        rows.append({"env": env_id, **{k: m.get(k) for k in METRIC_COLUMNS}})
        for task_type, tm in (m.get("task_types") or {}).items():
            rows.append({"env": f"  {task_type}", **{k: tm.get(k) for k in METRIC_COLUMNS}})
    rows.append({"env": "**all**", **{k: summary["overall"].get(k) for k in METRIC_COLUMNS}})
    return to_markdown(pd.DataFrame(rows, columns=["env", *METRIC_COLUMNS]))


def leaderboard_table(summaries: Iterable[dict[str, Any]], metric: str = "success_rate") -> str:
    """Agents x envs for one metric, with ``± stderr`` for the success rate."""
    df = summary_frame(summaries)
    if df.empty:
        return "(no results)"
    if metric == "success_rate":
        df["cell"] = [f"{_fmt(v)} ± {_fmt(e)}" if v is not None and not pd.isna(v) else "-"
                      for v, e in zip(df["success_rate"], df["stderr"])]
    else:
        df["cell"] = [_fmt(v) for v in df[metric]]
    wide = df.pivot_table(index="agent", columns="env", values="cell", aggfunc="first", sort=False).reset_index()
    wide.columns.name = None
    cols = ["agent"] + [c for c in wide.columns if c not in ("agent", "(all)")] + (["(all)"] if "(all)" in wide else [])
    return to_markdown(wide[cols].fillna("-"))
