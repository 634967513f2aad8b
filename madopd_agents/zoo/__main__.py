"""``python -m madopd_agents.zoo build <recipe> [key=value ...]`` builds a recipe of
``leaderboards/conf/zoo/``; ``python -m madopd_agents.zoo list [--json]`` shows what is built and where.

Built models are named ``<recipe>/<model>``: ``--agent <recipe>/<model>`` in the eval,
``teacher=zoo:<recipe>/<model>`` / ``student=zoo:<recipe>/<model>`` in training.
"""

from __future__ import annotations

import importlib
import json
import sys

from madopd_agents.zoo import built_models, zoo_dir

# Building trains models, which is the distillation layer's job: reached lazily, like the eval reaches agents.
BUILD = "madopd_distill.zoo.cli:build_main"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 0 if argv else 2
    if argv[0] not in ("build", "list"):
        print(f"error: unknown command {argv[0]!r}: use build <recipe> [key=value ...] or list [--json]", file=sys.stderr)
        return 2
    if argv[0] == "build":
        module, _, func = BUILD.partition(":")
        return getattr(importlib.import_module(module), func)(argv[1:])
    models = built_models()
    if "--json" in argv[1:]:
        print(json.dumps(models, indent=2))
        return 0
    if not models:
        print(f"no zoo models built yet in {zoo_dir()} (python -m madopd_agents.zoo build <recipe>)")
        return 0
    print(f"{'name':32} {'role':8} {'params':>9} {'MB':>6} {'held-out success':>17}  path")
    for name, m in sorted(models.items()):
        success = (m.get("heldout_episodes") or {}).get("success_rate")
        shown = f"{success:.2f}" if isinstance(success, (int, float)) else "-"
        print(f"{name:32} {m.get('role', '?'):8} {m.get('parameters', 0):>9,} {m.get('size_bytes', 0) / 1e6:>6.1f} "
              f"{shown:>17}  {m['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
