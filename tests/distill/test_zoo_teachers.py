"""The committed zoo teachers make each method's mechanism actually run (issue: MAD-OPD silently
became MT-OPD with uniform weights when teachers could not debate).

Uses the simonsays recipe's models committed under ``leaderboards/zoo/`` (built by
``python -m madopd_agents.zoo build simonsays``): two-step trainings that must show confidence tags
parsed, weights that differ across states, a mix of SAGE judgements, and OmniOPD driven by a teacher
served as a text-only OpenAI-compatible endpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

from cli_runs import read_log, run_train
from served import served_model

REPO = Path(__file__).resolve().parents[2]
ZOO = REPO / "leaderboards" / "zoo" / "simonsays"
COMMON = ["env=madopd/TWX-SimonSays-v0", "prompt={show_actions:false,history:0}", "student=zoo:simonsays/student",
          "steps=2", "rollout.num_envs=2", "rollout.tasks_per_step=6", "rollout.max_new_tokens=24",
          "rollout.max_env_steps=6", "num_train_tasks=400", "micro_batch_tokens=8192"]
TEACHERS = "teachers=[{name:teacher_a,path:'zoo:simonsays/teacher_a'},{name:teacher_b,path:'zoo:simonsays/teacher_b'}]"


def two_steps(args: list[str], out: Path) -> list[dict]:
    run_train([*COMMON, *args, f"output_dir={out}"])
    steps = read_log(out, "train")
    assert [r["step"] for r in steps] == [1, 2]
    return steps


def test_the_zoo_is_committed_with_cards() -> None:
    for name in ("teacher", "teacher_a", "teacher_b", "student"):
        card = json.loads((ZOO / name / "card.json").read_text())
        assert (ZOO / name / "model.safetensors").is_file() and card["command"].startswith("python -m madopd_agents.zoo")


def test_mad_opd_debates_with_tags_and_state_dependent_weights(tmp_path: Path) -> None:
    steps = two_steps(["method=mad_opd", TEACHERS], tmp_path / "mad")
    assert min(r["mad/tags_found"] for r in steps) >= 0.95
    assert max(r["mad/weight_std/teacher_a"] for r in steps) > 0.01  # not the uniform fallback


def test_sage_judge_gives_a_mix_of_levels(tmp_path: Path) -> None:
    # teacher_b plays (right on half the kinds): teacher_a's judgements must tell its good turns from its bad ones
    steps = two_steps(["method=sage", "teacher=zoo:simonsays/teacher_a", "method.levels=three",
                       "student=zoo:simonsays/teacher_b"], tmp_path / "sage")
    judged = sum(r["sage/judged_turns"] for r in steps)
    unparsed = sum(r["sage/unparsed"] for r in steps)
    assert judged > 0 and unparsed / judged <= 0.05
    shares = {lvl: sum(r[f"sage/{lvl}_frac"] * r["sage/judged_turns"] for r in steps) for lvl in ("skip", "weak", "strong")}
    assert sum(v > 0 for v in shares.values()) >= 2, shares


def test_omni_with_a_served_black_box_zoo_teacher(tmp_path: Path) -> None:
    from madopd_agents.zoo import resolve_model

    with served_model(str(resolve_model("zoo:simonsays/teacher_b")), "teacher_b") as base:
        steps = two_steps(["method=omni", "teachers=[{name:anchor,path:'zoo:simonsays/student'},{name:writer,backend:openai,"
                           f"base_url:'{base}',model:teacher_b,text_only:true}}]", "method.teacher=writer",
                           "method.chunk_tokens=4", "method.num_continuations=2", "method.fork_quantile=0.5"],
                          tmp_path / "omni")
    assert sum(r["omni/forks"] for r in steps) > 0
    assert all(r["omni/continuations"] == 2 * r["omni/forks"] for r in steps)
