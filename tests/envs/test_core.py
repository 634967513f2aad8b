"""The TextEnv base class: garbage actions in words, truncation, info completion, expert privacy.

A tiny counting env is the unit-test helper here; real engines are checked by test_conformance.
"""

import pytest

from madopd_envs.core import TextEnv, UnicodeText, action_problem
from madopd_envs.testing import check_info


class CountEnv(TextEnv):
    family = "unit"
    splits = ("train", "test")

    def tasks(self, split=None):
        return [f"{split or self.split}-{n}" for n in range(3)]

    def _load(self, task_id, split):
        self.target, self.count = int(task_id.rsplit("-", 1)[1]) + 1, 0
        return f"Count to {self.target}.", self._info()

    def _act(self, action):
        if action not in ("inc", "wait"):
            return "Unknown command.", 0.0, False, {**self._info(), "action_valid": False}
        self.count += action == "inc"
        won = self.count == self.target
        return f"Count is {self.count}.", float(won), won, self._info()

    def _info(self):
        return {"task": f"count to {self.target}", "admissible_actions": ["inc", "wait"],
                "won": self.count == self.target, "score": self.count / self.target, "raw_score": self.count,
                "expert_action": "inc"}


def test_reset_honours_task_and_split_options():
    env = CountEnv(split="test")
    obs, info = env.reset(seed=1, options={"task_id": "train-2", "split": "train"})
    assert obs == "Count to 3." and info["task_id"] == "train-2" and info["split"] == "train"
    check_info(info, expert=False, where="reset")


def test_seeded_reset_picks_the_same_task():
    a, b = CountEnv(), CountEnv()
    assert [a.reset(seed=s)[1]["task_id"] for s in range(5)] == [b.reset(seed=s)[1]["task_id"] for s in range(5)]


@pytest.mark.parametrize("action", ["", "  ", "x" * 5000, "go\x00", 7, None])
def test_garbage_actions_are_answered_in_words(action):
    env = CountEnv()
    env.reset(seed=0)
    obs, reward, term, trunc, info = env.step(action)
    assert obs.startswith("Invalid action:") and reward == 0.0 and not term
    assert info["action_valid"] is False and info["step"] == 1


def test_engine_level_invalid_action_keeps_contract():
    env = CountEnv()
    env.reset(seed=0)
    _, _, _, _, info = env.step("dance")
    assert info["action_valid"] is False
    _, _, _, _, info = env.step("inc")
    assert info["action_valid"] is True


def test_truncation_after_max_episode_steps():
    env = CountEnv(max_episode_steps=2)
    env.reset(seed=0, options={"task_id": "test-2"})
    assert env.step("wait")[3] is False
    _, _, term, trunc, info = env.step("wait")
    assert trunc and not term and info["step"] == 2


def test_expert_action_only_with_privileged_access():
    assert "expert_action" not in CountEnv().reset(seed=0)[1]
    assert CountEnv(expert=True).reset(seed=0)[1]["expert_action"] == "inc"


def test_score_is_clipped_and_typed():
    env = CountEnv()
    env.reset(seed=0, options={"task_id": "test-0"})
    _, r, term, _, info = env.step("inc")
    assert term and info["won"] is True and info["score"] == 1.0 and isinstance(info["raw_score"], float)


def test_unknown_split_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        CountEnv(split="dev")


def test_step_before_reset_is_a_clear_error():
    with pytest.raises(Exception, match="reset"):
        CountEnv().step("inc")


def test_unicode_text_space_admits_engine_text():
    space = UnicodeText(100)
    assert space.contains("café at 20°C") and not space.contains("x" * 101) and not space.contains(3)
    assert action_problem("take apple 1", 100) is None and action_problem("", 100) == "The action is empty."
