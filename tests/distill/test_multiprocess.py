"""Two training processes on CPU (gloo, real torch.distributed) against one process with the same global
batch; checkpoints and --resume under two processes; the FSDP and ZeRO-3 configs through accelerate's
own launcher code.

The two-process launch: accelerate 1.15 sends ``--cpu --num_processes 2`` to its simple launcher, which
starts ONE process unless ``mpirun`` gets a hostfile (accelerate/commands/launch.py ``launch_command``).
``--multi_gpu`` with ``ACCELERATE_USE_CPU=true`` runs torchrun with 2 processes, and the Accelerator
then picks MULTI_CPU with gloo (checked below through ``num_processes`` in the logs).

Rollouts are made deterministic with ``rollout.top_p=1e-4`` (only the most likely token survives the
nucleus, whatever the random draws), so both runs play the same episodes: the tasks are drawn
globally and dealt by group. ``tasks_per_step=3`` and ``micro_batch_tokens=1`` give the processes
unequal work (2 vs 1 episodes, 2 vs 1 micro-batches): a per-process token mean, or DDP's
all-reduce in every backward, would fail this test (a wrong mean changes the gradient; per-backward
all-reduces with unequal counts hang).

Tolerance: loss and grad norm within 1e-4 relative; weights after two AdamW steps (lr 1e-3) within
1e-4 absolute, a tenth of one step's update (measured: 6e-6; float sums in another order).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runs import read_log, run_train

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

import madopd_envs  # noqa: E402

ENV = "madopd/TWX-SimonSays-v0"
REPO = Path(__file__).resolve().parents[2]
ACCEL = REPO / "leaderboards" / "conf" / "distill" / "accelerate"
pytestmark = pytest.mark.skipif(not madopd_envs.spec(ENV).card.available, reason="textworld-express not installed")


def _common(student: str, teacher: str) -> list[str]:
    return [f"env={ENV}", f"student={student}", f"teacher={teacher}", "rollout.num_envs=1",
            "rollout.tasks_per_step=3", "rollout.max_new_tokens=6", "rollout.max_env_steps=3",
            "rollout.max_invalid_actions=1", "rollout.top_p=0.0001", "optim.lr=1e-3", "micro_batch_tokens=1"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch2(args: list[str]) -> subprocess.CompletedProcess:
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1",
           "--main_process_port", str(_port()), "-m", "madopd_distill.train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=_env())


def _train_log(path: Path) -> list[dict]:
    return read_log(path, "train")


def _weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "checkpoints" / "step-000002" / "model" / "model.safetensors"))


def test_two_processes_match_one_with_the_same_global_batch_and_resume(tmp_path: Path) -> None:
    from madopd_agents.zoo import tiny_model_dir

    common = _common(str(tiny_model_dir("S", seed=0)), str(tiny_model_dir("S", seed=1)))
    two, one = tmp_path / "two", tmp_path / "one"
    # Two processes: one step, then --resume to two (the checkpoint holds both processes' RNG states).
    r = _launch2([*common, "steps=1", f"output_dir={two}"])
    assert r.returncode == 0, r.stderr[-4000:]
    assert (two / "checkpoints" / "step-000001" / "state" / "random_states_1.pkl").exists()
    r = _launch2([*common, "steps=2", f"output_dir={two}", "--resume"])
    assert r.returncode == 0, r.stderr[-4000:]
    assert "resumed from" in r.stdout + r.stderr
    # One process, the same global batch, in this process; its env workers are Ray actors when the
    # extra is installed (the backend must not change a single number).
    backend = ["--backend", "ray"] if importlib.util.find_spec("ray") else []
    run_train([*common, "steps=2", f"output_dir={one}", *backend])

    main, rank1, single = _train_log(two / "log.jsonl"), _train_log(two / "rank1" / "log.jsonl"), \
        _train_log(one / "log.jsonl")
    assert [x["step"] for x in main] == [1, 2] == [x["step"] for x in single]
    for m, r1, s in zip(main, rank1, single):
        assert m["num_processes"] == 2 and s["num_processes"] == 1
        assert m["errored"] == 0 == s["errored"]
        # different shares of the global batch: 2 + 1 episodes, unequal token counts, same total
        assert (m["samples"], r1["samples"]) == (2, 1)
        assert m["trained_tokens_local"] != r1["trained_tokens_local"]
        assert m["trained_tokens_local"] + r1["trained_tokens_local"] == m["trained_tokens"] == s["trained_tokens"]
        for key in ("loss", "grad_norm", "kl_token_mean"):
            assert m[key] == pytest.approx(s[key], rel=1e-4, abs=1e-7), key
    a, b = _weights(two), _weights(one)
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4


@pytest.mark.parametrize("name", ["fsdp.yaml", "deepspeed_zero3.yaml"])
def test_sharded_configs_load_and_validate_in_accelerate(name: str, monkeypatch) -> None:
    """accelerate parses the config as ``accelerate launch --config_file`` does, turns it into the
    launcher's environment, and builds the plugin the Accelerator would get from it."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(ACCEL / name), "-m", "madopd_distill.train"])
    args, defaults, _ = _validate_launch_command(args)
    assert args.num_processes >= 2 and args.mixed_precision == "bf16"
    if name == "fsdp.yaml":
        assert args.use_fsdp and not args.use_deepspeed
        env = prepare_multi_gpu_env(args)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.auto_wrap_policy is not None
        assert "SHARDED_STATE_DICT" in str(plugin.state_dict_type)
    else:
        assert args.use_deepspeed and not args.use_fsdp
        args.deepspeed_fields_from_accelerate_config = ",".join([*defaults.deepspeed_config, "mixed_precision"])
        _, env = prepare_deepspeed_cmd_env(args)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        plugin = DeepSpeedPlugin()
        zero = plugin.deepspeed_config["zero_optimization"]
        assert plugin.zero_stage == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
        assert plugin.deepspeed_config["gradient_clipping"] == 1.0
