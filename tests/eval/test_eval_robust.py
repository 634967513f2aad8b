"""An eval never loses a run: misbehaving agents, torn writes, full or read-only disks, bad configs, other data.

Every hard case runs for real: agent classes that raise, hang or answer garbage (``agent_helpers``), kill -9
of a writing process at random and aimed moments, a tiny tmpfs mounted for the full and read-only disks
(root only: skipped, saying so, where mounting is impossible), a Ctrl-C sent to the eval's process group.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import madopd_envs
from madopd_envs.eval.__main__ import main
from madopd_envs.eval.results import EpisodeRecord, EpisodeStore

ENV = "madopd/TWX-Coin-v0"
REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
needs_twx = pytest.mark.skipif(not madopd_envs.spec(ENV).card.available, reason="textworld-express not installed")


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _one_error_line(err: str) -> str:
    """The CLI's stderr holds exactly one error line and no traceback; returns it."""
    assert "Traceback" not in err, err
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture
def conf(tmp_path, monkeypatch) -> Path:
    """A config root with the test agents (``agent_helpers`` is importable: this folder is on sys.path)."""
    root = tmp_path / "conf"
    (root / "agent").mkdir(parents=True)
    (root / "leaderboard").mkdir()
    monkeypatch.setenv("MADOPD_CONF", str(root))
    monkeypatch.delenv("MADOPD_TEST_FIXED", raising=False)
    return root


def _planned(n: int) -> list[str]:
    """The task ids an ``--env ENV --episodes n`` eval plays, in order."""
    from madopd_envs.eval.config import select_tasks

    env = madopd_envs.make(ENV)
    try:
        return select_tasks(env.tasks("test"), n)
    finally:
        env.close()


def _card(conf: Path, name: str, backend: str, args: dict) -> None:
    (conf / "agent" / f"{name}.yaml").write_text(json.dumps({"backend": backend, "args": args}))


