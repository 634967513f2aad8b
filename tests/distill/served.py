"""A model served by ``python -m madopd_agents.serve`` on 127.0.0.1 for the length of a test (real server,
real HTTP): the black-box, text-only teacher of OmniOPD tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Iterator


@contextlib.contextmanager
def served_model(path: str, name: str, start_timeout: float = 180) -> Iterator[str]:
    """Yields the server's OpenAI base URL (``http://127.0.0.1:PORT/v1``); stops it afterwards."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "madopd_agents.serve", "--model", path, "--host", "127.0.0.1",
                             "--port", str(port), "--served-name", name], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()[-2000:]
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
