"""``python -m madopd_envs list [--json]``: the registry as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys

from madopd_envs.registry import registered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m madopd_envs")
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list registered environments")
    ls.add_argument("--json", action="store_true", help="print a JSON array")
    args = parser.parse_args(argv)

    rows = [
        {"id": s.id, "family": s.card.family, "splits": s.card.splits, "available": s.card.available,
         "extra": s.card.extra, "description": s.card.description}
        for s in registered()
    ]
    if args.json:
        json.dump([{k: r[k] for k in ("id", "family", "splits", "available")} for r in rows], sys.stdout, indent=1)
        print()
        return 0
    header = f"{'id':36} {'family':17} {'splits':44} {'available':9} description"
    print(header)
    print("-" * len(header))
    for r in rows:
        splits = " ".join(f"{k}={'user' if v is None else v}" for k, v in r["splits"].items())
        avail = "yes" if r["available"] else f"no: pip install 'madopd[{r['extra']}]'"
        print(f"{r['id']:36} {r['family']:17} {splits:44} {avail:9} {r['description']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