# -- 1. misbehaving agents --------------------------------------------------------------------------
@needs_twx
def test_agent_that_raises_or_answers_garbage_costs_one_episode(conf, tmp_path, capsys):
    tasks = _planned(6)
    behave = {tasks[0]: ["raise", -1], tasks[1]: ["none", 1], tasks[2]: ["str", -1], tasks[3]: ["int_text", 1],
              tasks[4]: ["act_none", -1]}  # tasks[5] behaves
    _card(conf, "bad", "agent_helpers:MisbehavingAgent", {"behave": behave})
    out = tmp_path / "run"
    rc = main(["--agent", "bad", "--env", ENV, "--episodes", "6", "--num-envs", "2", "--max-steps", "40",
               "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 3, err  # finished, but episodes errored: not a green run
    assert "Traceback" not in err and "3 episode(s) errored after a retry" in err and "--retry-errored" in err
    rec = {r["task_id"]: r for r in _lines(out / "episodes.jsonl")}
    assert sorted(rec) == tasks  # every episode is on disk: none dropped with its batch
    assert rec[tasks[0]]["error_kind"] == "agent raised" and "CUDA out of memory" in rec[tasks[0]]["error"]
    assert rec[tasks[2]]["error_kind"] == "agent output" and "str" in rec[tasks[2]]["error"]
    assert rec[tasks[4]]["error_kind"] == "agent output" and "NoneType" in rec[tasks[4]]["error"]
    assert all(rec[t]["attempts"] == 2 for t in (tasks[0], tasks[2], tasks[4]))  # retried once, like a dead worker
    for t, why in ((tasks[1], "NoneType"), (tasks[3], "text is int")):  # misbehaved once: the retry won
        assert rec[t]["won"] and rec[t]["error"] is None and rec[t]["attempts"] == 2 and why in rec[t]["first_error"]
    assert rec[tasks[5]]["won"] and rec[tasks[5]]["attempts"] == 1  # its batch-mates' failures did not touch it
    summary = json.loads((out / "summary.json").read_text())
    assert summary["errored"] == 3 and summary["errors"] == {"agent output": 2, "agent raised": 1}
    assert summary["success_rate"] == 1.0 and summary["overall"]["episodes"] == 3


@needs_twx
def test_hanging_agent_times_out_and_retry_errored_replays_it(conf, tmp_path, capsys, monkeypatch):
    t0, t1 = _planned(2)
    _card(conf, "hang", "agent_helpers:MisbehavingAgent", {"behave": {t0: ["hang", 1], t1: ["hang", -1]},
                                                           "hang_s": 6})
    out = tmp_path / "run"
    cmd = ["--agent", "hang", "--env", ENV, "--episodes", "2", "--num-envs", "1", "--max-steps", "40",
           "--agent-timeout", "1", "--output", str(out), "--no-progress"]
    started = time.monotonic()
    assert main(cmd) == 3
    assert time.monotonic() - started < 60  # three 1 s timeouts, not three 6 s hangs (or a stalled run)
    err = capsys.readouterr().err
    assert "1 agent timeout" in err and "Traceback" not in err
    rec = {r["task_id"]: r for r in _lines(out / "episodes.jsonl")}
    assert rec[t0]["won"] and "--agent-timeout 1 s" in rec[t0]["first_error"]
    assert rec[t1]["error_kind"] == "agent timeout" and rec[t1]["attempts"] == 2
    # The agent is fixed: --retry-errored plays the errored episode again, and only that one.
    monkeypatch.setenv("MADOPD_TEST_FIXED", "1")
    assert main(cmd + ["--resume", "--retry-errored"]) == 0
    err = capsys.readouterr().err
    assert "retrying 1 errored episode(s)" in err and "resuming: 1 of 2" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["errored"] == 0 and summary["errors"] == {} and summary["success_rate"] == 1.0
    assert len(_lines(out / "episodes.jsonl")) == 3  # the errored record stays; the replay's record wins


# -- 2. torn writes --------------------------------------------------------------------------------
def _record(i: int, chars: int = 40) -> EpisodeRecord:
    return EpisodeRecord(key=f"k{i:04d}", env="e", split="s", task_id=f"t{i}", seed=0, agent="a", family="f",
                         task="漢字テスト☕é" * (chars + 997 * i % 5000))


def test_a_record_cut_inside_a_utf8_character_is_dropped_and_cut_off(tmp_path):
    path = tmp_path / "episodes.jsonl"
    store = EpisodeStore(path)
    store.append(_record(0))
    store.append(_record(1))
    data = path.read_bytes()
    cut = data.rindex("漢".encode()) + 1  # inside the last line, inside a 3-byte character
    path.write_bytes(data[:cut])
    assert list(store.load(repair=True)) == ["k0000"]
    assert store.dropped and "UnicodeDecodeError" in store.dropped[0]
    assert path.read_bytes() == data[: data.index(b"\n") + 1]
    store.append(_record(2))  # appends go on from a clean line
    assert list(EpisodeStore(path).load()) == ["k0000", "k0002"]
    # A bad line in the middle (never written by the store, e.g. a hand edit) costs that line only.
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(lines[0] + b"\n{\"key\": \"k9\xff\n" + lines[1] + b"\n")
    assert list(store.load(repair=True)) == ["k0000", "k0002"] and len(store.dropped) == 1
    assert b"k9" not in path.read_bytes() and path.read_bytes().count(b"\n") == 2


def _writer(path: Path) -> None:  # in a forked child: resume the store and append until killed
    store = EpisodeStore(path)
    n = len(store.load(repair=True))
    while True:
        store.append(_record(n, chars=1_200_000))  # ~8 MB a line: a kill can land inside its write
        n += 1


def test_kill9_at_random_and_mid_write_moments_never_leaves_an_unreadable_store(tmp_path):
    """kill -9 a process appending non-ASCII records: after every kill the store reads back as an exact
    prefix of what was written (the cut record dropped) and appending resumes on a clean line."""
    path = tmp_path / "episodes.jsonl"
    rng = random.Random(14)
    kills = torn = mid_char = 0
    deadline = time.monotonic() + 30
    while kills < 10 or (mid_char == 0 and time.monotonic() < deadline):
        store = EpisodeStore(path)
        keys = list(store.load(repair=True))
        assert keys == [f"k{i:04d}" for i in range(len(keys))]  # nothing lost in the middle, nothing doubled
        assert not path.exists() or path.read_bytes().endswith(b"\n") or path.stat().st_size == 0
        if path.exists() and path.stat().st_size > 40_000_000:
            path.unlink()
        size = path.stat().st_size if path.exists() else 0
        pid = os.fork()
        if pid == 0:
            try:
                _writer(path)
            finally:
                os._exit(0)
        if kills % 2:  # a random moment: serialising, writing, fsyncing or repairing
            time.sleep(rng.uniform(0.0, 0.25))
        else:  # aimed: as soon as a write has begun
            until = time.monotonic() + 5
            while time.monotonic() < until and (not path.exists() or path.stat().st_size <= size):
                pass
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        kills += 1
        data = path.read_bytes() if path.exists() else b""
        if data and not data.endswith(b"\n"):
            torn += 1
            try:
                data[data.rfind(b"\n") + 1:].decode("utf-8")
            except UnicodeDecodeError:
                mid_char += 1
    assert torn and mid_char, f"{kills} kills: {torn} cut a record, {mid_char} inside a UTF-8 character"
    store = EpisodeStore(path)
    keys = list(store.load(repair=True))
    assert keys == [f"k{i:04d}" for i in range(len(keys))]
    assert all(r["task"] == _record(int(r["key"][1:]), 1_200_000).task for r in store.load().values())


# -- 3. full disk, read-only, wrong output paths ---------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path):
    """Mount a real tiny tmpfs: ``mount(size_kb, ro=False) -> Path``; unmounted afterwards."""
    mounted = []

    def mount(size_kb: int, ro: bool = False) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        opts = f"size={size_kb}k" + (",ro" if ro else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'not root'}): the full-disk and "
                        f"read-only cases need root (CI runs as root)")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(disk: Path) -> None:
    try:
        with open(disk / "filler", "wb") as fh:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
    except OSError:
        pass


