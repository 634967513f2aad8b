"""Unit-test helper agents (not shipped): a slowed random agent and a worker-killing expert."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psutil

from madopd_agents.scripted import ExpertAgent, RandomAgent


class SlowRandomAgent(RandomAgent):
    """Random, but each turn takes ``delay`` seconds: gives a test time to kill the eval midway."""

    def __init__(self, name: str = "slow_random", seed: int = 0, delay: float = 0.05, **kw: Any):
        super().__init__(name=name, seed=seed)
        self.delay = float(delay)

    @classmethod
    def from_card(cls, card: Any) -> SlowRandomAgent:
        return cls(name=card.name, **card.args)

    def act(self, conversations, sampling, infos=None):
        time.sleep(self.delay)
        return super().act(conversations, sampling, infos)


def worker_pids() -> list[int]:
    """The eval's env workers: spawned children of this process (not the resource tracker)."""
    return [c.pid for c in psutil.Process().children() if "spawn_main" in " ".join(c.cmdline())]


class WorkerKillingExpert(ExpertAgent):
    """An expert that SIGKILLs its (single) env worker on the first step of the tasks in ``kill``,
    ``times`` times per task: the eval must report and retry those episodes."""

    def __init__(self, kill: dict[str, int]):
        super().__init__(name="killer")
        self.kill = dict(kill)

    def act(self, conversations, sampling, infos=None):
        for info in infos:
            if info.get("step") == 0 and self.kill.get(info["task_id"], 0) > 0:
                self.kill[info["task_id"]] -= 1
                for pid in worker_pids():
                    os.kill(pid, signal.SIGKILL)
        return super().act(conversations, sampling, infos)
