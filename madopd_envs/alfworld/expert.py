"""ALFWorld's handcoded expert, made deterministic and fixed for alfworld 0.4.x's place command.

This drives upstream's own ``HandCodedTWAgent`` (the expert ``alfworld-generate`` uses to mark games
``solvable`` and that ``AlfredExpert`` exposes during training), with two changes and no copy of
its logic:

1. alfworld 0.4 renamed the place command from ``put X in/on Y`` to ``move X to Y``, but the expert's
   state tracking still looks for ``"put"`` in the last command. After placing an object it keeps it
   in its inventory and loops, which is why it "solves few pick_two games". We hand it the last
   command in the old spelling; its own commands are already the new one.
2. It draws ties with the module-level ``random``; we give it a private ``random.Random`` seeded per
   episode, so its next action depends only on (seed, trajectory) and the process's global random
   state is left alone.

Like ``AlfredExpert`` it answers ``look`` first and whenever its own choice is not admissible.
"""

from __future__ import annotations

import random
from typing import Any

PLACE_PREFIX = "move "


def _old_spelling(command: str) -> str:
    """``move apple 1 to fridge 1`` -> ``put apple 1 in fridge 1`` (what the expert's tracker parses)."""
    if command.startswith(PLACE_PREFIX) and " to " in command:
        obj, _, recep = command[len(PLACE_PREFIX):].partition(" to ")
        return f"put {obj} in {recep}"
    return command


class HandcodedExpert:
    """The next expert command for an ALFWorld episode, given the engine's states.

    Args:
        traj_data: the game's ``traj_data.json`` (``task_type`` and ``pddl_params`` are read).
        seed: seeds the expert's tie-breaking.
        max_steps: the expert gives up (answers ``None``) after this many decisions.
    """

    def __init__(self, traj_data: dict[str, Any], *, seed: int = 0, max_steps: int = 200):
        import alfworld.gen.constants as constants
        from alfworld.agents.expert import handcoded_expert
        from alfworld.agents.expert.handcoded_expert_tw import HandCodedTWAgent

        self._module = handcoded_expert
        self._agent = HandCodedTWAgent(max_steps=max_steps)
        params = {**traj_data["pddl_params"], "task_type": traj_data["task_type"]}
        # HandCodedAgent.reset reads traj_data.json from disk; this is the same preparation, in memory.
        self._agent.task_params = {k: v.lower() if v in constants.OBJECTS else v for k, v in params.items()}
        self._agent.policy = self._agent.get_task_policy(self._agent.task_params)(self._agent.task_params,
                                                                                 max_steps=max_steps)
        self._rng = random.Random(seed)
        self.failed = False

    def first(self, state: Any) -> str:
        """The first action, after observing the intro (upstream: always ``look``)."""
        self._agent.observe(state["feedback"])
        return "look"

    def next(self, state: Any, last_command: str) -> str | None:
        """The next action after ``last_command`` led to ``state``; ``None`` once the expert gave up."""
        if self.failed:
            return None
        saved, self._module.random = self._module.random, self._rng
        try:
            action = self._agent.act(state, 0, state["won"], _old_spelling(last_command))
        except (NameError, IndexError, KeyError, ValueError):
            # HandCodedAgentTimeout / HandCodedAgentFailed are NameErrors; its parsing can also fail
            # on observations it did not expect (alfworld#128). Either way it has no next action.
            self.failed = True
            return None
        finally:
            self._module.random = saved
        return action if action in state["admissible_commands"] else "look"
