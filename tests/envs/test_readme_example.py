"""The README's "adding an environment" example runs and passes the conformance suite as written."""

import re
from pathlib import Path

import madopd_envs
from madopd_envs.testing import check_text_env

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_add_env_example_conforms():
    text = README.read_text()
    block = re.search(r"<!-- example:add-env -->\s*```python\n(.*?)```", text, re.S)
    assert block, "README lost its add-env example"
    namespace: dict = {}
    exec(compile(block.group(1), "README:add-env", "exec"), namespace)
    check_text_env(madopd_envs.make("madopd/Guess-v0"))
    env = madopd_envs.make("madopd/Guess-v0", expert=True)
    _, info = env.reset(seed=0)
    _, reward, terminated, _, info = env.step(info["expert_action"])
    assert terminated and info["won"] and reward == 1.0
