"""CodeIO: write ``main_solution`` from a description and an input/output spec (reasoning-gym's rows).

``reasoning-gym`` (Apache-2.0) ships ``reasoning_gym/data/codeio.jsonl.gz``: 3002 rows with a
``task_description``, an ``input_output_spec``, a reference ``code_sample`` defining
``main_solution`` and an ``input_generator`` (``generate_inputs(rng) -> kwargs``). A row becomes a
code task: the agent writes ``main_solution``; the tests are the reference's outputs on ``CASES``
inputs drawn from the row's generator with fixed seeds, compared with a float tolerance. The
expected outputs are computed *in the sandbox* (dataset code runs contained too) the first time a
task is used, then cached in memory.

Rows used are listed in ``data/codeio_index.json``, made by ``python -m madopd_envs.code.codeio``:
rows whose reference and generator import only the standard library (the sandbox's interpreter has
no numpy) and no process/thread/socket module, whose generator does no file I/O, and that gave the
same >= 3 usable cases, each within 1 s, in two sandbox runs with different seeds of the ``random``
module (so outputs do not depend on it). Every tenth listed row is in ``test``, the others in
``train``. The data file is read directly; ``reasoning_gym`` itself (and its dependencies) is
never imported.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import importlib.util
import json
import re
import sys
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from madopd_envs.code.sandbox import Limits, Sandbox, SandboxUnavailable
from madopd_envs.code.tasks import CodeTask

FILE_IO = re.compile(r"open\(|\.write|\bos\.|Path\(|shutil|tempfile")
INDEX = Path(__file__).with_name("data") / "codeio_index.json"
CASES = 5
MIN_CASES = 3
MAX_CASE_CHARS = 4000  # repr of one case's inputs + output
# References importing these are skipped; other sources of nondeterminism (the clock, `random`) are
# caught by the index build, which runs each row twice with different module-level random seeds.
NONDETERMINISTIC = {"secrets", "uuid", "subprocess", "socket", "threading", "multiprocessing", "tempfile",
                    "shutil", "signal", "asyncio"}
# Computing a task's expected outputs at first use: generous, so a loaded machine still makes them.
CASE_LIMITS = Limits(timeout_s=20.0, test_timeout_s=5.0, cpu_s=20)
# Building the index: strict, so only references that run fast (well within an agent's 3 s per test) are kept.
INDEX_LIMITS = Limits(timeout_s=10.0, test_timeout_s=1.0, cpu_s=10)

CLOSE = '''import math


def _close(a, b):
    """Equal, floats within 1e-6 relative (1e-9 absolute); lists and tuples alike (JSON-style data)."""
    if isinstance(b, float) or (isinstance(a, float) and isinstance(b, int) and not isinstance(b, bool)):
        return isinstance(a, (int, float)) and not isinstance(a, bool) and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in b)
    return a == b
'''

CASE_HELPER = '''

def _madopd_case(seed):
    import copy
    import random
    inputs = generate_inputs(random.Random(seed))
    return inputs, main_solution(**copy.deepcopy(inputs))
'''


def data_file() -> Path:
    """reasoning-gym's ``codeio.jsonl.gz``, located without importing the package."""
    spec = importlib.util.find_spec("reasoning_gym")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("CodeIO needs the reasoning-gym package: pip install 'madopd[code]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "codeio.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"reasoning-gym is installed but {path} is missing")
    return path


@lru_cache(maxsize=1)
def _lines() -> tuple[str, ...]:
    with gzip.open(data_file(), "rt", encoding="utf-8") as f:
        return tuple(line for line in f if line.strip())


@lru_cache(maxsize=None)
def source_row(i: int) -> dict[str, Any]:
    """Row ``i`` of the source, parsed on first use (parsing all 3002 takes seconds)."""
    return json.loads(_lines()[i])


def n_rows() -> int:
    return len(_lines())


@lru_cache(maxsize=1)
def index() -> tuple[int, ...]:
    with open(INDEX, encoding="utf-8") as f:
        return tuple(json.load(f)["rows"])


def split_of(row: int) -> str:
    return "test" if index().index(row) % 10 == 0 else "train"


def task_ids(split: str) -> list[str]:
    return [f"codeio/{r}" for i, r in enumerate(index()) if ("test" if i % 10 == 0 else "train") == split]


