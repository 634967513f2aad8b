"""The comparative-study harness (``python -m madopd_distill.study``), end to end on tiny models.

One real study (2 methods x 2 seeds x 2 steps on TWX-SimonSays, plus a method whose cells crash) is
started as a subprocess, SIGKILLed while a cell is between its two checkpoints, and rerun: the cut
cell resumes from its checkpoint, finished cells are skipped, nothing is lost or duplicated, the
crashing cells are recorded while the others finish, and the results (table with intervals, curves,
leaderboard records) are written. The bad-input errors are checked in-process, with model loading
made to fail loudly so that "before any model is loaded" is tested, not assumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV = "madopd/TWX-SimonSays-v0"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models() -> dict[str, str]:
    from madopd_agents.zoo import tiny_model_dir

    return {"student": str(tiny_model_dir("S", seed=0)), "teacher": str(tiny_model_dir("S", seed=1))}


def study_yaml(tmp: Path, models: dict[str, str], **changes: str) -> Path:
    text = f"""
name: t
env: {ENV}
prompt: {{show_actions: false, history: 0}}
student: {models['student']}
teachers: [{{name: teacher, path: {changes.pop('teacher', models['teacher'])}}}]
seeds: {changes.pop('seeds', '[0, 1]')}
train: {{split: train, num_tasks: 20}}
eval: {{split: train, first_task: {changes.pop('eval_first', '30')}, num_tasks: 2, curve_every: 1, num_envs: 1}}
budget: {{steps: {changes.pop('steps', '2')}, tasks_per_step: 2, max_new_tokens: 6, max_env_steps: 3}}
base:
  method: {{divergence: reverse_kl, reduction: token_mean, sample_mode: turn}}
  rollout: {{num_envs: 1}}
  optim: {{lr: 1.0e-3}}
methods:
{changes.pop('methods', '''  opd: {}
  opd@jsd0.5: {method: opd, args: {divergence: jsd, beta: 0.5}}
  grpo: {teachers: [], overrides: [rollout.group_size=2]}
  broken: {method: opd, overrides: ["optim.lr=-1"]}''')}
claims:
  - {{paper: test, claim: JSD beats reverse KL, method: opd@jsd0.5, baseline: opd, metric: success}}
checkpoint_every: 1
output_dir: {tmp / 'results' / 'study-t'}
work_dir: {tmp / 'work'}
"""
    assert not changes, changes
    path = tmp / "t.yaml"
    path.write_text(text)
    return path


def train_log(cell: Path) -> list[dict]:
    return [json.loads(x) for x in (cell / "train" / "log.jsonl").read_text().splitlines() if x.strip()]


def children_of_study(work: Path) -> list[int]:
    """Live processes whose command line names the study's work dir (the cells it started)."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(work) in cmd and "madopd_distill.study" not in cmd:
                pids.append(int(p.name))
    return pids


