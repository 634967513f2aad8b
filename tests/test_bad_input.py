"""Every entry point answers bad input with one ``error:`` line and a non-zero exit, no traceback.

One table for every CLI (eval, study, zoo, train, sft, envs check/new, serve, report). Each case runs
the CLI's ``main`` in this process (fast: the imports are shared) and must be refused before it does
any work; two cases also run as real ``python -m`` processes, so the exit code the shell sees and the
absence of Hydra's error wrapper are checked end to end.
"""

from __future__ import annotations

import importlib
import socket
import subprocess
import sys

import pytest

ENV = "madopd/TWX-Coin-v0"
TINY = ["student=zoo:tiny-S", "teacher=zoo:tiny-S"]


def _taken_port() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, s.getsockname()[1]


# (entry point module, argv, expected exit code, a fragment of the error line)
CASES = [
    # eval
    ("madopd_envs.eval", ["--agent", "nope", "--env", ENV], 2, "nope"),
    ("madopd_envs.eval", ["--agent", "random", "--env", "madopd/TWX-Nope-v0"], 2, "TWX-Nope-v0"),
    ("madopd_envs.eval", ["--agent", "random", "--env", ENV, "--seed", "-1"], 2, "--seed must be >= 0"),
    ("madopd_envs.eval", ["--agent", "random", "--env", ENV, "--num-envs", "0"], 2, "--num-envs"),
    ("madopd_envs.eval", ["--agent", "random", "--env", ENV, "--episodes", "0"], 2, "--episodes"),
    ("madopd_envs.eval", ["--agent", "random", "--env", ENV, "--step-timeout", "0"], 2, "--step-timeout"),
    ("madopd_envs.eval", ["--agent", "random", "--env", ENV, "--split", "nope"], 2, "no split 'nope'"),
    ("madopd_envs.eval", ["--agent", "random", "--leaderboard", "nope"], 2, "nope"),
    ("madopd_envs.eval", ["--agent", "random"], 2, "--leaderboard"),
    ("madopd_envs.eval", ["--agent", "random", "--env", ENV, "--ray-address", "127.0.0.1:1"], 2, "ray"),
    ("madopd_envs.eval", ["--agent", "/nonexistent/model", "--env", ENV], 2, "/nonexistent/model"),
    ("madopd_envs.eval", ["--agent", "random", "--env", ENV, "--agent-args", "novalue"], 2, "novalue"),
    ("madopd_envs.eval", ["--agent", "random", "--env", ENV, "--episodes", "abc"], 2, "invalid int value"),
    # study
    ("madopd_distill.study", [], 2, "study=<name>"),
    ("madopd_distill.study", ["study=nope"], 2, "nope"),
    ("madopd_distill.study", ["study=smoke", "--jobs", "0"], 2, "--jobs"),
    ("madopd_distill.study", ["study=smoke", "seeds=[]"], 2, "seed"),
    ("madopd_distill.study", ["study=smoke", "seeds=[0,0]"], 2, "repeats"),
    ("madopd_distill.study", ["study=smoke", "foo=1"], 2, "foo"),
    ("madopd_distill.study", ["study=smoke", "eval.first_task=0"], 2, "overlap"),
    ("madopd_distill.study", ["study=smoke", "--cells", "nomatch"], 2, "matches no cell"),
    ("madopd_distill.study", ["study=smoke", "checkpoint_every=0"], 2, "checkpoint_every"),
    ("madopd_distill.study", ["study=smoke", "student=/nonexistent/model"], 2, "/nonexistent/model"),
    # zoo
    ("madopd_agents.zoo", ["frobnicate"], 2, "frobnicate"),
    ("madopd_agents.zoo", ["build", "nope"], 2, "nope"),
    ("madopd_agents.zoo", ["build", "simonsays", "foo=1"], 2, "foo"),
    ("madopd_agents.zoo", ["build", "simonsays", "env=madopd/TWX-Nope-v0"], 2, "TWX-Nope-v0"),
    # train (Hydra config; every refusal comes before a model loads)
    ("madopd_distill.train", ["student=/nonexistent/model", "teacher=zoo:tiny-S"], 2, "/nonexistent/model"),
    ("madopd_distill.train", ["student=zoo:tiny-S", "teacher=/nonexistent/t"], 2, "/nonexistent/t"),
    ("madopd_distill.train", [*TINY, "steps=abc"], 2, "steps must be an int"),
    ("madopd_distill.train", [*TINY, "optim.lr=fast"], 2, "lr must be a float"),
    ("madopd_distill.train", [*TINY, "env=madopd/TWX-Nope-v0"], 2, "TWX-Nope-v0"),
    ("madopd_distill.train", [*TINY, "output_dir=/nonexistent/run", "--resume"], 2, "nothing to resume"),
    ("madopd_distill.train", [*TINY, "steps=0"], 2, "0 steps"),
    ("madopd_distill.train", [*TINY, "num_train_tasks=950", "eval.split=train", "eval.first_task=900",
                              "eval.num_tasks=10"], 2, "overlap"),
    ("madopd_distill.train", [*TINY, "eval.split=train", "eval.first_task=100000", "eval.num_tasks=10"], 2, "tasks"),
    ("madopd_distill.train", [*TINY, "foo=1"], 2, "foo"),
    ("madopd_distill.train", [*TINY, "steps=["], 2, "steps"),
    ("madopd_distill.train", ["teacher=zoo:tiny-S"], 2, "student is required"),
    ("madopd_distill.train", [*TINY, "method=nope"], 2, "nope"),
    ("madopd_distill.train", [*TINY, "method.divergence=nope"], 2, "nope"),
    ("madopd_distill.train", [*TINY, "rollout.backend=nope"], 2, "rollout.backend"),
    ("madopd_distill.train", [*TINY, "workers.backend=nope"], 2, "workers.backend"),
    # sft
    ("madopd_distill.sft", ["env=madopd/TWX-Nope-v0", "model=new:S"], 2, "TWX-Nope-v0"),
    ("madopd_distill.sft", [f"env={ENV}"], 2, "model is required"),
    ("madopd_distill.sft", [f"env={ENV}", "model=/nonexistent/model"], 2, "/nonexistent/model"),
    ("madopd_distill.sft", [f"env={ENV}", "model=new:S", "epochs=abc"], 2, "epochs must be an int"),
    ("madopd_distill.sft", [f"env={ENV}", "model=new:S", "data=bogus"], 2, "data must be"),
    # envs check / new
    ("madopd_envs", ["check", "madopd/TWX-Nope-v0"], 2, "TWX-Nope-v0"),
    ("madopd_envs", ["check", ENV, "--env-kwargs", "[1]"], 2, "--env-kwargs"),
    ("madopd_envs", ["new", "lowercase"], 2, "CamelCase"),
    ("madopd_envs", ["new", "Class"], 2, "keyword"),
    ("madopd_envs", ["new", "MyBench", "--dir", "/etc/passwd/x"], 2, "/etc/passwd/x"),
    ("madopd_envs", ["frobnicate"], 2, "frobnicate"),
    # serve: checked before the model loads
    ("madopd_agents.serve", ["--model", "zoo:tiny-S", "--port", "99999"], 2, "--port"),
    ("madopd_agents.serve", ["--model", "zoo:tiny-S", "--port", "TAKEN"], 2, "in use"),
    ("madopd_agents.serve", ["--model", "/nonexistent/model", "--port", "0"], 2, "/nonexistent/model"),
    ("madopd_agents.serve", ["--model", "zoo:tiny-S", "--host", "0.0.0.0"], 2, "--host"),
    ("madopd_agents.serve", ["--model", "zoo:tiny-S", "--batch-size", "0"], 2, "--batch-size"),
    # report
    ("madopd_envs.eval.report", ["--store", "/nonexistent/store"], 2, "/nonexistent/store"),
]


