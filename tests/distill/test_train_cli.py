"""Smoke runs of the two CLIs (in-process, through their Hydra entry points): SFT on expert
trajectories, SeqKD, and 2 steps of OPD followed by a resumed third step.

Tiny models (zoo tiny S, ~1M parameters) on TextWorldExpress SimonSays; a few seconds of compute each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runs import read_log, run_cli

ENV = "madopd/TWX-SimonSays-v0"
SMALL = "model_overrides={hidden_size:32,num_hidden_layers:1,intermediate_size:64,num_attention_heads:2," \
        "num_key_value_heads:1,head_dim:16}"


run, log = run_cli, read_log


@pytest.fixture(scope="module")
def teacher_dir() -> str:
    from madopd_agents.zoo import tiny_model_dir

    return str(tiny_model_dir("S", seed=1))


def test_sft_on_expert_trajectories_then_seqkd(tmp_path: Path, teacher_dir: str) -> None:
    out = tmp_path / "sft"
    run("madopd_distill.sft", [f"env={ENV}", "model=new:S", f"tokenizer={teacher_dir}", SMALL, "episodes=3", "epochs=2",
                               "batch_samples=4", "num_envs=1", "max_env_steps=4", f"output_dir={out}"])
    records = log(out)
    data = records[0]
    assert data["kind"] == "data" and data["data_success_rate"] == 1.0 and data["samples"] >= 3
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) >= 2 and all(r["loss"] > 0 for r in train)
    assert (out / "model" / "config.json").exists() and (out / "model" / "tokenizer.json").exists()

    kd = tmp_path / "seqkd"
    run("madopd_distill.sft", [f"env={ENV}", "data=teacher", f"teacher={out / 'model'}", "only_won=false",
                               "model=new:S", f"tokenizer={teacher_dir}", SMALL, "episodes=2", "epochs=1",
                               "num_envs=1", "max_env_steps=2", "max_new_tokens=6", f"output_dir={kd}"])
    records = log(kd)
    assert records[0]["samples"] >= 2 and any(r["kind"] == "train" for r in records)
    with pytest.raises(ValueError, match="teacher"):
        from madopd_distill.sft import SFTConfig

        SFTConfig(env=ENV, model="new:S", data="teacher")


def test_train_two_steps_then_resume(tmp_path: Path, teacher_dir: str) -> None:
    from madopd_agents.zoo import tiny_model_dir

    out = tmp_path / "opd"
    common = [f"env={ENV}", f"student={tiny_model_dir('S', seed=0)}", f"teacher={teacher_dir}",
              "rollout.num_envs=1", "rollout.tasks_per_step=2", "rollout.group_size=1", "rollout.max_new_tokens=6",
              "rollout.max_env_steps=2", "optim.lr=1e-3", "eval.num_tasks=1", f"output_dir={out}"]
    run("madopd_distill.train", [*common, "steps=2"])
    train = [r for r in log(out) if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    for r in train:
        for key in ("loss", "kl_token_mean", "kl_trajectory_mean", "success_rate", "tokens_per_s",
                    "rollout_tokens_per_s", "trained_tokens"):
            assert key in r, key
        assert r["trained_tokens"] > 0 and r["loss"] > 0
        # trajectory KL sums a trajectory's token KLs: at least one token's worth, same sign
        assert abs(r["kl_trajectory_mean"]) >= abs(r["kl_token_mean"]) * 0.999
    ckpt = out / "checkpoints"
    assert (ckpt / "latest").read_text() == "step-000002"
    assert (ckpt / "step-000002" / "model" / "config.json").exists()
    assert not list(ckpt.glob(".tmp-*"))
    evals = [r for r in log(out) if r["kind"] == "eval"]
    assert [e["when"] for e in evals] == ["before", "after"]

    run("madopd_distill.train", [*common, "steps=3", "--resume"])
    records = log(out)
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]
    assert (ckpt / "latest").read_text() == "step-000003"
    assert json.loads((ckpt / "step-000003" / "trainer_state.json").read_text())["step"] == 3


def test_config_errors_are_clear() -> None:
    from madopd_distill.methods import UnknownMethodError, method_class
    from madopd_distill.trainer import TrainConfig

    with pytest.raises(UnknownMethodError, match="Did you mean 'opd'"):
        method_class("opdd")
    with pytest.raises(ValueError, match="unknown key"):
        TrainConfig.from_dict({"env": ENV, "student": "x", "teachers": [{"path": "y"}], "stepz": 3})
    with pytest.raises(ValueError, match="backend"):
        TrainConfig.from_dict({"env": ENV, "student": "x", "teachers": [{"path": "y", "backend": "tgi"}]})
    from madopd_distill.methods.opd import OPDConfig

    with pytest.raises(ValueError, match="beta"):
        OPDConfig(beta=2.0)
    with pytest.raises(ValueError, match="no field"):
        OPDConfig.from_dict({"betta": 0.5})


def test_eval_task_window() -> None:
    from madopd_distill.trainer import EvalConfig

    ids = [f"train-{i}" for i in range(6)]
    assert EvalConfig(num_tasks=2, first_task=3).task_ids(ids) == ["train-3", "train-4"]
    assert EvalConfig(num_tasks=0).task_ids(ids) == []
    with pytest.raises(ValueError, match="has 6 tasks"):
        EvalConfig(num_tasks=5, first_task=3).task_ids(ids)
    with pytest.raises(ValueError, match=">= 0"):
        EvalConfig(first_task=-1)


def test_probe_curves_are_measured_on_one_fixed_state_set(tmp_path: Path, teacher_dir: str) -> None:
    """``eval.probe_states``: the reference teacher's own states, collected once. A student that *is* the
    teacher agrees on every state with KL 0 (a wrong shift or template would not); training toward another
    teacher moves it off."""
    from madopd_agents.zoo import tiny_model_dir

    out = tmp_path / "probe"
    ref = f"ref_teacher={{name:ref,path:{teacher_dir}}}"
    run("madopd_distill.train", [f"env={ENV}", f"student={teacher_dir}", f"teacher={tiny_model_dir('S', seed=2)}", ref,
                                 "rollout.num_envs=1", "rollout.tasks_per_step=2", "rollout.max_new_tokens=6",
                                 "rollout.max_env_steps=2", "optim.lr=1e-2",
                                 "num_train_tasks=50",
                                 "eval.split=train", "eval.first_task=900", "eval.num_tasks=2", "eval.every=1",
                                 "eval.probe_states=3", "steps=2", f"output_dir={out}"])
    evals = [r for r in log(out) if r["kind"] == "eval"]
    assert [e["when"] for e in evals] == ["before", "step1", "after"]
    assert all(e["probe/states"] == 3 for e in evals)  # the same set at every eval
    assert evals[0]["probe/agreement"] == 1.0 and evals[0]["probe/kl_token"] == pytest.approx(0.0, abs=1e-6)
    assert evals[-1]["probe/kl_token"] > 1e-3
