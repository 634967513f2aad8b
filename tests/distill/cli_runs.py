"""Running the training CLIs in this interpreter (through their Hydra entry points) and reading their logs."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path


def run_cli(module: str, argv: list[str]) -> None:
    """``python -m <module> <argv>``, in-process."""
    mod = importlib.import_module(module)
    old, sys.argv = sys.argv, [module, *argv]
    try:
        mod.main()
    finally:
        sys.argv = old


def run_train(argv: list[str]) -> None:
    run_cli("madopd_distill.train", argv)


def read_log(path: Path, kind: str | None = None) -> list[dict]:
    """The records of ``log.jsonl`` (``path`` is the file or its run folder), optionally of one ``kind``."""
    path = path / "log.jsonl" if path.is_dir() else path
    records = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]
