"""Running a study: each cell is a ``madopd_distill.train`` (or ``.sft``) subprocess in its own folder,
then every model is evaluated by ``python -m madopd_envs.eval`` on the held-out leaderboard.

State lives on disk, so a killed study resumes: ``<work_dir>/cells/<cell>/`` holds ``cell.json``
(command + config hash), the run's folder ``train/`` (log, checkpoints, model) and ``status.json``
(``done`` or ``failed`` with the error). A done cell is skipped; a cut OPD cell continues from its
last checkpoint with the trainer's ``resume=true`` (the trainer drops log lines past it, so no step
is duplicated); a cut SFT cell reruns (it has no checkpoints; it is short). Children get
``PR_SET_PDEATHSIG``: a killed study leaves no orphan training behind to race its resume.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from madopd_distill.study.config import Cell, StudyConfig, StudyError, config_hash


# -- Hydra overrides ------------------------------------------------------------------------------
def hydra_value(v: Any) -> str:
    """A Python value in Hydra's override grammar (strings quoted, lists and dicts nested)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    s = str(v).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{s}'"


def _set(key: str, value: Any) -> str:
    return f"++{key}={hydra_value(value)}"


def _section(prefix: str, values: dict[str, Any] | None) -> list[str]:
    return [_set(f"{prefix}.{k}", v) for k, v in (values or {}).items()]


# -- commands -------------------------------------------------------------------------------------
def cell_dir(cfg: StudyConfig, cell: Cell) -> Path:
    return Path(cfg.work_dir) / "cells" / cell.id


def train_command(cfg: StudyConfig, cell: Cell, n_train: int) -> list[str]:
    """The cell's command line (without ``resume``): the study's base, then the method's changes."""
    out = cell_dir(cfg, cell) / "train"
    b, ev = cfg.budget, cfg.eval
    common = [f"env={cfg.env}", f"split={cfg.train.split}", f"seed={cell.seed}", f"output_dir={out}"]
    if cfg.env_kwargs:
        common.append(_set("env_kwargs", cfg.env_kwargs))
    if cfg.prompt:
        common.append(_set("prompt", cfg.prompt))
    if cell.is_baseline:
        args = dict(cell.args)
        optim = args.pop("optim", None)
        cmd = [sys.executable, "-m", "madopd_distill.sft", *common, f"model={cell.student}",
               f"num_tasks={n_train}", f"episodes={b.episodes}", "epochs=1",
               f"batch_samples={b.tasks_per_step * b.group_size}", f"max_env_steps={b.max_env_steps or 50}",
               f"max_new_tokens={b.max_new_tokens}"]
        if cell.method == "seqkd":
            cmd += ["data=teacher", _set("teacher", cell.ref_teacher["path"])]
        cmd += _section("optim", optim) + [_set(k, v) for k, v in args.items()]
        return cmd + list(cell.overrides)
    base = {k: v for k, v in cfg.base.items() if k not in ("method", "rollout", "optim")}
    curve_tasks = (ev.curve_tasks or ev.num_tasks or 0) if ev.curve_every else 0
    launch = [sys.executable, "-m"]
    if cfg.accelerate_config:  # FSDP / ZeRO-3 / several processes per cell, as accelerate runs them
        launch += ["accelerate.commands.launch", "--config_file", str(cfg.accelerate_config),
                   "--num_processes", str(cfg.num_processes), "-m"]
    cmd = [*launch, "madopd_distill.train", *common, f"student={cell.student}",
           _set("teachers", cell.teachers), _set("ref_teacher", cell.ref_teacher),
           f"method={cell.method}", *_section("method", cell.args),
           f"num_train_tasks={n_train}", f"steps={b.steps}",
           *_section("rollout", {**(cfg.base.get("rollout") or {}), "tasks_per_step": b.tasks_per_step,
                                 "group_size": b.group_size, "max_new_tokens": b.max_new_tokens,
                                 "max_env_steps": b.max_env_steps}),
           *_section("optim", cfg.base.get("optim")),
           *[_set(k, v) for k, v in base.items()],
           f"eval.split={ev.split}", f"eval.first_task={ev.first_task}", f"eval.num_tasks={curve_tasks}",
           f"eval.every={ev.curve_every}", f"eval.temperature={ev.temperature}",
           f"eval.probe_states={ev.probe_states if curve_tasks and playable(cell.ref_teacher) else 0}",
           f"save_every={cfg.checkpoint_every}"]
    return cmd + list(cell.overrides)


