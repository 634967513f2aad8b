"""Comparative studies in a results store: ``<store>/study-<name>/study.json`` (+ ``results.md``, figures).

``python -m madopd_distill.study`` writes them; its eval records are ordinary leaderboard runs
(``<store>/study-<name>/<agent>/summary.json``, leaderboard ``study-<name>``), so the report's
tables already hold them. This module adds what only a study has -- the table with intervals, the
papers' claims' verdicts and the curves -- to the report. It reads files only (no distill import).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any


def load_studies(store: Path) -> list[dict[str, Any]]:
    """Every readable ``study.json`` under ``store``, with ``_dir`` (its folder)."""
    out = []
    for path in sorted(Path(store).glob("*/study.json")):
        try:
            study = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        study["_dir"] = path.parent
        out.append(study)
    return out


def _table_md(study: dict[str, Any]) -> str:
    """The study's own table, cut from its results.md (the one renderer of it lives with the study)."""
    try:
        text = (study["_dir"] / "results.md").read_text()
    except OSError:
        return ""
    lines = [ln for ln in text.split("## Results", 1)[-1].splitlines() if ln.startswith("|")]
    return "\n".join(lines[: next((i for i, ln in enumerate(lines) if ln.startswith("| paper")), len(lines))])


def gate_line(s: dict[str, Any]) -> str:
    """Whether distillation works in the study's setting (``study.json``'s ``gate``), in one line."""
    g = s.get("gate")
    if not g:
        return "validity gate: not recorded (a study written before the gate)"
    lift = g.get("gate") or {}
    closed = lift.get("gap_closed")
    figures = (f"{g['method']} Δ {g['metric']} {(lift.get('delta') or {}).get('mean', float('nan')):+.3f}, "
               f"gap closed {closed:.2f}" if closed is not None else "")
    head = "valid: distillation works in this setting" if g.get("valid") else \
        f"invalid: distillation does not work in this setting ({g.get('reason')})"
    return head + (f" [{figures}]" if figures else "")


def studies_markdown(studies: list[dict[str, Any]], store: Path) -> str:
    if not studies:
        return ""
    out = ["", "# Comparative studies", ""]
    for s in studies:
        rel = Path(s["_dir"]).relative_to(store)
        out += [f"## {s['name']}", "", f"[results.md]({rel}/results.md) · command: `{s.get('command', '')}`", "",
                f"**{gate_line(s)}**", "", _table_md(s), ""]
        for c in s.get("claims", []):
            out.append(f"- {c['paper']}: {c['claim']} (`{c['method']}` vs `{c['baseline']}`, {c['metric']}): "
                       f"**{c['verdict']}**")
        out += [""] + [f"![{f}]({rel}/{f})" for f in s.get("figures", [])] + [""]
    return "\n".join(out)


def studies_html(studies: list[dict[str, Any]]) -> str:
    parts = ["<h1>comparative studies</h1>"] if studies else []
    for s in studies:
        claims = "".join(f"<li>{html.escape(c['paper'])}: {html.escape(c['claim'])} — <b>{html.escape(c['verdict'])}"
                         f"</b></li>" for c in s.get("claims", []))
        imgs = []
        for f in s.get("figures", []):
            try:
                png = base64.b64encode((Path(s["_dir"]) / f).read_bytes()).decode()
            except OSError:
                continue
            imgs.append(f"<img alt='{html.escape(f)}' src='data:image/png;base64,{png}'>")
        parts += [f"<h2>{html.escape(s['name'])}</h2>", f"<p><code>{html.escape(s.get('command', ''))}</code></p>",
                  f"<p class='gate'><b>{html.escape(gate_line(s))}</b></p>",
                  f"<div class='wide'><pre>{html.escape(_table_md(s))}</pre></div>", f"<ul>{claims}</ul>", *imgs]
    return "\n".join(parts)
