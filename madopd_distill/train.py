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


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The Hydra config as :class:`TrainConfig` fields: ``method`` group -> name + args; ``teacher``
    shortcut -> a one-element ``teachers`` list."""
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(cfg, resolve=True)
    d.pop("hydra", None)
    method = dict(d.pop("method") or {})
    if "name" not in method:
        raise ValueError("the method config group needs a `name` (see leaderboards/conf/distill/method/)")
    d["method"] = method.pop("name")
    d["method_args"] = method
    teacher = d.pop("teacher", None)
    if teacher:
        if d.get("teachers"):
            raise ValueError("give either teacher=<path> or teachers=[...], not both")
        d["teachers"] = [{"name": "teacher", "backend": "hf", "path": teacher}]
    return d


def main() -> None:
    import hydra

    sys.argv = normalise_argv(sys.argv)

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
    def _run(cfg: Any) -> None:
        from madopd_distill.trainer import TrainConfig, train

        from madopd_envs.vector_ray import RayBackendError

        try:
            result = train(TrainConfig.from_dict(config_to_dict(cfg)))
        except RayBackendError as e:  # Ray missing, cluster unreachable, too few CPUs: one line, exit 2
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        before, after = result.get("eval_before"), result.get("eval_after")
        if before and after:
            print(f"eval success: before {before['eval_success_rate']:.3f} -> after {after['eval_success_rate']:.3f}")

    _run()


if __name__ == "__main__":
    main()