def playable(teacher: dict[str, Any] | None) -> bool:
    """A reference teacher that can play the probe states' episodes (a local HF model)."""
    return bool(teacher) and teacher.get("backend", "hf") == "hf"


def final_model(cfg: StudyConfig, cell: Cell) -> Path | None:
    """The cell's trained model folder, when it exists."""
    out = cell_dir(cfg, cell) / "train"
    if cell.is_baseline:
        return out / "model" if (out / "model" / "config.json").exists() else None
    from madopd_distill.trainer import latest_checkpoint

    ck = latest_checkpoint(out)
    if ck is None or json.loads((ck / "trainer_state.json").read_text())["step"] < cfg.budget.steps:
        return None
    return ck / "model"


def write_atomic(path: Path, text: str) -> None:
    """Written to a temporary file and renamed: a kill never leaves half a status behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def cell_state(cfg: StudyConfig, cell: Cell) -> str:
    """``done`` | ``failed`` | ``cut`` (has a checkpoint) | ``new``."""
    status = read_json(cell_dir(cfg, cell) / "status.json") or {}
    if status.get("state") == "done" and final_model(cfg, cell) is not None:
        return "done"
    if status.get("state") == "failed":
        return "failed"
    if not cell.is_baseline and (cell_dir(cfg, cell) / "train" / "checkpoints" / "latest").exists():
        return "cut"
    return "new"


# -- the process pool -----------------------------------------------------------------------------
def _die_with_parent() -> None:  # runs in the child between fork and exec
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """One torch thread per job (more threads on shared cores run far slower), full Hydra errors."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HYDRA_FULL_ERROR": "1", "PYTHONUNBUFFERED": "1"}
    return {**env, **(extra or {})}


@dataclass
class Job:
    key: str
    cmd: list[str]
    log: Path
    on_exit: Callable[[int, float], None]
    env: dict[str, str] = field(default_factory=child_env)
    proc: subprocess.Popen | None = None
    started: float = 0.0


