"""ALFWorld on the real engine, offline: generated games or upstream's data (``madopd/ALFWorld-v0``).

- ``env.ALFWorldEnv``: the TextEnv (TextWorld ``PddlEnv`` + alfworld's demangler and expert).
- ``generate``: ``python -m madopd_envs.alfworld.generate`` writes games in upstream's layout.
- ``scenes``: tasks and PDDL problems from the wheel's floor plans and goal library.
- ``data``: official-layout reader, shipped eval sets, on-demand train cache.
- ``expert``: upstream's handcoded expert, deterministic and fixed for the 0.4 place command.
- ``fastgrammar``: memoised grammar parsing (identical traces, >= 3x steps/s).

Nothing here imports alfworld until an env is made or a game generated.
"""