def _imports(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def usable(row: dict[str, Any]) -> bool:
    """Standard library only, a reference that imports nothing nondeterministic, and a generator
    without file I/O (some write the file the reference then reads: the agent's tests would lack it)."""
    try:
        ref, gen = _imports(row["code_sample"]), _imports(row["input_generator"])
    except SyntaxError:
        return False
    std = set(sys.stdlib_module_names)
    return (ref | gen) <= std and not ref & NONDETERMINISTIC and not FILE_IO.search(row["input_generator"])


def _roundtrips(value: Any) -> bool:
    try:
        return ast.literal_eval(repr(value)) == value
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return False


def compute_cases(sandbox: Sandbox, row: dict[str, Any], seed_base: int, module_seed: int = 0,
                  limits: Limits = CASE_LIMITS) -> list[tuple[dict, Any]]:
    """Run the row's generator and reference in the sandbox; the cases that can become test source.

    Inputs come from ``generate_inputs(Random(seed_base + i))``; ``module_seed`` seeds the ``random``
    module the reference may use (outputs that depend on it are not a fair test)."""
    program = (f"import random\nrandom.seed({module_seed})\nfrom random import Random\n\n" + row["code_sample"] + "\n\n"
               + row["input_generator"] + CASE_HELPER)
    items = [("value", f"_madopd_case({seed_base + i})") for i in range(CASES)]
    result = sandbox.run(program, "", items, entry_point="_madopd_case", limits=limits)
    cases = []
    for ok, value in result.values:
        if not ok or not (isinstance(value, tuple) and len(value) == 2):
            continue
        inputs, output = value
        if (isinstance(inputs, dict) and all(isinstance(k, str) and k.isidentifier() for k in inputs)
                and _roundtrips(inputs) and _roundtrips(output) and len(repr(inputs)) + len(repr(output)) <= MAX_CASE_CHARS):
            cases.append((inputs, output))
    return cases


def _signature(code: str) -> str:
    for node in ast.parse(code).body:
        if isinstance(node, ast.FunctionDef) and node.name == "main_solution":
            return f"main_solution({', '.join(a.arg for a in node.args.args)})"
    return "main_solution(...)"


def make_task(row_index: int, cases: list[tuple[dict, Any]]) -> CodeTask:
    row = source_row(row_index)
    prompt = (f"{row['task_description'].strip()}\n\n{row['input_output_spec'].strip()}\n\n"
              f"Write the function `{_signature(row['code_sample'])}` (Python standard library only).")
    return CodeTask(
        task_id=f"codeio/{row_index}",
        split=split_of(row_index),
        prompt=prompt,
        entry_point="main_solution",
        context=CLOSE,
        items=tuple(("test", f"assert _close(candidate(**{inputs!r}), {output!r})") for inputs, output in cases),
        reference=row["code_sample"],
    )


_built: dict[int, CodeTask] = {}
_lock = threading.Lock()


def task(sandbox: Sandbox, task_id: str) -> CodeTask:
    """The task ``codeio/<row>``, its expected outputs computed in ``sandbox`` on first use."""
    prefix, _, num = task_id.partition("/")
    if prefix != "codeio" or not num.isdigit() or int(num) not in index():
        raise KeyError(f"no CodeIO task {task_id!r} (ids are codeio/<row> for the rows in {INDEX.name})")
    row_index = int(num)
    with _lock:
        if row_index in _built:
            return _built[row_index]
    cases = compute_cases(sandbox, source_row(row_index), seed_base=1000 * row_index)
    if len(cases) < MIN_CASES:
        raise RuntimeError(f"{task_id}: the reference gave {len(cases)} usable cases here (the index was built "
                           f"with >= {MIN_CASES}); rebuild it with `python -m madopd_envs.code.codeio`")
    built = make_task(row_index, cases)
    with _lock:
        _built[row_index] = built
    return built


def build_index(workers: int) -> dict[str, Any]:
    """Keep the usable rows whose cases are reproducible (two sandbox runs agree) and numerous enough."""
    try:
        sandbox = Sandbox()  # never unsafe: building the index runs dataset code
    except SandboxUnavailable as e:
        raise SystemExit(str(e)) from None
    candidates = [i for i in range(n_rows()) if usable(source_row(i))]
    from concurrent.futures import ThreadPoolExecutor

    def check(i: int) -> bool:
        first = compute_cases(sandbox, source_row(i), 1000 * i, limits=INDEX_LIMITS)
        return len(first) >= MIN_CASES and \
            compute_cases(sandbox, source_row(i), 1000 * i, module_seed=1, limits=INDEX_LIMITS) == first

    with ThreadPoolExecutor(workers) as pool:
        keep = [i for i, ok in zip(candidates, pool.map(check, candidates)) if ok]
    return {"source": "reasoning-gym codeio.jsonl.gz", "rows_in_source": n_rows(),
            "stdlib_deterministic_candidates": len(candidates), "cases_per_task": CASES, "rows": keep}


def main() -> None:
    ap = argparse.ArgumentParser(description="Build madopd's CodeIO index (runs every candidate row twice in the sandbox).")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--output", default=str(INDEX))
    args = ap.parse_args()
    result = build_index(args.workers)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(result, f)
        f.write("\n")
    print(f"kept {len(result['rows'])} of {result['stdlib_deterministic_candidates']} candidate rows "
          f"({result['rows_in_source']} in the source) -> {args.output}")


if __name__ == "__main__":
    main()
