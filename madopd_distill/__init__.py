"""madopd_distill: on-policy distillation of multi-turn agents.

Rollouts (``rollout``/``trajectory``), teachers (``teachers``), divergences (``divergences``), the one
training loop (``trainer``; CLIs ``python -m madopd_distill.train`` and ``python -m madopd_distill.sft``)
and the methods that shape it (``methods``). Importing the package is cheap: nothing heavy loads here.
"""
