"""A study's results: the table with intervals, the paired differences to OPD, the claims' verdicts,
the curves (PNG), ``study.json`` and ``results.md``.

Held-out numbers come from the eval records (``<output_dir>/<agent>/episodes.jsonl``, written by
``madopd_envs.eval``); curves, KL and costs from the cells' training logs. Intervals: see
:mod:`madopd_distill.stats` (hierarchical bootstrap, seeds then tasks).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from madopd_distill.stats import Interval, hierarchical_bootstrap, paired_difference, seed_band, verdict
from madopd_distill.study.config import INVALID, Cell, StudyConfig
from madopd_distill.study.runner import EvalAgent, cell_dir, read_json

STATS_METHOD = ("95% intervals: hierarchical bootstrap (4000 draws) resampling seeds, then held-out tasks within each "
                "seed; differences to the initial student and to `opd` are paired (same seed draws, same tasks; "
                "the Δ columns use the study's claim metric). Significance (*): the "
                "interval of the difference excludes 0. KL columns: mean of the last 10% of training steps, "
                "bootstrap over seeds.")
# compute column -> the per-step train-log key it totals over a cell's training
COMPUTE = {"episodes": "episodes", "env_steps": "env_steps", "student_tokens": "sampled_tokens",
           "teacher_tokens_scored": "cost/teacher_tokens_scored"}
CURVE_KEYS = {"success": ("eval_success_rate", "held-out success (in-training eval)"),
              "kl_token": ("ref/kl_token", "per-token KL(S||T_ref), student's tokens"),
              "kl_traj": ("ref/kl_traj", "trajectory KL(S||T_ref), sum over a trajectory")}
# curves from the in-training evals on the fixed probe states (see TrainConfig eval.probe_states)
PROBE_KEYS = {"probe_kl": ("probe/kl_token", "KL(S||T_ref) per token on fixed held-out teacher states"),
              "probe_agreement": ("probe/agreement", "greedy agreement with T_ref on fixed held-out states")}
# figure name -> (title, the log keys it plots: exact names or prefixes ending in "/")
METHOD_PLOTS = {"mad": ("MAD-OPD per-teacher weight", ("mad/weight/",)),
                "guided": ("Guided-OPD teacher-turn rate", ("guided/teacher_turn_frac", "guided/p")),
                "sage": ("SAGE-OPD judge levels", ("sage/skip_frac", "sage/intervene_frac", "sage/weak_frac", "sage/strong_frac")),
                "tcod": ("TCOD depth window", ("tcod/depth", "tcod/student_steps")),
                "routing": ("routing teacher shares", ("route/share/",))}


# -- reading --------------------------------------------------------------------------------------
def read_log(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for ln in text.splitlines():
        try:
            out.append(json.loads(ln))
        except ValueError:
            continue
    return out


def eval_outcomes(cfg: StudyConfig, agent: str, task_ids: list[str]) -> dict[str, np.ndarray] | None:
    """``{"success": [T], "score": [T]}``: each task's mean over the eval seeds (errored = failed)."""
    recs = read_log(Path(cfg.output_dir) / agent / "episodes.jsonl")
    if not recs:
        return None
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        by_task[r["task_id"]].append(r)
    won = [np.mean([float(r["won"] and not r.get("error")) for r in by_task[t]]) if by_task[t] else np.nan
           for t in task_ids]
    score = [np.mean([0.0 if r.get("error") else float(r["score"]) for r in by_task[t]]) if by_task[t] else np.nan
             for t in task_ids]
    return {"success": np.array(won), "score": np.array(score)}


