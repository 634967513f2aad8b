"""Peak memory of this process (Linux), for benchmarks that run each side in a fresh process.

Standard library only: it is imported by children that run in other virtualenvs (TRL's)."""

from __future__ import annotations

import os


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> None:
    """Forget the imports' transient peak: writing 5 to clear_refs resets VmHWM (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def peak_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
