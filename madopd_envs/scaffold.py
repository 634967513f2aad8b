"""``python -m madopd_envs new <Name>``: the skeleton of an environment package of your own.

The package it writes installs with ``pip install -e DIR`` and passes ``python -m madopd_envs check``
as generated: a working toy game stands where your engine goes, so the contract is green from the
first commit and stays green while you replace it. Its ``madopd.envs`` entry point makes the env
visible to ``madopd_envs.make``, the eval and train CLIs, leaderboard configs and ``gymnasium.make``.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

NAME_PATTERN = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def snake(name: str) -> str:
    """``MyBench`` -> ``my_bench`` (the module and the id namespace)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def files(name: str) -> dict[str, str]:
    """Relative path -> text of every file of the skeleton for env ``name`` (CamelCase)."""
    module = snake(name)
    dist = module.replace("_", "-")
    env_id = f"{module}/{name}-v0"
    return {
        "pyproject.toml": f'''[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "{name}: a madopd text environment"
requires-python = ">=3.10"
dependencies = ["madopd"]

[project.optional-dependencies]
test = ["pytest"]

# madopd finds the env through this entry point: its name is the id namespace ("{module}/..."), its
# value the module whose import registers the envs.
[project.entry-points."madopd.envs"]
{module} = "{module}"

[tool.setuptools]
packages = ["{module}"]
''',
        f"{module}/__init__.py": f'''"""{name}: importing this module registers ``{env_id}`` (the env module loads on first make)."""

from madopd_envs import EnvCard, register

register(
    "{env_id}",
    "{module}.env:{name}Env",
    max_episode_steps=20,
    card=EnvCard(
        family="{module}",
        splits={{"train": 20, "test": 10}},
        metrics="won: the target number was said; score: fraction of the count done",
        requires=(),  # importable modules your engine needs, e.g. ("my_engine",)
        extra=None,  # how to install them, e.g. "{dist}[engine]"
        license="say the licence and provenance of the engine and the data here",
        description="{name} (replace the toy game with your benchmark)",
    ),
)
''',
        f"{module}/env.py": f'''"""{name}: the toy game of the skeleton -- count from 1 to a target. Replace it with your engine.

The base class (madopd_envs.TextEnv) handles seeding, task choice, garbage actions, truncation and the
info contract; an env writes three methods: ``tasks``, ``_load`` and ``_act``.
"""

from __future__ import annotations

from typing import Any

from madopd_envs import TextEnv

DIGITS = tuple(str(n) for n in range(1, 10))


class {name}Env(TextEnv):
    family = "{module}"
    splits = ("train", "test")

    def tasks(self, split: str | None = None) -> list[str]:
        """Task ids of a split, deterministic and ordered (game files, seeds, variations...)."""
        split = split or self.split
        first, n = (1, 20) if split == "train" else (101, 10)
        return [f"{{split}}-{{i}}" for i in range(first, first + n)]

    def _load(self, task_id: str, split: str) -> tuple[str, dict[str, Any]]:
        """Start an episode of ``task_id`` -> (observation, info). Start your engine's game here."""
        self.target = 2 + int(task_id.rsplit("-", 1)[1]) % 5
        self.count = 0
        return f"Count from 1 to {{self.target}}, one number per action.", self._info()

    def _act(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        """Apply a well-formed action -> (observation, reward, terminated, info); answer bad ones in words."""
        if action.strip() not in DIGITS:
            return "Say one digit from 1 to 9.", 0.0, False, {{**self._info(), "action_valid": False}}
        if action.strip() != str(self.count + 1):
            self.count = 0
            return "Wrong number: start again from 1.", 0.0, False, self._info()
        self.count += 1
        won = self.count == self.target
        return ("Done!" if won else f"{{self.count}}. Go on."), float(won), won, self._info()

    def _info(self) -> dict[str, Any]:
        return {{
            "task": f"count to {{self.target}}",
            "admissible_actions": list(DIGITS),  # None where actions are open-ended
            "won": self.count == self.target,
            "score": self.count / self.target,  # progress in [0, 1]
            "raw_score": float(self.count),  # the engine's own score
            "expert_action": str(self.count + 1),  # shown only to envs made with expert=True
        }}
''',
        f"tests/test_{module}.py": f'''"""The env passes madopd's conformance suite (the same as `python -m madopd_envs check {env_id}`)."""

import madopd_envs
from madopd_envs.testing import check_text_env


def test_conforms():
    check_text_env(madopd_envs.make("{env_id}"))


def test_expert_wins():
    env = madopd_envs.make("{env_id}", expert=True)
    _, info = env.reset(seed=0)
    terminated = False
    while not terminated:
        _, _, terminated, _, info = env.step(info["expert_action"])
    assert info["won"]
    env.close()
''',
        "README.md": f'''# {dist}

`{env_id}`: a [madopd](https://pypi.org/project/madopd/) text environment.

```bash
pip install -e .                              # beside madopd
python -m madopd_envs list                    # shows {env_id} with this package's version
python -m madopd_envs check {env_id}          # the conformance suite, one line per check
python -m madopd_envs.eval --agent random --env {env_id} --episodes 5
```

`gymnasium.make("{module}:{env_id}")` works too (Gymnasium imports `{module}`, which registers the env).
Replace the toy game in `{module}/env.py` with your engine; keep `python -m madopd_envs check` green.
''',
    }


def write(name: str, directory: Path | None = None) -> Path:
    """Write the skeleton of ``name`` into ``directory`` (default ``./<snake name>``); returns it.

    Raises ``ValueError`` for a bad name or a directory that exists and is not empty.
    """
    if not NAME_PATTERN.match(name):
        raise ValueError(f"the name must be CamelCase letters and digits starting with a capital (MyBench); got {name!r}")
    if keyword.iskeyword(snake(name)):
        raise ValueError(f"{name!r} gives the module name {snake(name)!r}, a Python keyword; choose another name")
    root = Path(directory) if directory is not None else Path(snake(name))
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} exists and is not a directory; choose another --dir")
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} exists and is not empty; choose another --dir")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file on the way (/etc/passwd/x), no permission, read-only disk
        raise ValueError(f"--dir {root}: cannot create it ({e.strerror or e})") from None
    for rel, text in files(name).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