def test_study_kill_resume_and_a_crashing_cell(tmp_path: Path, models: dict[str, str]) -> None:
    cfg = study_yaml(tmp_path, models)
    work, out = tmp_path / "work", tmp_path / "results" / "study-t"
    cmd = [sys.executable, "-m", "madopd_distill.study", f"study={cfg}", "--jobs", "2", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    # 1. start, and SIGKILL the study while an OPD cell sits between its step-1 and step-2 checkpoints
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cut = None
    deadline = time.time() + 600
    while cut is None and proc.poll() is None and time.time() < deadline:
        for cell in sorted((work / "cells").glob("opd*")) if (work / "cells").exists() else []:
            latest = cell / "train" / "checkpoints" / "latest"
            if latest.exists() and latest.read_text().strip() == "step-000001" and not (cell / "status.json").exists():
                cut = cell
                break
        time.sleep(0.02)
    assert cut is not None, f"no cell was caught mid-run (study exit {proc.poll()}): {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    t_end = time.time() + 30  # PR_SET_PDEATHSIG: the training children die with the study
    while children_of_study(work) and time.time() < t_end:
        time.sleep(0.2)
    assert not children_of_study(work), "a killed study left cells running"
    before = {c.name: (c / "status.json").read_text() for c in (work / "cells").iterdir() if (c / "status.json").exists()}
    finished_before = {k for k, v in before.items() if json.loads(v)["state"] == "done"}

    # 2. rerun the same command: resume
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 1, res.stderr[-3000:]  # 1: some cells failed (the broken ones), the rest is written
    assert "resuming from its last checkpoint" in res.stderr
    assert "resumed from" in (cut / "stdout.log").read_text()  # the trainer's own --resume path

    # nothing lost, nothing duplicated; finished cells were skipped (status untouched)
    for m in ("opd", "opd@jsd0.5"):
        for s in (0, 1):
            cell = work / "cells" / f"{m}-s{s}"
            recs = train_log(cell)
            assert [r["step"] for r in recs if r["kind"] == "train"] == [1, 2], cell.name
            assert [(r["when"], r["step"]) for r in recs if r["kind"] == "eval"] == \
                [("before", 0), ("step1", 1), ("after", 2)], cell.name
            assert all("ref/kl_token" in r and "cost/teacher_tokens_scored" in r for r in recs if r["kind"] == "train")
            assert json.loads((cell / "status.json").read_text())["state"] == "done"
    for name in finished_before:
        assert (work / "cells" / name / "status.json").read_text() == before[name], f"{name} was rerun"

    # the crashing cells are recorded with their error; the others finished
    for s in (0, 1):
        status = json.loads((work / "cells" / f"broken-s{s}" / "status.json").read_text())
        assert status["state"] == "failed" and "lr must be > 0" in status["error"]

    # results: ordinary leaderboard records, one per planned episode, and the table with intervals
    study = json.loads((out / "study.json").read_text())
    agents = {a["agent"] for a in study["evaluated"]}
    assert agents == {"student-init", "teacher-teacher", "opd-s0", "opd-s1", "opd@jsd0.5-s0", "opd@jsd0.5-s1",
                      "grpo-s0", "grpo-s1"}
    for a in agents:
        summary = json.loads((out / a / "summary.json").read_text())
        assert summary["finished_episodes"] == summary["planned_episodes"] == 2
        keys = [json.loads(x)["key"] for x in (out / a / "episodes.jsonl").read_text().splitlines() if x.strip()]
        assert len(keys) == len(set(keys)) == 2
    rows = {r["method"]: r for r in study["table"]}
    assert rows["opd"]["cells"] == "2/2" and rows["broken"]["cells"] == "0/2"
    for m in ("opd", "opd@jsd0.5"):
        assert {"mean", "lo", "hi"} <= set(rows[m]["success"]) and rows[m]["success"]["lo"] <= rows[m]["success"]["hi"]
        assert rows[m]["kl_token"]["mean"] > 0 and rows[m]["teacher_tokens_scored"] > 0
    assert "lo" in rows["opd@jsd0.5"]["diff_vs_opd"] and "diff_vs_opd" not in rows["opd"]
    # compute totals: 2 steps x 2 tasks; GRPO plays groups of 2 and scores no teacher
    assert rows["opd"]["compute"]["episodes"] == 4 and rows["grpo"]["compute"]["episodes"] == 8
    assert rows["grpo"]["compute"]["teacher_tokens_scored"] == 0 < rows["opd"]["compute"]["teacher_tokens_scored"]
    assert rows["grpo"]["compute"]["env_steps"] >= 8 and rows["grpo"]["compute"]["student_tokens"] > 0
    assert rows["opd"]["diff_vs_initial"]["metric"] == "success" and "lo" in rows["opd@jsd0.5"]["diff_vs_initial"]
    # untrained tiny models: OPD cannot lift the student, so the gate fails and no claim gets a verdict
    assert study["gate"]["valid"] is False and study["gate"]["gate"]["method"] == "opd"
    assert study["claims"][0]["verdict"] == "invalid: distillation does not work in this setting"
    md = (out / "results.md").read_text()
    assert md.index("invalid: distillation does not work in this setting") < md.index("## Results")
    assert "success [95% CI]" in md and "| `opd` | 2/2 |" in md and "hierarchical bootstrap" in md
    assert "lr must be > 0" in md
    assert "| `grpo` | 8 |" in md  # the compute table
    for fig in ("success_vs_step.png", "success_vs_student_tokens.png", "gate_success_vs_step.png", "kl_token_vs_step.png", "kl_traj_vs_step.png",
                "probe_kl_vs_step.png", "probe_agreement_vs_step.png"):
        assert (out / "figures" / fig).read_bytes()[:4] == b"\x89PNG"
    assert [json.loads(x)["step"] for x in (out / "cells" / "opd-s0" / "log.jsonl").read_text().splitlines()
            if json.loads(x)["kind"] == "train"] == [1, 2]

    # --publish: a finished cell's student becomes a zoo model with a card holding its held-out figures
    from madopd_agents.zoo import _is_complete
    from madopd_distill.study import runner
    from madopd_distill.study.config import build_cells, load_study

    scfg = load_study(str(cfg), [], REPO / "leaderboards" / "conf" / "study")
    (published,) = runner.publish(scfg, [c for c in build_cells(scfg) if c.id == "opd-s0"], study, tmp_path / "zoo")
    card = json.loads((published / "card.json").read_text())
    assert published == tmp_path / "zoo" / "t" / "student_opd" and _is_complete(published)
    assert card["heldout_episodes"]["episodes"] == 2 and card["cell"] == "opd-s0" and "madopd_distill.study" in card["command"]
    assert not any(p.name.startswith(".") for p in published.parent.iterdir())  # no temporary folder left
    with pytest.raises(runner.StudyError, match="no final model"):
        runner.publish(scfg, [c for c in build_cells(scfg) if c.id == "broken-s0"], study, tmp_path / "zoo")

    # a model that changed under its name (a cell trained again, a rebuilt zoo) is evaluated again
    import shutil

    from madopd_agents.zoo import weights_fingerprint

    final = runner.final_model(scfg, next(c for c in build_cells(scfg) if c.id == "opd-s0"))
    agent = runner.EvalAgent("opd-s0", str(final), "cell")
    assert runner.eval_done(scfg, agent)
    shutil.copy(Path(models["teacher"]) / "model.safetensors", final / "model.safetensors")
    assert not runner.eval_done(scfg, agent)
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 1 and "evaluating 1 models" in res.stderr, res.stderr[-3000:]
    assert runner.eval_done(scfg, agent)
    assert json.loads((out / "opd-s0" / "run.json").read_text())["agent_weights"] == weights_fingerprint(str(final))
    assert len((out / "opd-s0" / "episodes.jsonl").read_text().splitlines()) == 2

    # the leaderboard report shows the study
    rep = subprocess.run([sys.executable, "-m", "madopd_envs.eval.report", "--store", str(out.parent)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr
    readme = (out.parent / "README.md").read_text()
    assert "study-t" in readme and "opd@jsd0.5-s1" in readme


def _run_main(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    import transformers

    from madopd_distill.study.__main__ import main

    def no_model(*a: object, **k: object) -> None:
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_model)
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.fixture(scope="module")
def other_tokenizer_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real tiny model with its own (different) tokenizer."""
    from madopd_agents.zoo import build_tokenizer, tiny_qwen3

    d = tmp_path_factory.mktemp("other")
    tok = build_tokenizer([f"go to room {i}, take the {w}" for i in range(50) for w in ("key", "coin", "apple")],
                          vocab_size=300)
    tiny_qwen3(tok, size="S", hidden_size=32, num_hidden_layers=1, intermediate_size=64, num_attention_heads=2,
               num_key_value_heads=1, head_dim=16).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


@pytest.mark.parametrize("case,expected", [
    ("unknown_method", "unknown method 'opdd'. Did you mean 'opd'"),
    ("overlap", "train and eval tasks overlap"),
    ("budget0", "budget: steps must be >= 1"),
    ("no_seeds", "seed list is empty"),
    ("tokenizer", "does not share the tokenizer"),
    ("override_budget0", "budget: tasks_per_step must be >= 1"),
])
def test_bad_input_is_one_line_before_any_model(case: str, expected: str, tmp_path: Path, models: dict[str, str],
                                                other_tokenizer_model: str, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    changes = {"unknown_method": {"methods": "  opdd: {}"}, "overlap": {"eval_first": "10"},
               "budget0": {"steps": "0"}, "no_seeds": {"seeds": "[]"},
               "tokenizer": {"teacher": other_tokenizer_model}}.get(case, {})
    argv = [f"study={study_yaml(tmp_path, models, **changes)}"]
    if case == "override_budget0":
        argv.append("budget.tasks_per_step=0")
    rc, err = _run_main(argv, monkeypatch, capsys)
    assert rc == 2 and expected in err and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert not (tmp_path / "work").exists()  # nothing ran


def test_cells_selection_and_unknown_cells(tmp_path: Path, models: dict[str, str]) -> None:
    from madopd_distill.study.config import build_cells, load_study, select_cells, StudyError

    cfg = load_study(str(study_yaml(tmp_path, models)), ["seeds=[0,1,2]"], Path("."))
    cells = build_cells(cfg)
    assert [c.id for c in cells][:3] == ["opd-s0", "opd-s1", "opd-s2"] and len(cells) == 12  # 4 methods x 3 seeds
    assert [c.id for c in select_cells(cells, ["opd@*", "broken-s2"])] == \
        ["opd@jsd0.5-s0", "opd@jsd0.5-s1", "opd@jsd0.5-s2", "broken-s2"]
    jsd = next(c for c in cells if c.label == "opd@jsd0.5")
    assert jsd.args == {"divergence": "jsd", "reduction": "token_mean", "sample_mode": "turn", "beta": 0.5}
    with pytest.raises(StudyError, match="matches no cell"):
        select_cells(cells, ["tcod-*"])


def test_ref_teacher_and_team_choose_each_methods_teachers(tmp_path: Path, models: dict[str, str]) -> None:
    from madopd_distill.study.config import StudyError, build_cells, load_study

    methods = "  opd: {teachers: ['@ref']}\n  mt_opd: {}\n  grpo: {teachers: [], overrides: [rollout.group_size=2]}"
    three = "teachers=[{name:ref,path:'zoo:r'},{name:a,path:'zoo:a'},{name:b,path:'zoo:b'}]"
    cfg = load_study(str(study_yaml(tmp_path, models, methods=methods)), [three, "++ref_teacher=ref", "++team=[a,b]"], Path("."))
    chosen = {c.label: [t["name"] for t in c.teachers] for c in build_cells(cfg)}
    assert chosen == {"opd": ["ref"], "mt_opd": ["a", "b"], "grpo": []}
    cfg = load_study(str(study_yaml(tmp_path, models, methods=methods)), [three], Path("."))  # defaults: first, all
    assert {c.label: [t["name"] for t in c.teachers] for c in build_cells(cfg)} == {"opd": ["ref"], "mt_opd": ["ref", "a", "b"], "grpo": []}
    with pytest.raises(StudyError, match="no teacher 'c'"):
        build_cells(load_study(str(study_yaml(tmp_path, models, methods=methods)), [three, "++team=[a,c]"], Path(".")))


def test_build_seeds_template(tmp_path: Path, models: dict[str, str]) -> None:
    from madopd_distill.study.config import StudyError, build_cells, load_study

    cfg = load_study(str(study_yaml(tmp_path, models)), ["++build_seeds='{name}@seed{n}'", "student=zoo:stu",
                                                         "teachers=[{name:t,path:'zoo:tea'}]"], Path("."))
    c = [c for c in build_cells(cfg) if c.label == "opd"]
    assert [(x.student, x.teachers[0]["path"]) for x in c] == [("zoo:stu@seed0", "zoo:tea@seed0"),
                                                              ("zoo:stu@seed1", "zoo:tea@seed1")]
    # a list names one zoo build per seed
    cfg = load_study(str(study_yaml(tmp_path, models)), ["++build_seeds=[r,r_b1]", "student=zoo:r/stu",
                                                         "teachers=[{name:t,path:'zoo:r/tea'}]"], Path("."))
    c = [c for c in build_cells(cfg) if c.label == "opd"]
    assert [(x.student, x.teachers[0]["path"]) for x in c] == [("zoo:r/stu", "zoo:r/tea"),
                                                              ("zoo:r_b1/stu", "zoo:r_b1/tea")]
    with pytest.raises(StudyError, match="one zoo build per seed"):
        load_study(str(study_yaml(tmp_path, models)), ["++build_seeds=[r]"], Path("."))


def test_hierarchical_bootstrap_and_verdicts() -> None:
    import numpy as np

    from madopd_distill.stats import hierarchical_bootstrap, paired_difference, verdict

    y = np.array([[1, 1, 0, 1], [0, 1, 0, 1], [1, 1, 1, 1]], dtype=float)
    iv = hierarchical_bootstrap(y)
    assert iv.mean == pytest.approx(y.mean()) and iv.lo < iv.mean < iv.hi
    assert hierarchical_bootstrap(np.ones((3, 5))).as_dict() == {"mean": 1.0, "lo": 1.0, "hi": 1.0}
    better = paired_difference(np.ones((3, 20)), np.zeros((3, 20)))
    assert verdict(better, "greater") == "replicated" and verdict(better, "less") == "not replicated"
    noisy = paired_difference(y, y[::-1])
    assert verdict(noisy, "greater") == "inconclusive"


def test_cells_can_run_under_the_fsdp_and_zero3_configs(tmp_path: Path, models: dict[str, str]) -> None:
    """A study names an accelerate config; accelerate's own loader validates it; OPD cells launch through it."""
    from madopd_distill.study.config import StudyError, build_cells, load_study, validate
    from madopd_distill.study.runner import train_command

    conf = Path(__file__).resolve().parents[2] / "leaderboards" / "conf" / "distill" / "accelerate"
    for name in ("fsdp.yaml", "deepspeed_zero3.yaml"):
        cfg = load_study(str(study_yaml(tmp_path, models)), [f"++accelerate_config={conf / name}",
                                                             "++num_processes=2"], Path("."))
        cells = build_cells(cfg)
        validate(cfg, cells)
        cmd = train_command(cfg, next(c for c in cells if c.label == "opd"), 10)
        assert cmd[1:7] == ["-m", "accelerate.commands.launch", "--config_file", str(conf / name),
                            "--num_processes", "2"] and cmd[7:9] == ["-m", "madopd_distill.train"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("compute_environment: LOCAL_MACHINE\nno_such_accelerate_key: 1\n")
    for override, needle in ((f"++accelerate_config={bad}", "accelerate rejects"),
                             ("++accelerate_config=/nowhere.yaml", "does not exist"),
                             ("++num_processes=2", "needs accelerate_config")):
        cfg = load_study(str(study_yaml(tmp_path, models)), [override], Path("."))
        with pytest.raises(StudyError, match=needle):
            validate(cfg, build_cells(cfg))


def test_a_cell_started_from_rebuilt_weights_is_another_cell(tmp_path: Path, models: dict[str, str]) -> None:
    """A zoo rebuilt under the same names must not let old cells pass for new ones."""
    import shutil

    from madopd_distill.study import runner
    from madopd_distill.study.config import StudyError, build_cells, config_hash, load_study

    student = tmp_path / "student"
    shutil.copytree(models["student"], student)
    cfg = load_study(str(study_yaml(tmp_path, {**models, "student": str(student)})), [], Path("."))
    cells = [c for c in build_cells(cfg) if c.id == "opd-s0"]
    folder = runner.cell_dir(cfg, cells[0])
    folder.mkdir(parents=True)
    h = config_hash([runner.train_command(cfg, cells[0], 20)[1:], runner.starting_weights(cells[0])])
    (folder / "cell.json").write_text(json.dumps({"hash": h}))
    shutil.copy(Path(models["teacher"]) / "model.safetensors", student / "model.safetensors")  # rebuilt
    with pytest.raises(StudyError, match="other weights"):
        runner.train_cells(cfg, cells, 20, 1, False, print)


def _gate_inputs(opd: float, sft: float, init: float = 0.2, teacher: float = 0.9, seeds: int = 3, tasks: int = 40):
    """Rows and per-(seed, task) outcome matrices of a study whose methods win a fixed share of tasks."""
    import numpy as np

    def wins(p: float, n_seeds: int) -> np.ndarray:
        return np.array([[1.0 if (t * 7 + s) % tasks < p * tasks else 0.0 for t in range(tasks)]
                         for s in range(n_seeds)])

    mats = {name: {"seeds": list(range(n)), "success": wins(p, n), "score": wins(p, n)} for name, p, n in
            [("student-init", init, 1), ("teacher-teacher", teacher, 1), ("opd", opd, seeds), ("sft", sft, seeds)]}
    rows = [{"method": "student-init", "role": "initial"}, {"method": "teacher-teacher", "role": "teacher"},
            {"method": "opd", "role": "method"}, {"method": "sft", "role": "method"}]
    return rows, mats


@pytest.mark.parametrize("opd,valid,reason", [(0.75, True, None), (0.2, False, "does not lift"),
                                              (0.4, False, "closes 0.29 of the gap")])
def test_validity_gate_passes_only_when_opd_lifts_the_student_and_closes_the_gap(opd, valid, reason, tmp_path, models):
    from madopd_distill.study.config import INVALID, load_study
    from madopd_distill.study.results import gate_markdown, gated, validity_gate

    methods = "  opd: {}\n  sft: {method: sft, args: {episodes: 4, epochs: 1}}"
    cfg = load_study(str(study_yaml(tmp_path, models, methods=methods)), [], REPO / "leaderboards" / "conf" / "study")
    gate = validity_gate(cfg, *_gate_inputs(opd=opd, sft=0.5))
    assert gate["valid"] is valid and (reason is None or reason in gate["reason"])
    assert gate["gate"]["gap_closed"] == pytest.approx((opd - 0.2) / 0.7, abs=0.02)
    assert gate["sft"]["gap_closed"] == pytest.approx(0.3 / 0.7, abs=0.02)
    claims = [{"claim": "x", "verdict": "replicated", "note": None}]
    assert gated(claims, gate)[0]["verdict"] == ("replicated" if valid else INVALID)
    md = "\n".join(gate_markdown(gate))
    assert (INVALID in md) is (not valid) and "| `sft` |" in md


def test_gate_config_is_checked(tmp_path, models):
    from madopd_distill.study.config import StudyError, build_cells, load_study, validate

    conf = REPO / "leaderboards" / "conf" / "study"
    cfg = load_study(str(study_yaml(tmp_path, models)), ["+gate.method=nope"], conf)
    with pytest.raises(StudyError, match="gate.method 'nope'"):
        validate(cfg, build_cells(cfg))
    with pytest.raises(StudyError, match="min_gap_closed"):
        load_study(str(study_yaml(tmp_path, models)), ["+gate.min_gap_closed=2"], conf)


def test_a_match_claim_and_a_compute_claim() -> None:
    """``at_least``: no worse by more than the tolerance; ``cheaper``: also fewer token forwards."""
    import numpy as np

    from madopd_distill.stats import Interval, verdict
    from madopd_distill.study.config import Claim
    from madopd_distill.study.results import _claim

    assert verdict(Interval(0.0, -0.02, 0.03), "at_least", 0.05) == "replicated"
    assert verdict(Interval(-0.1, -0.2, -0.01), "at_least", 0.05) == "not replicated"
    assert verdict(Interval(-0.05, -0.3, 0.2), "at_least", 0.05) == "inconclusive"
    same = {"seeds": [0, 1, 2], "success": np.ones((3, 20)), "score": np.ones((3, 20))}
    cheap = {**same, "compute": {"student_tokens": 100.0, "teacher_tokens_scored": 100.0}}
    dear = {**same, "compute": {"student_tokens": 800.0, "teacher_tokens_scored": 0.0}}
    claim = Claim("p", "OPD matches RL at a fraction of its compute", "opd", "grpo", direction="at_least", cheaper=True)
    got = _claim(claim, {"opd": cheap, "grpo": dear})
    assert got["verdict"] == "replicated" and got["compute_ratio"] == pytest.approx(0.25)
    got = _claim(claim, {"opd": dear, "grpo": cheap})
    assert got["verdict"] == "not replicated" and "not cheaper" in got["note"]
    assert _claim(claim, {"opd": same, "grpo": same})["verdict"] == "inconclusive"


def test_kl_and_compute_come_only_from_finished_cells(tmp_path, models):
    """A cell stopped mid-training (state ``failed``, or still ``running``) has a partial log: counting it
    would undercount the method's compute and shift its final KL, so only ``done`` cells enter them."""
    from madopd_distill.study.config import build_cells, load_study
    from madopd_distill.study.results import analyse
    from madopd_distill.study.runner import cell_dir

    cfg = load_study(str(study_yaml(tmp_path, models, methods="  opd: {}", seeds="[0, 1, 2]")), [],
                     REPO / "leaderboards" / "conf" / "study")
    cells = build_cells(cfg)
    steps = {0: 10, 1: 3, 2: 1}  # seed 0 finished its 10 steps; seeds 1 and 2 were cut
    for c in cells:
        log = cell_dir(cfg, c) / "train" / "log.jsonl"
        log.parent.mkdir(parents=True)
        log.write_text("".join(json.dumps({"kind": "train", "step": s, "episodes": 4, "ref/kl_token": 0.1 * c.seed + 1})
                               + "\n" for s in range(1, steps[c.seed] + 1)))
    statuses = {cells[0].id: {"state": "done"}, cells[1].id: {"state": "failed", "error": "x"},
                cells[2].id: {"state": "running"}}
    row = next(r for r in analyse(cfg, cells, [], statuses, [])["rows"] if r["method"] == "opd")
    assert row["compute"]["episodes"] == 40 and row["kl_token"]["mean"] == pytest.approx(1.0)
    assert list(row["failed"]) == [cells[1].id]
