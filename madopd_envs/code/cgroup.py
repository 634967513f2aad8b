"""One memory cgroup per sandbox run: the bound that counts everything a run holds.

``RLIMIT_AS`` bounds one process's address space, but not pages a process no longer maps: files in
its tmpfs mounts (``/tmp``, ``/dev/shm``), ``memfd``s, pages kept by its other processes. A memory
cgroup charges all of them (and page tables, socket buffers...) to the run, and the kernel's OOM
killer acts inside the cgroup when the run exceeds it.

Where: cgroup v2 when our own cgroup, or its parent, enables the ``memory`` controller for its
children (its ``cgroup.subtree_control`` lists ``memory``) and we may write there (root on a systemd
host: the runs' cgroups go beside our own); otherwise the cgroup v1 ``memory`` hierarchy when it is
mounted and writable (root on hybrid hosts, as on the machine this was developed on). Neither: ``find()`` returns ``None`` and the sandbox
falls back to rlimits (see ``Limits``). The run joins its cgroup before anything of it starts: a
``/bin/sh`` writes its own pid to ``cgroup.procs`` and then execs the sandbox command.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

JOIN_SH = 'echo $$ > "$0" && exec "$@"'  # sh -c JOIN_SH <cgroup.procs> cmd...
_counter = itertools.count()
_lock = threading.Lock()


@dataclass(frozen=True)
class MemoryCgroups:
    """Where runs' cgroups are made (``parent``) and in which hierarchy version."""

    version: Literal[1, 2]
    parent: Path

    @property
    def limit_file(self) -> str:
        return "memory.max" if self.version == 2 else "memory.limit_in_bytes"

    def describe(self, limit_mb: int) -> str:
        return f"cgroup v{self.version} {self.limit_file}={limit_mb} MB per run"

    def create(self, limit_bytes: int) -> Path:
        """A new cgroup capped at ``limit_bytes`` of memory (and no swap)."""
        with _lock:
            n = next(_counter)
        path = self.parent / f"madopd-run-{os.getpid()}-{n}"
        path.mkdir()
        try:
            (path / self.limit_file).write_text(str(limit_bytes))
            if self.version == 2:
                _write_if_exists(path / "memory.swap.max", "0")
            else:  # memsw (memory + swap) exists only with swap accounting; it must be >= the memory limit
                _write_if_exists(path / "memory.memsw.limit_in_bytes", str(limit_bytes))
        except BaseException:
            path.rmdir()
            raise
        return path

    def oom_kills(self, path: Path) -> int:
        """How many processes the kernel killed in ``path`` for exceeding its limit."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            for line in (path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def remove(self, path: Path, timeout_s: float = 2.0) -> None:
        """Remove ``path`` once its processes are gone (killed ones take a few ms to exit)."""
        if self.version == 2:
            _write_if_exists(path / "cgroup.kill", "1")  # kernel >= 5.14: kills everything left
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return  # left behind empty-but-busy; harmless, and named after our pid
                time.sleep(0.005)


def _write_if_exists(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except (FileNotFoundError, PermissionError):
        pass


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, super options) of the cgroup mounts in /proc/self/mountinfo."""
    out = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) >= 5 and len(rfields) >= 3 and rfields[0] in ("cgroup", "cgroup2"):
            out.append((fields[4], rfields[0], set(rfields[2].split(","))))
    return out


def _own_paths() -> dict[str, str]:
    """Our cgroup path per hierarchy: key ``""`` for v2, else the v1 controllers' comma list."""
    out = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            out[controllers] = path
    except (OSError, ValueError):
        pass
    return out


def _usable(cg: MemoryCgroups) -> bool:
    try:
        path = cg.create(64 << 20)
    except OSError:
        return False
    cg.remove(path)
    _remove_stale(cg)
    return True


def _remove_stale(cg: MemoryCgroups) -> None:
    """Remove the empty cgroups of madopd processes that died mid-run (named after their pid)."""
    for path in cg.parent.glob("madopd-run-*-*"):
        pid = path.name.split("-")[2]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                path.rmdir()
            except OSError:
                pass


@functools.lru_cache(maxsize=1)
def find() -> MemoryCgroups | None:
    """The memory cgroups runs can use here, or ``None`` (probed once per process)."""
    own = _own_paths()
    for mount, fstype, opts in _mounts():
        if fstype == "cgroup2" and "" in own:
            mine = Path(mount + own[""].rstrip("/")) if own[""] != "/" else Path(mount)
            # Our own cgroup can enable controllers for children only while it holds no process (cgroup
            # v2's rule), so usually the runs go beside it: in its parent (root on a systemd host).
            for parent in (mine, mine.parent) if mine != Path(mount) else (mine,):
                try:
                    delegated = "memory" in (parent / "cgroup.subtree_control").read_text().split()
                except OSError:
                    delegated = False
                if delegated and os.access(parent, os.W_OK) and _usable(MemoryCgroups(2, parent)):
                    return MemoryCgroups(2, parent)
    for mount, fstype, opts in _mounts():
        if fstype == "cgroup" and "memory" in opts:
            key = next((k for k in own if "memory" in k.split(",")), None)
            if key is None:
                continue
            parent = Path(mount + own[key].rstrip("/")) if own[key] != "/" else Path(mount)
            if os.access(parent, os.W_OK) and _usable(MemoryCgroups(1, parent)):
                return MemoryCgroups(1, parent)
    return None