def final_kl(records: list[dict[str, Any]], key: str) -> float:
    vals = [r[key] for r in records if r.get("kind") == "train" and key in r]
    if not vals:
        return float("nan")
    k = max(1, len(vals) // 10)
    return float(np.mean(vals[-k:]))


def per_step(records: list[dict[str, Any]], key: str) -> float:
    vals = [r[key] for r in records if r.get("kind") == "train" and isinstance(r.get(key), (int, float))]
    return float(np.mean(vals)) if vals else float("nan")


# -- the analysis ---------------------------------------------------------------------------------
def analyse(cfg: StudyConfig, cells: list[Cell], agents: list[EvalAgent], statuses: dict[str, dict[str, Any]],
            eval_ids: list[str]) -> dict[str, Any]:
    """Per method: held-out success/score with intervals, paired difference to ``opd``, final KL, costs."""
    logs = {c.id: read_log(cell_dir(cfg, c) / "train" / "log.jsonl") for c in cells}
    outcome = {a.name: eval_outcomes(cfg, a.name, eval_ids) for a in agents}
    rows: list[dict[str, Any]] = []
    mats: dict[str, dict[str, Any]] = {}
    for role in ("initial", "teacher"):
        groups: dict[str, list[EvalAgent]] = defaultdict(list)
        for a in agents:
            if a.role == role:
                groups[a.name.rsplit("-s", 1)[0] if a.name.rsplit("-s", 1)[-1].isdigit() else a.name].append(a)
        for name, group in groups.items():
            got = [(a.seed, outcome[a.name]) for a in group if outcome[a.name] is not None]
            if got:
                mats[name] = {"seeds": [s for s, _ in got], **{m: np.stack([o[m] for _, o in got]) for m in
                                                                ("success", "score")}}
                rows.append({"method": name, "role": role, "cells": f"{len(got)}/{len(group)}"})
    for label in dict.fromkeys(c.label for c in cells):
        lc = [c for c in cells if c.label == label]
        got = [(c.seed, outcome.get(c.id)) for c in lc if outcome.get(c.id) is not None]
        row: dict[str, Any] = {"method": label, "role": "method", "base_method": lc[0].method,
                               "cells": f"{len(got)}/{len(lc)}",
                               "failed": {c.id: statuses.get(c.id, {}).get("error") for c in lc
                                          if statuses.get(c.id, {}).get("state") == "failed"}}
        if got:
            mats[label] = {"seeds": [s for s, _ in got], **{m: np.stack([o[m] for _, o in got]) for m in
                                                             ("success", "score")}}
        # Only finished cells: a stopped one's partial log would undercount its KL and compute.
        done = [c for c in lc if logs[c.id] and statuses.get(c.id, {}).get("state") == "done"]
        kls = {k: np.array([final_kl(logs[c.id], key) for c in done]) for k, (key, _) in CURVE_KEYS.items()
               if k != "success"}
        mats.setdefault(label, {"seeds": []})["kl_seeds"] = [c.seed for c in done]
        for k, v in kls.items():
            mats[label][k] = v
            row[k] = hierarchical_bootstrap(v[:, None]).as_dict() if len(v) and not np.all(np.isnan(v)) else None
        for col, key in (("teacher_tokens_scored", "cost/teacher_tokens_scored"),
                         ("teacher_tokens_generated", "cost/teacher_tokens_generated"), ("s_per_step", "time_step_s")):
            vals = [per_step(logs[c.id], key) for c in done]
            vals = [v for v in vals if not math.isnan(v)]
            row[col] = float(np.mean(vals)) if vals else None
        if done:  # what the cell spent over its whole training, mean over its seeds
            row["compute"] = mats[label]["compute"] = {
                col: float(np.mean([sum(r.get(key) or 0 for r in logs[c.id] if r.get("kind") == "train") for c in done]))
                for col, key in COMPUTE.items()}
        row["wall_s"] = sum(statuses.get(c.id, {}).get("wall_s", 0) or 0 for c in lc)
        rows.append(row)
    # Did each method move the student at all, and did it beat OPD (on the claims' held-out metric)?
    metric = diff_metric(cfg)
    init = next((mats[r["method"]] for r in rows if r["role"] == "initial" and r["method"] in mats), None)
    for row in rows:
        m = mats.get(row["method"])
        if m is None or "success" not in m:
            continue
        for outcome in ("success", "score"):
            row[outcome] = hierarchical_bootstrap(m[outcome]).as_dict()
        if row["role"] != "method":
            continue
        bases = {"diff_vs_initial": _each_seed(init, m)}
        if row["method"] != "opd":
            bases["diff_vs_opd"] = mats.get("opd")
        for key, base in bases.items():
            d = _paired(m, base, metric) if base else None
            if d is not None:
                row[key] = {**d.as_dict(), "significant": d.significant, "metric": metric}
    claims = [_claim(c, mats) for c in cfg.claims]
    gate = validity_gate(cfg, rows, mats)
    return {"rows": rows, "claims": gated(claims, gate), "logs": logs, "mats": mats, "gate": gate}


def gated(claims: list[dict[str, Any]], gate: dict[str, Any]) -> list[dict[str, Any]]:
    """The claims as they stand, or, where the gate failed, each with the invalid marker in place of its
    verdict (its measured difference kept): no verdict about variants of a method that does not work here."""
    return claims if gate["valid"] else [{**c, "verdict": INVALID, "note": None} for c in claims]



def validity_gate(cfg: StudyConfig, rows: list[dict[str, Any]], mats: dict[str, Any]) -> dict[str, Any]:
    """Does distillation work here? The gate method's paired Δ vs the initial student on held-out
    ``metric`` and the share of the initial student -> reference teacher gap it closes; the same
    figures for ``sft`` where the study runs it (see :class:`~madopd_distill.study.config.Gate`)."""
    metric = cfg.gate.metric or diff_metric(cfg)
    ref = f"teacher-{cfg.ref_teacher or cfg.teachers[0]['name']}"
    init = next((r["method"] for r in rows if r["role"] == "initial" and r["method"] in mats), None)
    mean = lambda name: float(np.nanmean(mats[name][metric])) if name in mats and metric in mats[name] else None  # noqa: E731

    def lift(label: str) -> dict[str, Any] | None:
        row = next((r for r in rows if r["method"] == label), None)
        if row is None or mean(label) is None:
            return None
        d = _paired(mats[label], _each_seed(mats.get(init), mats[label]), metric) if init else None
        gap = (mean(ref) - mean(init)) if mean(ref) is not None and init else None
        closed = (mean(label) - mean(init)) / gap if gap and gap > 0 else None
        return {"method": label, "mean": mean(label), "delta": d.as_dict() if d else None,
                "gap_closed": closed}

    out: dict[str, Any] = {"method": cfg.gate.method, "metric": metric, "min_gap_closed": cfg.gate.min_gap_closed,
                           "initial": mean(init) if init else None, "teacher": ref, "teacher_mean": mean(ref),
                           "gate": lift(cfg.gate.method), "sft": lift("sft") if "sft" in cfg.methods else None}
    g = out["gate"]
    if g is None or g["delta"] is None:
        out["valid"], out["reason"] = False, f"{cfg.gate.method} or the initial student has no held-out results"
    elif out["teacher_mean"] is None or g["gap_closed"] is None:
        out["valid"], out["reason"] = False, f"the reference teacher ({ref}) is not above the initial student"
    elif g["delta"]["lo"] <= 0:
        out["valid"], out["reason"] = False, f"{cfg.gate.method} does not lift the student significantly"
    elif g["gap_closed"] < cfg.gate.min_gap_closed:
        out["valid"], out["reason"] = False, (f"{cfg.gate.method} closes {g['gap_closed']:.2f} of the gap, "
                                              f"< {cfg.gate.min_gap_closed}")
    else:
        out["valid"], out["reason"] = True, None
    return out


def gate_markdown(gate: dict[str, Any]) -> list[str]:
    """The opening section of results.md: passed, or the invalid marker and why."""
    head = "**valid**: distillation works in this setting" if gate["valid"] else f"**{INVALID}** ({gate['reason']})"
    md = ["## Does distillation work here?", "", head, "",
          f"Held-out {gate['metric']}: initial student {_num(gate['initial'], '{:.3f}')}, reference teacher "
          f"`{gate['teacher']}` {_num(gate['teacher_mean'], '{:.3f}')}.", "",
          "| method | held-out | Δ vs initial [95% CI] | gap closed |", "|---|---|---|---|"]
    for key in ("gate", "sft"):
        g = gate.get(key)
        if g:
            md.append(f"| `{g['method']}` | {_num(g['mean'], '{:.3f}')} | {_ci(g['delta'], 3)} | "
                      f"{_num(g['gap_closed'], '{:.2f}')} |")
    md += ["", f"Gate: `{gate['method']}`'s Δ interval above 0 and gap closed >= {gate['min_gap_closed']} "
           "(study config `gate:`); when it fails, no claim gets a verdict.", ""]
    return md


def diff_metric(cfg: StudyConfig) -> str:
    """The held-out metric of the Δ columns: the claims' metric, unless that is a KL."""
    return cfg.claim_metric if cfg.claim_metric in ("success", "score") else "success"


def _each_seed(init: dict[str, Any] | None, m: dict[str, Any]) -> dict[str, Any] | None:
    """The initial student's outcomes for each of ``m``'s seeds (one initial student serves every seed
    unless ``build_seeds`` built one per seed)."""
    if not init or len(init["seeds"]) != 1:
        return init
    return {"seeds": list(m["seeds"]), **{k: np.repeat(init[k], len(m["seeds"]), axis=0)
                                           for k in ("success", "score")}}


def _paired(a: dict[str, Any], b: dict[str, Any], metric: str) -> Interval | None:
    """The paired interval of a - b over the seeds both have."""
    key = "kl_seeds" if metric.startswith("kl") else "seeds"
    common = [s for s in a.get(key, []) if s in b.get(key, [])]
    if not common or metric not in a or metric not in b:
        return None
    pick = lambda m: np.asarray(m[metric])[[m[key].index(s) for s in common]]  # noqa: E731
    x, y = pick(a), pick(b)
    if x.ndim == 1:
        x, y = x[:, None], y[:, None]
    return paired_difference(x, y)


def _claim(claim: Any, mats: dict[str, Any]) -> dict[str, Any]:
    out = {"paper": claim.paper, "claim": claim.claim, "method": claim.method, "baseline": claim.baseline,
           "metric": claim.metric, "direction": claim.direction}
    if claim.method not in mats or claim.baseline not in mats:
        return {**out, "verdict": "inconclusive", "note": "a compared method was not run (or has no results)"}
    d = _paired(mats[claim.method], mats[claim.baseline], claim.metric)
    if d is None:
        return {**out, "verdict": "inconclusive", "note": "no common seed with results"}
    key = "kl_seeds" if claim.metric.startswith("kl") else "seeds"
    if claim.metric.startswith("kl") and len(set(mats[claim.method][key]) & set(mats[claim.baseline][key])) < 2:
        # one value per seed: with one seed there is no spread to put an interval on
        return {**out, "difference": d.as_dict(), "verdict": "inconclusive", "note": "one seed: no interval"}
    out = {**out, "difference": d.as_dict(), "verdict": verdict(d, claim.direction, claim.tolerance)}
    ratio = compute_ratio(mats[claim.method].get("compute"), mats[claim.baseline].get("compute"))
    if ratio is not None:
        out["compute_ratio"] = ratio
    if claim.cheaper:
        if ratio is None:
            return {**out, "verdict": "inconclusive", "note": "no compute figures to compare"}
        if out["verdict"] == "replicated" and ratio >= 1:
            return {**out, "verdict": "not replicated", "note": f"as good, but not cheaper: {ratio:.2f}x the compute"}
        out["note"] = f"{ratio:.2f}x the compute"
    return out


def compute_ratio(method: dict[str, float] | None, baseline: dict[str, float] | None) -> float | None:
    """``method``'s token forwards (student tokens generated + teacher tokens scored) over ``baseline``'s."""
    if not method or not baseline:
        return None
    cost = lambda c: c["student_tokens"] + c["teacher_tokens_scored"]  # noqa: E731
    return cost(method) / cost(baseline) if cost(baseline) > 0 else None


# -- figures --------------------------------------------------------------------------------------
def _curves(cfg: StudyConfig, cells: list[Cell], logs: dict[str, list[dict[str, Any]]], key: str,
            kind: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """label -> (steps, values[seed, step]) of a log key."""
    out = {}
    for label in dict.fromkeys(c.label for c in cells):
        series = []
        for c in cells:
            if c.label != label:
                continue
            pts = {r["step"]: r[key] for r in logs.get(c.id, []) if r.get("kind") == kind
                   and isinstance(r.get(key), (int, float))}
            if pts:
                series.append(pts)
        if not series:
            continue
        steps = np.array(sorted(set().union(*series)))
        out[label] = (steps, np.array([[s.get(int(x), np.nan) for x in steps] for s in series]))
    return out


def _smooth(v: np.ndarray, w: int) -> np.ndarray:
    if w <= 1 or v.shape[1] < w:
        return v
    k = np.ones(w) / w
    return np.array([np.convolve(np.nan_to_num(row, nan=np.nanmean(row)), k, mode="valid") for row in v])


def plot(cfg: StudyConfig, cells: list[Cell], logs: dict[str, list[dict[str, Any]]], fig_dir: Path,
         gate: dict[str, Any] | None = None) -> list[str]:
    """The curves as PNG files in ``fig_dir``; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    written = []
    smooth = max(1, cfg.budget.steps // 20)

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(fig_dir / name, dpi=100)
        plt.close(fig)
        written.append(name)

    for name, (key, title) in {**CURVE_KEYS, **PROBE_KEYS}.items():
        per_step_log = name in ("kl_token", "kl_traj")  # train records, noisy: smoothed; evals are not
        curves = _curves(cfg, cells, logs, key, "train" if per_step_log else "eval")
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for label, (steps, vals) in curves.items():
            w = smooth if per_step_log else 1
            v = _smooth(vals, w)
            x = steps[w - 1:] if w > 1 and len(steps) >= w else steps
            mean, lo, hi = seed_band(v)
            ax.plot(x, mean, label=label)
            ax.fill_between(x, lo, hi, alpha=0.2)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(title)
        sm = f", moving average over {smooth} steps" if per_step_log and smooth > 1 else ""
        ax.set_title(f"{cfg.name}: {title}\n(mean over seeds, 95% bootstrap band over seeds{sm})", fontsize=9)
        ax.legend(fontsize=7, ncols=2)
        save(fig, f"{name}_vs_step.png")
        if name == "success":
            save(success_vs_tokens(cfg, cells, logs, curves, plt), "success_vs_student_tokens.png")
            if gate:
                save(gate_figure(cfg, gate, curves, plt), "gate_success_vs_step.png")
    keys = sorted({k for recs in logs.values() for r in recs if r.get("kind") == "train" for k in r
                   if "/" in k and isinstance(r[k], (int, float))})
    for prefix, (title, wanted) in METHOD_PLOTS.items():
        mine = [k for k in keys if any(k == w or (w.endswith("/") and k.startswith(w)) for w in wanted)]
        if not mine:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for key in mine:
            for label, (steps, vals) in _curves(cfg, cells, logs, key, "train").items():
                mean, lo, hi = seed_band(vals)
                ax.plot(steps, mean, label=f"{label}: {key}")
                ax.fill_between(steps, lo, hi, alpha=0.15)
        ax.set_xlabel("optimizer step")
        ax.set_title(f"{cfg.name}: {title} (mean over seeds, 95% band)", fontsize=9)
        ax.legend(fontsize=7)
        save(fig, f"method_{prefix}.png")
    return written


def gate_figure(cfg: StudyConfig, gate: dict[str, Any], curves: dict[str, tuple[np.ndarray, np.ndarray]], plt: Any) -> Any:
    """The validity gate as a picture: the gate method's and SFT's in-training held-out success with bands
    over seeds, beside the initial student's and the reference teacher's final held-out figures."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label in (gate["method"], "sft"):
        if label in curves:
            steps, vals = curves[label]
            mean, lo, hi = seed_band(vals)
            ax.plot(steps, mean, label=label)
            ax.fill_between(steps, lo, hi, alpha=0.2)
    for value, label, style in ((gate.get("teacher_mean"), f"reference teacher ({gate['teacher']})", "--"),
                                (gate.get("initial"), "initial student", ":")):
        if value is not None:
            ax.axhline(value, linestyle=style, color="grey", label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"held-out {gate['metric']}")
    verdict = "valid" if gate["valid"] else "INVALID"
    ax.set_title(f"{cfg.name}: does distillation work here? {verdict}\n(curves: in-training evals, mean over seeds, "
                 f"95% band; lines: final held-out evals)", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def success_vs_tokens(cfg: StudyConfig, cells: list[Cell], logs: dict[str, list[dict[str, Any]]],
                      curves: dict[str, tuple[np.ndarray, np.ndarray]], plt: Any) -> Any:
    """Held-out success against the student tokens generated so far (RL plays groups, so it spends more
    per step): x is the mean over seeds of the cumulative ``sampled_tokens`` at each eval step."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (steps, vals) in curves.items():
        spent = []
        for c in cells:
            if c.label == label and logs.get(c.id):
                per_step = {r["step"]: r.get("sampled_tokens") or 0 for r in logs[c.id] if r.get("kind") == "train"}
                spent.append([sum(v for k, v in per_step.items() if k <= x) for x in steps])
        if not spent:
            continue
        mean, lo, hi = seed_band(vals)
        x = np.mean(spent, axis=0)
        ax.plot(x, mean, label=label)
        ax.fill_between(x, lo, hi, alpha=0.2)
    ax.set_xlabel("student tokens generated (cumulative, mean over seeds)")
    ax.set_ylabel("held-out success (in-training eval)")
    ax.set_title(f"{cfg.name}: success against rollout compute (mean over seeds, 95% band)", fontsize=9)
    ax.legend(fontsize=7, ncols=2)
    return fig


# -- writing --------------------------------------------------------------------------------------
def _ci(x: dict[str, Any] | None, digits: int = 2) -> str:
    if not x or x.get("mean") is None or (isinstance(x["mean"], float) and math.isnan(x["mean"])):
        return "-"
    s = Interval(x["mean"], x["lo"], x["hi"]).fmt(digits)
    return s + (" *" if x.get("significant") else "")


def _num(x: Any, fmt: str = "{:.0f}") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def table(rows: list[dict[str, Any]], metric: str = "success") -> str:
    head = ["method", "cells", "success [95% CI]", "score [95% CI]", f"Δ {metric} vs initial [95% CI]",
            f"Δ {metric} vs opd [95% CI]",
            "ref KL/token [95% CI]", "ref KL/traj [95% CI]", "teacher tok scored/step", "teacher tok gen/step",
            "s/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            f"`{r['method']}`" + ("" if r["role"] == "method" else f" ({r['role']})"), r["cells"],
            _ci(r.get("success")), _ci(r.get("score")), _ci(r.get("diff_vs_initial")), _ci(r.get("diff_vs_opd")),
            _ci(r.get("kl_token"), 3), _ci(r.get("kl_traj"), 2), _num(r.get("teacher_tokens_scored")),
            _num(r.get("teacher_tokens_generated")), _num(r.get("s_per_step"), "{:.2f}")]) + " |")
    return "\n".join(lines)


def compute_table(rows: list[dict[str, Any]]) -> str:
    """What each method spent over its training (totals per cell, mean over seeds): RL plays groups."""
    lines = ["| method | episodes | env steps | student tokens generated | teacher tokens scored |",
             "|---|---|---|---|---|"]
    for r in rows:
        if r.get("compute"):
            c = r["compute"]
            lines.append(f"| `{r['method']}` | " + " | ".join(_num(c[k]) for k in COMPUTE) + " |")
    return "\n".join(lines)


def versions(cfg: StudyConfig) -> dict[str, str]:
    from madopd_envs.eval.runner import engine_versions, harness_version

    out = {"harness": harness_version()}
    for dist in ("torch", "transformers", "accelerate", "numpy", "gymnasium", "hydra-core"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        out.update(engine_versions(cfg.env))
    except Exception:  # an env without a card entry: versions are informative, not required
        pass
    return out


def trim_logs(cfg: StudyConfig, cells: list[Cell]) -> None:
    """Per-cell logs into the results folder: every record, floats to 5 significant digits."""
    for c in cells:
        src = cell_dir(cfg, c)
        dst = Path(cfg.output_dir) / "cells" / c.id
        dst.mkdir(parents=True, exist_ok=True)
        recs = read_log(src / "train" / "log.jsonl")
        lines = [json.dumps({k: (float(f"{v:.5g}") if isinstance(v, float) else v) for k, v in r.items()},
                            sort_keys=True) for r in recs]
        (dst / "log.jsonl").write_text("".join(x + "\n" for x in lines))
        for name in ("cell.json", "status.json"):
            if (src / name).exists():
                shutil.copy(src / name, dst / name)


def write_results(cfg: StudyConfig, cells: list[Cell], agents: list[EvalAgent], statuses: dict[str, dict[str, Any]],
                  eval_ids: list[str], command: str, wall_s: float, eval_errors: dict[str, str]) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    a = analyse(cfg, cells, agents, statuses, eval_ids)
    figures = plot(cfg, cells, a["logs"], out / "figures", a["gate"])
    trim_logs(cfg, cells)
    study = {
        "name": cfg.name, "command": command, "config": cfg.to_dict(), "config_hash": cfg.hash(),
        "statistics": STATS_METHOD, "versions": versions(cfg), "eval_tasks": eval_ids,
        "cells": [{"id": c.id, "label": c.label, "method": c.method, "seed": c.seed, "student": c.student,
                   "teachers": c.teachers, "args": c.args,
                   "hash": (read_json(cell_dir(cfg, c) / "cell.json") or {}).get("hash"),
                   "command": (read_json(cell_dir(cfg, c) / "cell.json") or {}).get("command"),
                   **{k: v for k, v in statuses.get(c.id, {}).items()}} for c in cells],
        "evaluated": [{"agent": x.name, "model": x.model, "role": x.role, "cell": x.cell,
                       "error": eval_errors.get(x.name)} for x in agents],
        "gate": a["gate"], "table": a["rows"], "claims": a["claims"], "figures": [f"figures/{f}" for f in figures],
        "wall_s_this_invocation": round(wall_s, 1),
    }
    (out / "study.json").write_text(json.dumps(study, indent=2, default=float))
    md = [f"# Study `{cfg.name}`", "", f"Produced by: `{command}`", "", *gate_markdown(a["gate"]),
          cfg.description.strip(), "",
          f"Env `{cfg.env}`; train: first {cfg.train.num_tasks or 'all'} tasks of `{cfg.train.split}`; held out: "
          f"{len(eval_ids)} tasks of `{cfg.eval.split}` from task {cfg.eval.first_task}, eval seeds "
          f"{list(cfg.eval.seeds)}, " + ("greedy." if cfg.eval.temperature == 0 else
                                          f"temperature {cfg.eval.temperature}."), "",
          f"Budget per cell: {cfg.budget.steps} optimizer steps x {cfg.budget.tasks_per_step} tasks "
          f"(group {cfg.budget.group_size}), {cfg.budget.max_new_tokens} new tokens per turn, "
          f"{cfg.budget.max_env_steps} env steps per episode; seeds {list(cfg.seeds)}"
          + (f"; builds per seed: `{cfg.build_seeds}`" if cfg.build_seeds else "") + ".", "",
          f"Shared base: `{json.dumps(cfg.base, sort_keys=True)}`", "",
          "## Results", "", table(a["rows"], diff_metric(cfg)), "", STATS_METHOD, "",
          "Compute per cell, totals over training (mean over seeds):", "", compute_table(a["rows"]), ""]
    failed = [(c.id, statuses[c.id].get("error")) for c in cells if statuses.get(c.id, {}).get("state") == "failed"]
    if failed:
        md += ["Failed cells (left out of the statistics):", ""] + [f"- `{i}`: {e}" for i, e in failed] + [""]
    if a["claims"]:
        md += ["## The papers' claims at this scale", "", "| paper | claim | compared | metric | difference [95% CI] "
               "| verdict |", "|---|---|---|---|---|---|"]
        for c in a["claims"]:
            md.append(f"| {c['paper']} | {c['claim']} | `{c['method']}` vs `{c['baseline']}` | {c['metric']} "
                      f"({c['direction']}) | {_ci(c.get('difference'), 3)} | **{c['verdict']}**"
                      + (f" ({c['note']})" if c.get("note") else "") + " |")
        md += ["", "Verdict: *replicated* when the interval of (method - baseline) lies wholly on the claimed side "
               "of 0, *not replicated* when wholly on the other side, else *inconclusive*; *at_least* (a match): "
               "replicated when the interval lies above -tolerance, not replicated when wholly below 0. A claim of "
               "less compute also needs the method's token forwards (student tokens generated + teacher tokens "
               "scored) below the baseline's.", ""]
    if figures:
        md += ["## Curves", ""] + [f"![{f}](figures/{f})" for f in figures] + [""]
    md += ["## Cells", "", "| cell | state | wall s | error |", "|---|---|---|---|"]
    for c in cells:
        s = statuses.get(c.id, {})
        md.append(f"| `{c.id}` | {s.get('state', '-')} | {_num(s.get('wall_s'), '{:.0f}')} | {s.get('error') or ''} |")
    md += ["", "Per-cell logs: `cells/<cell>/log.jsonl`; eval records: `<agent>/episodes.jsonl` (leaderboard "
           f"`{'study-' + cfg.name}`, config root `conf/`). Versions: "
           + ", ".join(f"{k} {v}" for k, v in study["versions"].items()), ""]
    (out / "results.md").write_text("\n".join(md))
    return study
