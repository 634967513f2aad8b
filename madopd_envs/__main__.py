"""``python -m madopd_envs {list,check,new}``: the registry, the conformance suite, a plugin skeleton.

    python -m madopd_envs list [--json]                       # built-in and plugin envs, broken plugins
    python -m madopd_envs check <id | module:Class> [--json]  # one line per check; exit 0 only if all pass
    python -m madopd_envs new <Name> [--dir DIR]              # a package of your own that passes `check`

Exit codes: 0 fine, 1 a check failed, 2 bad arguments (unknown id, bad name...).
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any

CLASS_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # module:Class (an id has '/' and '-v<N>')


def _list(as_json: bool) -> int:
    from madopd_envs.registry import plugin_errors, registered

    specs = registered()
    rows = [{"id": s.id, "family": s.card.family, "splits": s.card.splits, "available": s.card.available,
             "package": s.package, "version": s.version, "source": s.source, "install": s.card.install_hint(),
             "description": s.card.description} for s in specs]
    broken = [{"plugin": name, "error": err} for name, err in plugin_errors().items()]
    if as_json:
        keys = ("id", "family", "splits", "available", "package", "version", "source")
        json.dump({"envs": [{k: r[k] for k in keys} for r in rows], "broken_plugins": broken}, sys.stdout, indent=1)
        print()
        return 0
    header = f"{'id':36} {'family':17} {'package':20} {'splits':44} {'available':9} description"
    print(header)
    print("-" * len(header))
    for r in rows:
        splits = " ".join(f"{k}={'user' if v is None else v}" for k, v in r["splits"].items())
        avail = "yes" if r["available"] else f"no: {r['install']}"
        package = f"{r['package']} {r['version']}".strip() or "-"
        print(f"{r['id']:36} {r['family']:17} {package:20} {splits:44} {avail:9} {r['description']}")
    for b in broken:
        print(f"broken plugin {b['plugin']}: {b['error']}")
    return 0


def _target_env(target: str, env_kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The env to check and what it is: a registered id (``module:<id>`` too) or a ``module:Class``."""
    from madopd_envs.registry import spec

    if CLASS_TARGET.match(target):
        module, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module), attr, None)
        if cls is None:
            raise LookupError(f"module {module!r} has no attribute {attr!r}")
        return cls(**env_kwargs), {"target": target, "class": target}
    s = spec(target)
    from madopd_envs.registry import make

    return make(target, **env_kwargs), {"target": target, "id": s.id, "package": s.package, "version": s.version}


def _check(target: str, as_json: bool, env_kwargs: dict[str, Any], seed: int) -> int:
    from madopd_envs.registry import MissingEngineError, UnknownEnvError
    from madopd_envs.testing import CheckResult, describe_error, run_checks

    try:
        env, what = _target_env(target, env_kwargs)
    except (UnknownEnvError, MissingEngineError, LookupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"error: cannot import {target.partition(':')[0]!r}: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the env's constructor raised: that is a failed check, not a usage error
        results = [CheckResult("make", False, describe_error(e))]
        what = {"target": target}
    else:
        results = run_checks(env, seed=seed)
    ok = all(r.passed for r in results)
    if as_json:
        json.dump({**what, "passed": ok, "checks": [r.__dict__ for r in results]}, sys.stdout, indent=1)
        print()
    else:
        for r in results:
            print(f"{'PASS' if r.passed else 'FAIL'}  {r.name:18} {r.detail}")
        failed = [r.name for r in results if not r.passed]
        print(f"{target}: {len(results) - len(failed)}/{len(results)} checks passed"
              + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 0 if ok else 1


def _new(name: str, directory: Path | None) -> int:
    from madopd_envs import scaffold

    try:
        root = scaffold.write(name, directory)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    env_id = f"{scaffold.snake(name)}/{name}-v0"
    print(f"wrote {root}/ ({', '.join(sorted(scaffold.files(name)))})")
    print(f"next: pip install -e {root} && python -m madopd_envs check {env_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m madopd_envs", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list registered environments (built-in and plugins)")
    ls.add_argument("--json", action="store_true", help="print JSON: {envs: [...], broken_plugins: [...]}")
    ck = sub.add_parser("check", help="run the conformance suite on an env; exit 0 only if every check passes")
    ck.add_argument("target", help="a registered id (madopd/TWX-Coin-v0, my_module:ns/Env-v0) or module:Class")
    ck.add_argument("--json", action="store_true", help="print JSON: {passed, checks: [{name, passed, detail}]}")
    ck.add_argument("--env-kwargs", default="{}", help='JSON keyword arguments for the env, e.g. \'{"split": "train"}\'')
    ck.add_argument("--seed", type=int, default=0)
    new = sub.add_parser("new", help="write the skeleton of an env package of your own")
    new.add_argument("name", help="the env's CamelCase name (MyBench -> id my_bench/MyBench-v0)")
    new.add_argument("--dir", type=Path, help="where to write it (default ./<snake_name>)")
    args = parser.parse_args(argv)

    if args.command == "list":
        return _list(args.json)
    if args.command == "check":
        try:
            env_kwargs = json.loads(args.env_kwargs)
        except ValueError:
            env_kwargs = None
        if not isinstance(env_kwargs, dict):
            print(f"error: --env-kwargs must be a JSON object; got {args.env_kwargs!r}", file=sys.stderr)
            return 2
        return _check(args.target, args.json, env_kwargs, args.seed)
    return _new(args.name, args.dir)


if __name__ == "__main__":
    sys.exit(main())
