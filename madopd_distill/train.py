"""CLI: ``python -m madopd_distill.train [key=value ...] [--resume]`` -- on-policy distillation.

Configs are Hydra YAML in ``leaderboards/conf/distill/`` (``train.yaml``; the method group in
``method/<name>.yaml``). Examples::

    python -m madopd_distill.train env=madopd/TWX-Coin-v0 student=runs/zoo/student/model \\
        teacher=runs/zoo/teacher/model steps=20 output_dir=runs/opd-coin
    python -m madopd_distill.train method=opd method.divergence=jsd method.beta=0.5 ...
    python -m madopd_distill.train output_dir=runs/opd-coin --resume      # continue from the last checkpoint

Multi-GPU: ``accelerate launch --config_file <fsdp.yaml|deepspeed.yaml> -m madopd_distill.train ...``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

CONF_DIR = Path(os.environ.get("MADOPD_CONF", Path(__file__).resolve().parents[1] / "leaderboards" / "conf")) / "distill"


def normalise_argv(argv: list[str]) -> list[str]:
    """``--resume`` is a flag for people; Hydra wants ``resume=true``."""
    return ["resume=true" if a == "--resume" else a for a in argv]


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

        result = train(TrainConfig.from_dict(config_to_dict(cfg)))
        before, after = result.get("eval_before"), result.get("eval_after")
        if before and after:
            print(f"eval success: before {before['eval_success_rate']:.3f} -> after {after['eval_success_rate']:.3f}")

    _run()


if __name__ == "__main__":
    main()
