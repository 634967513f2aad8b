"""``--profile`` on the training CLI: one OPD step's time split into env, prefill, decode, teacher,
loss, optimizer and I/O, printed and logged (tiny models on TextWorldExpress SimonSays)."""

from __future__ import annotations

import re
from pathlib import Path

from cli_runs import read_log, run_train


def test_train_profile_prints_and_logs_the_phases(tmp_path: Path, capsys) -> None:
    from madopd_agents.zoo import tiny_model_dir
    out = tmp_path / "opd"
    argv = ["env=madopd/TWX-SimonSays-v0", f"student={tiny_model_dir('S', seed=0)}",
            f"teacher={tiny_model_dir('S', seed=1)}", "rollout.num_envs=1", "rollout.tasks_per_step=1",
            "rollout.group_size=1", "rollout.max_new_tokens=4", "rollout.max_env_steps=2", "eval.num_tasks=0",
            "steps=1", f"output_dir={out}", "--profile"]
    run_train(argv)
    text = capsys.readouterr().out.split("where the time went")[1]
    phases = {m[1]: float(m[2]) for m in re.finditer(r"^\| ([^|*]+?) \| ([0-9.]+) \|", text, re.M)}
    for name in ("env", "prefill", "decode", "teacher", "loss (student fwd+bwd)", "optimizer", "I/O (log)",
                 "I/O (checkpoints)"):
        assert name in phases, (name, text)
    assert phases["decode"] > 0 and phases["loss (student fwd+bwd)"] > 0
    record = read_log(out, "train")[-1]
    for key in ("time_env_s", "time_prefill_s", "time_decode_s", "time_rollout_other_s", "time_teacher_s",
                "time_loss_s", "time_optimizer_s"):
        assert record[key] >= 0, key
    assert record["time_prefill_s"] + record["time_decode_s"] + record["time_env_s"] <= record["time_rollout_s"] + 1e-6