def test_output_problems_fail_in_one_line_before_the_model_loads(tmp_path, tmpfs, capsys, monkeypatch):
    # student_4b has no weights here: an output error (not the weights error) proves the output came first.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    full = tmpfs(64)
    _fill(full)
    read_only = tmpfs(64, ro=True)
    cases = {a_file: "is a file", a_file / "sub" / "run": "is a file", read_only / "run": "Read-only file system",
             full / "run": "No space left on device"}
    for output, words in cases.items():
        rc = main(["--agent", "student_4b", "--env", ENV, "--episodes", "1", "--output", str(output)])
        line = _one_error_line(capsys.readouterr().err)
        assert rc == 2 and words in line and "Qwen" not in line, line
    assert sorted(p.name for p in full.iterdir()) == ["filler"]  # no probe, no temp file left behind
    assert a_file.read_text() == "not a folder"


@needs_twx
def test_disk_full_mid_run_then_resume_after_a_torn_non_ascii_write(conf, tmp_path, tmpfs, capsys, monkeypatch):
    disk = tmpfs(512)
    _card(conf, "filler", "agent_helpers:DiskFillingExpert", {"fill": str(disk / "filler"), "after": 2})
    out = disk / "run"
    cmd = ["--agent", "filler", "--env", ENV, "--episodes", "5", "--num-envs", "1", "--max-steps", "40",
           "--output", str(out), "--no-progress"]
    assert main(cmd) == 2  # the disk filled up after a few episodes
    line = _one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and "--resume" in line
    saved = _lines(out / "episodes.jsonl")  # every line on disk is whole
    assert len(saved) == 2
    assert not list(disk.rglob("*.tmp")) and not list(disk.rglob(".madopd-write-check-*"))
    assert main(cmd + ["--resume"]) == 2  # still full: one line again, not a traceback on resume
    assert "No space left on device" in _one_error_line(capsys.readouterr().err)
    assert not list(disk.rglob("*.tmp"))
    # Space is freed; meanwhile a kill -9 had cut a record inside a multi-byte character.
    (disk / "filler").unlink()
    with open(out / "episodes.jsonl", "ab") as fh:
        fh.write(f'{{"key": "{ENV}|test|{_planned(5)[-1]}|0", "task": "caf\u00e9 \u6f22'.encode()[:-1])
    monkeypatch.setenv("MADOPD_TEST_FIXED", "1")
    assert main(cmd + ["--resume"]) == 0
    err = capsys.readouterr().err
    assert "dropped an unreadable record" in err and "UnicodeDecodeError" in err and "Traceback" not in err
    records = _lines(out / "episodes.jsonl")
    assert len(records) == 5 and records[: len(saved)] == saved
    assert json.loads((out / "summary.json").read_text())["success_rate"] == 1.0


