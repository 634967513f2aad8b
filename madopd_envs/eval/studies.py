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


def studies_markdown(studies: list[dict[str, Any]], store: Path) -> str:
    if not studies:
        return ""
    out = ["", "# Comparative studies", ""]
    for s in studies:
        rel = Path(s["_dir"]).relative_to(store)
        out += [f"## {s['name']}", "", f"[results.md]({rel}/results.md) · command: `{s.get('command', '')}`", "",
                _table_md(s), ""]
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
                  f"<div class='wide'><pre>{html.escape(_table_md(s))}</pre></div>", f"<ul>{claims}</ul>", *imgs]
    return "\n".join(parts)
