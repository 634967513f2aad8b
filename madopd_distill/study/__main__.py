"""CLI: ``python -m madopd_distill.study study=<name> [key=value ...] [--cells P,...] [--jobs N]``.

    python -m madopd_distill.study study=simonsays                      # run (or resume) the whole study
    python -m madopd_distill.study study=simonsays --cells 'opd-*,tcod-s0' --jobs 2
    python -m madopd_distill.study study=simonsays seeds=[0,1,2,3] budget.steps=200
    python -m madopd_distill.study study=path/to/my_study.yaml --no-eval
    python -m madopd_distill.study study=simonsays --publish opd-s0,mad_opd-s0   # students into the zoo

Rerunning the same command resumes: finished cells are skipped, a cut cell continues from its last
checkpoint, failed cells are retried. Exit codes: 0 every cell and eval done, 1 some failed (the
results of the others are written), 2 bad input (one line, before any model is loaded), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

CONF_DIR = Path(os.environ.get("MADOPD_STUDY_CONF", Path(__file__).resolve().parents[2] / "leaderboards" / "conf"
                               / "study"))


def parse(argv: list[str]) -> tuple[argparse.Namespace, str, list[str]]:
    p = argparse.ArgumentParser(prog="python -m madopd_distill.study", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="study=<name or file.yaml> and key=value overrides")
    p.add_argument("--cells", default="", help="comma-separated cell ids or patterns (opd-*, *-s0); default all")
    p.add_argument("--jobs", type=int, default=1, help="cells run side by side, one torch thread each (default 1)")
    p.add_argument("--no-eval", action="store_true", help="train only (evaluate and write results later)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--publish", default="", metavar="CELLS",
                   help="after the results: copy these cells' students into the committed zoo "
                        "(leaderboards/zoo/<recipe>/student_<method>, e.g. --publish opd-s0,mad_opd-s0)")
    args = p.parse_args(argv)
    study = [o for o in args.overrides if o.startswith("study=")]
    if len(study) != 1:
        p.error("name the study once: study=<name> (a file in leaderboards/conf/study/) or study=<file.yaml>")
    return args, study[0].split("=", 1)[1], [o for o in args.overrides if not o.startswith("study=")]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, name, overrides = parse(argv)
    command = "python -m madopd_distill.study " + shlex.join(argv)
    from madopd_distill.study.config import StudyError, build_cells, load_study, select_cells, validate

    log = lambda m: print(f"[study] {m}", file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    try:
        if args.jobs < 1:
            raise StudyError("--jobs must be >= 1")
        cfg = load_study(name, overrides, CONF_DIR)
        cells = build_cells(cfg)
        train_ids, eval_ids = validate(cfg, cells)
        chosen = select_cells(cells, [c for c in args.cells.split(",") if c])
        published = select_cells(cells, [c for c in args.publish.split(",") if c]) if args.publish else []
        if args.publish and args.no_eval:
            raise StudyError("--publish records held-out figures on the cards: drop --no-eval")
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from madopd_distill.study import results, runner

    if args.jobs > (os.cpu_count() or 1):
        log(f"warning: --jobs {args.jobs} exceeds the {os.cpu_count()} cores; cells will slow each other down")

    log(f"{cfg.name}: {len(cells)} cells ({len(cfg.methods)} methods x {len(cfg.seeds)} seeds), "
        f"{len(train_ids)} train / {len(eval_ids)} held-out tasks; work in {cfg.work_dir}, results in {cfg.output_dir}")
    try:
        statuses = runner.train_cells(cfg, chosen, len(train_ids), args.jobs, not args.no_progress, log)
        statuses = {c.id: runner.read_json(runner.cell_dir(cfg, c) / "status.json") or
                    {"state": runner.cell_state(cfg, c)} for c in cells}
        if args.no_eval:
            return 0
        agents = runner.eval_agents(cfg, cells, statuses)
        errors = runner.evaluate_all(cfg, eval_ids, agents, args.jobs, log)
        study = results.write_results(cfg, cells, agents, statuses, eval_ids, command, time.perf_counter() - t0, errors)
        for path in runner.publish(cfg, published, study, CONF_DIR.parent.parent / "zoo"):
            log(f"published {path}")
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished cells and checkpoints are kept; rerun the same command to resume",
              file=sys.stderr)
        return 130
    failed = [c["id"] for c in study["cells"] if c.get("state") == "failed"]
    log(f"wrote {Path(cfg.output_dir) / 'results.md'} and study.json"
        + (f"; {len(failed)} cell(s) failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