# -- 4. configuration errors: one line, exit 2 ----------------------------------------------------
def test_configuration_errors_are_one_line_with_exit_2(conf, tmp_path, capsys, monkeypatch):
    (conf / "leaderboard" / "typo.yaml").write_text("entries:\n  - {env: madopd/TWX-Coin-v0, split: tset}\n")
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "no-such-alfworld-data"))
    out = str(tmp_path / "o")
    cases = [
        (["--agent", "expert", "--env", ENV, "--agent-args", "stop=[a"], "not valid YAML"),
        (["--agent", "expert", "--env", ENV, "--agent-args", "backend=no.such.module:Cls"], "cannot be loaded"),
        (["--agent", "expert", "--leaderboard", "typo"], "has no split 'tset'; known: train, valid, test"),
        (["--agent", "expert", "--env", ENV, "--agent-args", "temprature=0.5"], "unknown key(s) temprature"),
        (["--agent", "expert", "--env", ENV, "--envs-per-worker", "0"], "--envs-per-worker must be >= 1"),
    ]
    if madopd_envs.spec("madopd/ALFWorld-v0").card.available:
        cases.append((["--agent", "expert", "--env", "madopd/ALFWorld-v0", "--split", "valid_seen"],
                      "ALFWorld data not found"))
    for argv, words in cases:
        rc = main(argv + ["--output", out, "--no-progress"])
        line = _one_error_line(capsys.readouterr().err)
        assert rc == 2 and words in line, (argv, line)
    assert not Path(out).exists()


# -- 5 and 6. official ALFWorld data: all games skipped; resume on other data ---------------------
def _official(root: Path, games: int, solvable: bool) -> Path:
    for i in range(games):
        d = root / "json_2.1.1" / "valid_seen" / f"pick_and_place_simple-Mug-None-Shelf-{i}" / "trial_T1"
        d.mkdir(parents=True)
        (d / "traj_data.json").write_text(json.dumps({"task_type": "pick_and_place_simple"}))
        (d / "game.tw-pddl").write_text(json.dumps({"solvable": True} if solvable else {"walkthrough": []}))
    return root


alfworld = pytest.mark.skipif(not madopd_envs.spec("madopd/ALFWorld-v0").card.available, reason="alfworld missing")


