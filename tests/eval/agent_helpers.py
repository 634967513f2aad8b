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


class MisbehavingAgent(ExpertAgent):
    """The expert, except on the tasks named in ``behave``: ``{task_id: [mode, times]}`` misbehaves ``times``
    times (-1: always) at the second step of that task (after one step: the retry's reset then follows a
    played step, as most failures do). Modes: ``raise`` (act raises), ``none`` / ``str`` /
    ``int_text`` (that conversation's output is None, a bare str, an ActionOutput whose text is an int),
    ``act_none`` (act returns None for the whole batch), ``hang`` (act sleeps ``hang_s``).

    With ``$MADOPD_TEST_FIXED`` set it behaves: a fixed agent for ``--retry-errored``.
    """

    def __init__(self, name: str = "misbehaving", behave: dict[str, list] | None = None, hang_s: float = 30.0):
        super().__init__(name=name)
        self.behave = {k: list(v) for k, v in (behave or {}).items()}
        self.hang_s = float(hang_s)

    def act(self, conversations, sampling, infos=None):
        from madopd_agents.base import ActionOutput

        outs = super().act(conversations, sampling, infos)
        if os.environ.get("MADOPD_TEST_FIXED"):
            return outs
        due = []
        for k, info in enumerate(infos):
            mode_times = self.behave.get(info["task_id"])
            if info.get("step") == 1 and mode_times and mode_times[1] != 0:
                due.append((k, mode_times))
        # A whole-batch misbehaviour first, alone: a per-conversation one is only used up when delivered.
        for k, mode_times in due:
            if mode_times[0] in ("raise", "act_none", "hang"):
                mode_times[1] -= 1
                if mode_times[0] == "raise":
                    raise RuntimeError(f"CUDA out of memory (simulated) on {infos[k]['task_id']}")
                if mode_times[0] == "act_none":
                    return None
                time.sleep(self.hang_s)
                return outs
        for k, mode_times in due:
            mode_times[1] -= 1
            outs[k] = {"none": None, "str": "look", "int_text": ActionOutput(text=42)}[mode_times[0]]
        return outs


class DiskFillingExpert(ExpertAgent):
    """The expert, which fills the filesystem of ``fill`` (a tmpfs) when the episode after the first
    ``after`` ones starts (one env: they are on disk by then): the disk becomes full mid-run, as when
    another process writes a large file. From then on its replies are long (a model's reasoning), so the
    next record needs a new page of the full disk. ``$MADOPD_TEST_FIXED``: a plain expert."""

    def __init__(self, name: str = "filler", fill: str = "", after: int = 2):
        super().__init__(name=name)
        self.fill, self.after, self.started = fill, int(after), 0

    def act(self, conversations, sampling, infos=None):
        from madopd_agents.base import ActionOutput

        outs = super().act(conversations, sampling, infos)
        if os.environ.get("MADOPD_TEST_FIXED"):
            return outs
        self.started += sum(info.get("step") == 0 for info in infos)
        if self.started == self.after + 1 and not os.path.exists(self.fill):
            try:
                with open(self.fill, "wb") as fh:
                    while True:
                        fh.write(b"\0" * 4096)
                        fh.flush()
            except OSError:
                pass
        if self.started > self.after:
            outs = [ActionOutput(text="Thinking... " * 1000 + f"<action>{o.text}</action>") for o in outs]
        return outs