def _main(module: str):
    mod = importlib.import_module(module if module.endswith(("serve", "report", "train", "sft")) else
                                  f"{module}.__main__")
    return mod.main


@pytest.mark.parametrize("module,argv,code,fragment", CASES,
                         ids=[f"{m.split('.')[-1]}:{' '.join(a)[:60]}" for m, a, _, _ in CASES])
def test_bad_input_is_one_line(module, argv, code, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing a refused command might write lands in the checkout
    held = None
    if "TAKEN" in argv:
        held, port = _taken_port()
        argv = [str(port) if a == "TAKEN" else a for a in argv]
    try:
        try:
            rc = _main(module)(argv)
        except SystemExit as e:
            rc = e.code
    finally:
        if held:
            held.close()
    out, err = capsys.readouterr()
    text = out + err
    assert "Traceback" not in text and "HYDRA_FULL_ERROR" not in text, text
    assert rc == code, f"exit {rc}, expected {code}:\n{text}"
    errors = [line for line in text.splitlines() if "error:" in line.lower()]
    assert len(errors) == 1, f"expected one error line:\n{text}"
    assert fragment.lower() in errors[0].lower(), errors[0]


@pytest.mark.parametrize("argv", [["-m", "madopd_distill.train", *TINY, "steps=abc"],
                                  ["-m", "madopd_distill.sft", "env=madopd/TWX-Nope-v0", "model=new:S"]])
def test_hydra_apps_exit_2_in_one_line_as_processes(argv, tmp_path):
    r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip() and "warn" not in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
