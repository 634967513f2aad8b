"""Shared test setup: one BLAS/torch thread per process (2 cores, many processes), offline HF, and a
live Ctrl-C: a suite started in the background (`make test &`, nohup) inherits SIGINT ignored, which
every child would inherit too, and the tests that interrupt an eval or a worker would then fail."""

import os
import signal

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
signal.signal(signal.SIGINT, signal.default_int_handler)