@alfworld
def test_official_data_whose_games_are_all_skipped_says_so_and_fails(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ALFWORLD_DATA", str(_official(tmp_path / "data", 3, solvable=False)))
    rc = main(["--agent", "expert", "--env", "madopd/ALFWorld-v0", "--split", "valid_seen", "--output",
               str(tmp_path / "o"), "--no-progress"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and "3 games skipped (3 no \"solvable\": true)" in line and "nothing can be evaluated" in line
    assert str(tmp_path / "data") in line and not (tmp_path / "o").exists()


@alfworld
def test_resume_refuses_a_different_data_source(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    out = tmp_path / "o"
    cmd = ["--agent", "random", "--env", "madopd/ALFWorld-v0", "--split", "valid_seen", "--episodes", "1",
           "--max-steps", "1", "--num-envs", "1", "--output", str(out), "--no-progress"]
    assert main(cmd) == 0
    capsys.readouterr()
    run = json.loads((out / "run.json").read_text())
    (record,) = _lines(out / "episodes.jsonl")
    assert run["sources"][0]["data"].startswith("generated games") and record["source"] == run["sources"][0]["data"]
    assert "alfworld" in run["sources"][0]["engines"]
    official = _official(tmp_path / "data", 1, solvable=True)
    monkeypatch.setenv("ALFWORLD_DATA", str(official))
    assert main(cmd + ["--resume"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "other data" in line and "generated games" in line and str(official.resolve()) in line
    assert len(_lines(out / "episodes.jsonl")) == 1  # nothing appended from the other data
    # A run.json from before sources were recorded: the records themselves are compared.
    (out / "run.json").write_text(json.dumps({k: v for k, v in run.items() if k != "sources"}))
    assert main(cmd + ["--resume"]) == 2 and "came from 'generated games" in _one_error_line(capsys.readouterr().err)
    monkeypatch.delenv("ALFWORLD_DATA")
    assert main(cmd + ["--resume"]) == 0  # the same data again: resumes (nothing left to play)


@needs_twx
def test_resume_refuses_other_weights_under_the_same_name_and_rerun_changed_replays(conf, tmp_path, capsys):
    import shutil

    from madopd_agents.zoo import tiny_model_dir, weights_fingerprint

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir("S", seed=0), model)
    (conf / "agent" / "w.yaml").write_text(json.dumps({"backend": "hf", "model": str(model),
                                                        "sampling": {"max_new_tokens": 4}}))
    out = tmp_path / "o"
    cmd = ["--agent", "w", "--env", ENV, "--episodes", "2", "--max-steps", "1", "--num-envs", "1",
           "--output", str(out), "--no-progress"]
    assert main(cmd) == 0
    first = weights_fingerprint(str(model))
    assert json.loads((out / "run.json").read_text())["agent_weights"] == first and first
    assert main(cmd + ["--resume"]) == 0  # the same weights: resumes (nothing left to play)
    records = (out / "episodes.jsonl").read_text()

    shutil.copy(tiny_model_dir("S", seed=1) / "model.safetensors", model / "model.safetensors")  # retrained
    assert weights_fingerprint(str(model)) != first
    capsys.readouterr()
    assert main(cmd + ["--resume"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "other weights" in line and str(out) in line
    assert (out / "episodes.jsonl").read_text() == records  # nothing appended, nothing lost

    assert main(cmd + ["--rerun-changed"]) == 0
    assert "playing it again" in capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["agent_weights"] == weights_fingerprint(str(model))
    assert len(_lines(out / "episodes.jsonl")) == 2
    assert json.loads((out / "summary.json").read_text())["finished_episodes"] == 2


# -- 7. gymnasium.make after a plain import -------------------------------------------------------
def test_gymnasium_make_works_after_a_plain_import():
    code = ("import gymnasium, madopd_envs\n"
            "env = gymnasium.make('madopd/TWX-Coin-v0')\n"
            "print(env.spec.max_episode_steps, env.unwrapped.max_episode_steps)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    limit = madopd_envs.spec(ENV).max_episode_steps
    assert r.stdout.split() == [str(limit), str(limit)]


# -- 8. Ctrl-C during worker start-up ---------------------------------------------------------------
def _spawned_workers(pid: int) -> list[psutil.Process]:
    out = []
    for child in psutil.Process(pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                out.append(child)
        except psutil.Error:
            pass
    return out


@needs_twx
@pytest.mark.parametrize("delay", [0.1, 0.4])
def test_ctrl_c_during_worker_start_up_prints_no_child_traceback(tmp_path, delay):
    cmd = [sys.executable, "-m", "madopd_envs.eval", "--agent", "random", "--env", ENV, "--episodes", "4",
           "--num-envs", "4", "--output", str(tmp_path / "o"), "--no-progress"]
    # Its own session: the Ctrl-C goes to the eval's whole process group, as a terminal sends it.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            start_new_session=True)
    until = time.monotonic() + 120
    while time.monotonic() < until and proc.poll() is None and not _spawned_workers(proc.pid):
        time.sleep(0.005)
    time.sleep(delay)  # workers are importing their engines
    assert proc.poll() is None, "the eval ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130 and "--resume" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