def run_jobs(jobs: list[Job], n_parallel: int, tick: Callable[[], None] = lambda: None) -> None:
    """Run ``jobs``, at most ``n_parallel`` at once, from this thread (PDEATHSIG is per thread)."""
    pending, running = list(jobs), []
    try:
        while pending or running:
            while pending and len(running) < n_parallel:
                job = pending.pop(0)
                job.log.parent.mkdir(parents=True, exist_ok=True)
                with open(job.log, "a") as fh:
                    fh.write(f"\n### {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(job.cmd)}\n")
                    fh.flush()
                    job.proc = subprocess.Popen(job.cmd, stdout=fh, stderr=subprocess.STDOUT, env=job.env,
                                                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
                job.started = time.perf_counter()
                running.append(job)
            time.sleep(0.2)
            for job in [j for j in running if j.proc.poll() is not None]:
                running.remove(job)
                job.on_exit(job.proc.returncode, time.perf_counter() - job.started)
            tick()
    finally:
        for job in running:  # interrupted: stop what runs (its checkpoints stay for the resume)
            job.proc.terminate()
        for job in running:
            try:
                job.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                job.proc.kill()


def last_error(log: Path) -> str:
    """The exception line at the end of a child's log (one line)."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    tail = lines[-40:]
    for ln in reversed(tail):
        if ("Error" in ln or "Exception" in ln) and ":" in ln and not ln.startswith(("Set the environment", "###")):
            return ln[:500]
    return (tail[-1] if tail else "exited without output")[:500]


def count_steps(path: Path) -> int:
    try:
        return path.read_text().count('"kind": "train"')
    except OSError:
        return 0


# -- training phase -------------------------------------------------------------------------------
def starting_weights(cell: Cell, fingerprint: Callable[[str], str | None] | None = None) -> list[str | None]:
    """The hashes of the models a cell starts from: a rebuilt zoo under the same names is another cell.
    ``fingerprint``: a memoised ``weights_fingerprint``, so that cells sharing models read them once."""
    if fingerprint is None:
        from madopd_agents.zoo import weights_fingerprint as fingerprint
    return [fingerprint(cell.student), *(fingerprint(str(t["path"])) for t in cell.teachers)]


def train_cells(cfg: StudyConfig, cells: list[Cell], n_train: int, jobs: int, progress: bool,
                log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Train every cell not done yet; returns each cell's status (``done`` / ``failed`` + error)."""
    from tqdm import tqdm

    from madopd_agents.zoo import weights_fingerprint

    todo: list[Job] = []
    states = {c.id: cell_state(cfg, c) for c in cells}
    fingerprint = functools.cache(weights_fingerprint)  # this run's starting models do not change under it
    for c in cells:
        d = cell_dir(cfg, c)
        cmd = train_command(cfg, c, n_train)
        h = config_hash([cmd[1:], starting_weights(c, fingerprint)])
        meta = read_json(d / "cell.json")
        if meta and meta.get("hash") != h:
            raise StudyError(f"cell {c.id} in {d} was run with another config or from other weights (hash "
                             f"{meta.get('hash')} != {h}); choose another work_dir= or delete that folder")
        d.mkdir(parents=True, exist_ok=True)
        write_atomic(d / "cell.json", json.dumps({"id": c.id, "label": c.label, "method": c.method, "seed": c.seed,
                                                  "hash": h, "command": shlex.join(cmd[1:])}, indent=2))
        if states[c.id] == "done":
            continue
        if states[c.id] == "cut":
            cmd = [*cmd, "resume=true"]
            log(f"{c.id}: resuming from its last checkpoint")
        (d / "status.json").unlink(missing_ok=True)
        todo.append(Job(c.id, cmd, d / "stdout.log", _finisher(cfg, c, log)))

    done0 = sum(s == "done" for s in states.values())
    opd_cells = [c for c in cells if not c.is_baseline]
    bar_cells = tqdm(total=len(cells), initial=done0, desc="cells", unit="cell", disable=not progress, position=0)
    bar_steps = tqdm(total=len(opd_cells) * cfg.budget.steps, desc="steps", unit="step", disable=not progress,
                     position=1)

    def tick() -> None:
        n_cells = sum(cell_state(cfg, c) in ("done", "failed") for c in cells)
        n_steps = sum(min(cfg.budget.steps, count_steps(cell_dir(cfg, c) / "train" / "log.jsonl")) for c in opd_cells)
        if (n_cells, n_steps) != (bar_cells.n, bar_steps.n):  # redraw on progress only
            bar_cells.n, bar_steps.n = n_cells, n_steps
            bar_cells.refresh()
            bar_steps.refresh()

    if todo:
        log(f"training {len(todo)} of {len(cells)} cells ({jobs} at a time; logs in {Path(cfg.work_dir) / 'cells'})")
    try:
        run_jobs(todo, jobs, tick)
        tick()
    finally:
        bar_steps.close()
        bar_cells.close()
    return {c.id: read_json(cell_dir(cfg, c) / "status.json") or {"state": cell_state(cfg, c)} for c in cells}


def _finisher(cfg: StudyConfig, cell: Cell, log: Callable[[str], None]) -> Callable[[int, float], None]:
    def on_exit(rc: int, wall: float) -> None:
        d = cell_dir(cfg, cell)
        ok = rc == 0 and final_model(cfg, cell) is not None
        status = {"state": "done" if ok else "failed", "returncode": rc, "wall_s": round(wall, 1),
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if not ok:
            status["error"] = last_error(d / "stdout.log") if rc != 0 else "exited 0 but wrote no final model"
            log(f"{cell.id}: FAILED ({status['error']}); the other cells go on")
        write_atomic(d / "status.json", json.dumps(status, indent=2))

    return on_exit


# -- evaluation phase -----------------------------------------------------------------------------
@dataclass
class EvalAgent:
    """A model evaluated on the held-out leaderboard: the initial student, a teacher or a cell's result."""

    name: str
    model: str
    role: str  # initial | teacher | cell
    cell: str | None = None
    seed: int | None = None


def eval_agents(cfg: StudyConfig, cells: list[Cell], statuses: dict[str, dict[str, Any]]) -> list[EvalAgent]:
    from madopd_distill.study.config import _teacher_specs, model_for_seed

    agents: list[EvalAgent] = []
    students = {s: model_for_seed(cfg, cfg.student, s) for s in cfg.seeds}
    varied = len(set(students.values())) > 1
    for s, m in students.items():
        if varied or not agents:
            agents.append(EvalAgent("student-init" + (f"-s{s}" if varied else ""), m, "initial", seed=s))
    teachers = {s: _teacher_specs(cfg, s) for s in cfg.seeds}
    for k, t in enumerate(teachers[cfg.seeds[0]]):
        paths = {s: teachers[s][k]["path"] for s in cfg.seeds}
        t_varied = len(set(paths.values())) > 1
        for s in (cfg.seeds if t_varied else cfg.seeds[:1]):
            if t.get("backend", "hf") == "hf":
                agents.append(EvalAgent(f"teacher-{t['name']}" + (f"-s{s}" if t_varied else ""), paths[s], "teacher",
                                        seed=s))
    for c in cells:
        m = final_model(cfg, c)
        if statuses.get(c.id, {}).get("state") == "done" and m is not None:
            agents.append(EvalAgent(c.id, str(m), "cell", cell=c.id, seed=c.seed))
    return agents


def board_name(cfg: StudyConfig) -> str:
    return f"study-{cfg.name}"


def write_eval_configs(cfg: StudyConfig, eval_ids: list[str], agents: list[EvalAgent]) -> Path:
    """Agent cards and the held-out leaderboard, in ``<output_dir>/conf`` (a config root for the eval CLI)."""
    import yaml

    root = Path(cfg.output_dir) / "conf"
    (root / "agent").mkdir(parents=True, exist_ok=True)
    (root / "leaderboard").mkdir(parents=True, exist_ok=True)
    entry = {"env": cfg.env, "split": cfg.eval.split, "task_ids": eval_ids, "episodes": len(eval_ids),
             "max_steps": cfg.eval.max_steps or cfg.budget.max_env_steps or 50, "seeds": list(cfg.eval.seeds)}
    if cfg.env_kwargs:
        entry["env_kwargs"] = cfg.env_kwargs
    board = {"name": board_name(cfg), "description": f"held-out tasks of study {cfg.name}", "entries": [entry]}
    (root / "leaderboard" / f"{board_name(cfg)}.yaml").write_text(yaml.safe_dump(board, sort_keys=False))
    for a in agents:
        card = {"backend": "hf", "model": a.model,
                "sampling": {"temperature": cfg.eval.temperature, "max_new_tokens": cfg.budget.max_new_tokens},
                "prompt": {"history": None, **cfg.prompt}, "args": {"batch_size": 8},
                "description": f"study {cfg.name}: {a.role}" + (f" {a.cell}" if a.cell else "")}
        (root / "agent" / f"{a.name}.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return root


def eval_done(cfg: StudyConfig, agent: EvalAgent) -> bool:
    """The agent's held-out eval is complete *and* was played by the weights it has now (a rebuilt zoo
    or a cell trained again is evaluated again: ``--rerun-changed`` replaces the stale episodes)."""
    from madopd_agents.zoo import weights_fingerprint

    folder = Path(cfg.output_dir) / agent.name
    s, run = read_json(folder / "summary.json"), read_json(folder / "run.json")
    return (bool(s) and s.get("finished_episodes") == s.get("planned_episodes")
            and (run or {}).get("agent_weights") == weights_fingerprint(agent.model))


def evaluate_all(cfg: StudyConfig, eval_ids: list[str], agents: list[EvalAgent], jobs: int,
                 log: Callable[[str], None]) -> dict[str, str]:
    """Evaluate every agent not yet evaluated; returns errors by agent name."""
    conf = write_eval_configs(cfg, eval_ids, agents)
    todo = [a for a in agents if not eval_done(cfg, a)]
    if not todo:
        return {}
    out = Path(cfg.output_dir)
    conf_path = os.pathsep.join(p for p in [str(conf.resolve()), os.environ.get("MADOPD_CONF", "")] if p)
    groups = [todo[i::jobs] for i in range(min(jobs, len(todo)))]
    errors: dict[str, str] = {}
    log(f"evaluating {len(todo)} models on {len(eval_ids)} held-out tasks x {len(cfg.eval.seeds)} seed(s)")
    job_list = []
    for k, group in enumerate(groups):
        cmd = [sys.executable, "-m", "madopd_envs.eval", *[x for a in group for x in ("--agent", a.name)],
               "--leaderboard", board_name(cfg), "--num-envs", str(cfg.eval.num_envs), "--resume", "--rerun-changed",
               "--no-progress", "--output", str(out / group[0].name if len(group) == 1 else out)]

        def on_exit(rc: int, wall: float, group: list[EvalAgent] = group) -> None:
            for a in group:
                if not eval_done(cfg, a):
                    errors[a.name] = last_error(Path(cfg.work_dir) / "eval" / f"eval-{group[0].name}.log") \
                        if rc else "eval incomplete"
                    log(f"eval of {a.name} FAILED: {errors[a.name]}")

        job_list.append(Job(f"eval{k}", cmd, Path(cfg.work_dir) / "eval" / f"eval-{group[0].name}.log", on_exit,
                            env=child_env({"MADOPD_CONF": conf_path})))
    run_jobs(job_list, jobs)
    return errors


# -- publishing distilled students into the zoo ---------------------------------------------------
def publish(cfg: StudyConfig, cells: list[Cell], study: dict[str, Any], root: Path) -> list[Path]:
    """Copy these cells' final students to ``root/<recipe>/student_<label>`` with a card, so that
    ``--agent <recipe>/student_<label>`` evaluates them like any zoo model (``make eval`` does).

    ``<recipe>`` is the zoo recipe of the study's initial student (``zoo:<recipe>/...``), else the
    study's name. The card carries the cell's command and its held-out figures from this study."""
    import shutil

    student = cfg.student.removeprefix("zoo:")
    recipe = student.split("/")[0] if cfg.student.startswith("zoo:") and "/" in student else cfg.name
    written = []
    for c in cells:
        model = final_model(cfg, c)
        if model is None:
            raise StudyError(f"--publish {c.id}: the cell has no final model (run it first)")
        summary = read_json(Path(cfg.output_dir) / c.id / "summary.json") or {}
        dest = root / recipe / f"student_{c.label.replace('@', '_at_').replace('.', '')}"
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(model, tmp, ignore=shutil.ignore_patterns("*.pt", "*.bin", "optimizer*", "state"))
        files = sorted(p for p in tmp.iterdir() if p.is_file())
        card = {
            "name": f"{recipe}/{dest.name}", "role": f"student distilled by {c.label}",
            "base": f"{cfg.student} distilled by {c.label} (study {cfg.name}, seed {c.seed}, {cfg.budget.steps} steps)",
            "license": "Apache-2.0 (trained here from zoo models on engine-generated episodes)",
            "size_bytes": sum(p.stat().st_size for p in files), "env": cfg.env, "env_kwargs": cfg.env_kwargs,
            "prompt": cfg.prompt, "max_new_tokens": cfg.budget.max_new_tokens, "study": cfg.name,
            "cell": c.id, "command": study["command"], "cell_command": next(
                (x.get("command") for x in study["cells"] if x["id"] == c.id), None),
            "heldout_episodes": {"success_rate": summary.get("success_rate"), "score": summary.get("mean_score"),
                                 "episodes": summary.get("finished_episodes")}}
        (tmp / "card.json").write_text(json.dumps(card, indent=2))  # the folder is renamed into place whole
        (tmp / "README.md").write_text(
            f"# {recipe}/{dest.name}\n\nThe student `{cfg.student}` after {c.label} (seed {c.seed}) in the "
            f"study `{cfg.name}`: held-out success {summary.get('success_rate')}, score {summary.get('mean_score')} "
            f"on {summary.get('finished_episodes')} episodes.\n\nMade by: `{study['command']}`\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        written.append(dest)
    return written
