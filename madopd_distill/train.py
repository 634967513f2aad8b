"""CLI: ``python -m madopd_distill.train [key=value ...] [--resume]`` -- on-policy distillation.

Configs are Hydra YAML in ``leaderboards/conf/distill/`` (``train.yaml``; the method group in
``method/<name>.yaml``). Examples::

    python -m madopd_distill.train env=madopd/TWX-Coin-v0 student=runs/zoo/student/model \\
        teacher=runs/zoo/teacher/model steps=20 output_dir=runs/opd-coin
    python -m madopd_distill.train method=opd method.divergence=jsd method.beta=0.5 ...
    python -m madopd_distill.train output_dir=runs/opd-coin --resume      # continue from the last checkpoint

Several processes: ``accelerate launch --num_processes 2 --cpu -m madopd_distill.train ...`` (gloo; GPUs:
``--config_file <fsdp.yaml|deepspeed_zero3.yaml>``). Each process plays its share of the step's task
groups; the loss is the global batch's (see ``madopd_distill/distributed.py``). Env workers on Ray:
``--backend ray [--ray-address HOST:PORT]`` (``workers:`` in the config).
``--profile`` prints where the time went (env, prefill, decode, teacher, loss, optimizer, I/O) at the end.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from madopd_distill.preflight import (InputError, check_env, check_method, check_model, check_eval_window, check_steps,
                                      compose, one_line, run_cli)

CONF_DIR = Path(os.environ.get("MADOPD_CONF", Path(__file__).resolve().parents[1] / "leaderboards" / "conf")) / "distill"


def normalise_argv(argv: list[str]) -> list[str]:
    """``--resume``, ``--profile``, ``--backend B``, ``--ray-address A`` are flags for people; Hydra wants ``key=value``."""
    flags = {"--backend": "workers.backend", "--ray-address": "workers.ray_address"}
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        name, eq, value = a.partition("=")
        if a == "--resume":
            out.append("resume=true")
        elif a == "--profile":  # not in the YAML: ++ adds the key
            out.append("++profile=true")
        elif name in flags and eq:
            out.append(f"{flags[name]}={value}")
        elif a in flags and i + 1 < len(argv):
            out.append(f"{flags[a]}={argv[i + 1]}")
            i += 1
        else:
            out.append(a)
        i += 1
    return out


def config_to_dict(d: dict[str, Any]) -> dict[str, Any]:
    """The composed config as :class:`TrainConfig` fields: ``method`` group -> name + args; ``teacher``
    shortcut -> a one-element ``teachers`` list."""
    d = dict(d)
    method = dict(d.pop("method") or {})
    if "name" not in method:
        raise InputError("the method config group needs a `name` (see leaderboards/conf/distill/method/)")
    d["method"] = method.pop("name")
    d["method_args"] = method
    teacher = d.pop("teacher", None)
    if teacher:
        if d.get("teachers"):
            raise InputError("give either teacher=<path> or teachers=[...], not both")
        d["teachers"] = [{"name": "teacher", "backend": "hf", "path": teacher}]
    return d


def load_config(argv: list[str]) -> Any:
    """The checked :class:`TrainConfig` of a command line; every bad input raises :class:`InputError`
    here, before any model loads: a bad key or value, an unknown env, missing weights, 0 steps,
    train and eval tasks that overlap, ``--resume`` of a run that does not exist."""
    from madopd_distill.trainer import TrainConfig

    d = config_to_dict(compose(str(CONF_DIR), "train", normalise_argv(argv)))
    try:
        cfg = TrainConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        raise InputError(one_line(e)) from None
    check_steps(cfg.steps)
    check_method(cfg.method, cfg.method_args)
    check_env(cfg.env)
    check_model("student", cfg.student)
    for t in [*cfg.teachers, *([cfg.ref_teacher] if cfg.ref_teacher else [])]:
        if t.backend in ("hf", "vllm"):
            check_model(f"teacher {t.name}", t.path)
    if cfg.eval.num_tasks:
        check_eval_window(cfg.env, cfg.env_kwargs, cfg.split, lambda ids: ids[: cfg.num_train_tasks],
                          cfg.eval.split, cfg.eval.task_ids)
    if cfg.resume and not Path(cfg.output_dir).is_dir():
        raise InputError(f"--resume: {cfg.output_dir} does not exist; nothing to resume (drop --resume to start)")
    return cfg


def main(argv: list[str] | None = None) -> None:
    from madopd_agents.openai import OpenAIError
    from madopd_distill.teachers import TeacherUnreachableError
    from madopd_envs.vector_ray import RayBackendError

    argv = sys.argv[1:] if argv is None else argv

    def run() -> None:
        from madopd_distill.trainer import train

        result = train(load_config(argv))
        before, after = result.get("eval_before"), result.get("eval_after")
        if before and after:
            print(f"eval success: before {before['eval_success_rate']:.3f} -> after {after['eval_success_rate']:.3f}")

    # Ray missing, cluster unreachable, too few CPUs, a served teacher gone: one line, exit 2, like any
    # other bad input (a served teacher's death mid-run leaves the last checkpoint: rerun with resume=true).
    run_cli(run, errors=(RayBackendError, TeacherUnreachableError, OpenAIError), argv=argv, doc=__doc__)


if __name__ == "__main__":
    main()
