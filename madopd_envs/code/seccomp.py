"""The sandbox's syscall filter: a seccomp BPF program built with libseccomp, for ``bwrap --seccomp FD``.

libseccomp (Debian's ``libseccomp2``; the project behind Docker's, Podman's and Flatpak's filters) is
called through ``ctypes``, so no compiler and no Python binding are needed. The filter allows every
syscall except the ones below, which fail with an errno (the program sees an ordinary error; it is not
killed, so the checker reports what happened):

- new namespaces: ``unshare``, ``setns``, and ``clone`` with any ``CLONE_NEW*`` flag (a nested user
  namespace gives uid 0 inside and fresh, unsized tmpfs mounts); ``clone3`` answers ENOSYS, because
  its flags sit in memory seccomp cannot read -- glibc then falls back to ``clone``;
- ``io_uring_*`` (a large kernel attack surface that also bypasses this filter's view of I/O);
- kernel facilities shared with the host or needing no namespace to misuse: keyrings, ``bpf``,
  ``perf_event_open``, ``userfaultfd``, ``ptrace`` and cross-process memory access, mounts, modules,
  kexec, swap, reboot, clock setting, ``memfd_secret``, terminal input injection (``TIOCSTI``);
- ``prctl(PR_SET_DUMPABLE, non-zero)``: a process made non-dumpable stays so (no core, no ptrace).

A syscall of a foreign ABI (32-bit ``int 0x80`` on x86_64) kills the process: libseccomp's default for
an architecture the filter does not list.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import tempfile

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_NE = 1
SCMP_CMP_MASKED_EQ = 7
PR_SET_DUMPABLE = 4
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
CLONE_NEW_FLAGS = {"CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
                   "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
                   "CLONE_NEWNET": 0x40000000}

# Denied outright with EPERM (names this kernel's architecture does not have are skipped).
DENIED = (
    "unshare", "setns",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "fanotify_init",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount",
    "fsconfig", "fspick", "mount_setattr", "name_to_handle_at", "open_by_handle_at",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "swapon", "swapoff", "syslog", "acct", "quotactl", "quotactl_fd", "lookup_dcookie", "vhangup",
    "iopl", "ioperm", "modify_ldt", "uselib", "personality", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "memfd_secret", "nfsservctl", "_sysctl",
)


class _ArgCmp(ctypes.Structure):
    """libseccomp's ``struct scmp_arg_cmp``."""

    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)  # SCMP_ACT_ERRNO(code)


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


class SeccompUnavailable(RuntimeError):
    """libseccomp is missing or could not build the filter."""


@functools.lru_cache(maxsize=1)
def filter_bpf() -> bytes:
    """The filter as the raw BPF program ``bwrap --seccomp`` reads (built once per process).

    Raises:
        SeccompUnavailable: libseccomp cannot be loaded (install Debian's ``libseccomp2``) or failed.
    """
    lib = _lib()
    if lib is None:
        raise SeccompUnavailable("libseccomp (libseccomp.so.2) was not found: install Debian's libseccomp2 "
                                 "(`apt-get install libseccomp2`; `make setup` does it as root)")
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        def add(name: str, action: int, *cmps: tuple[int, int, int, int]) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:  # not a syscall of this architecture
                return
            arr = (_ArgCmp * max(len(cmps), 1))(*(_ArgCmp(*c) for c in cmps))
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
            if rc < 0:
                raise SeccompUnavailable(f"seccomp_rule_add({name}) failed: {os.strerror(-rc)}")

        eperm = _errno_action(errno.EPERM)
        for name in DENIED:
            add(name, eperm)
        add("clone3", _errno_action(errno.ENOSYS))
        for flag in CLONE_NEW_FLAGS.values():  # clone's flags are its first argument on x86_64 and arm64
            add("clone", eperm, (0, SCMP_CMP_MASKED_EQ, flag, flag))
        add("prctl", eperm, (0, SCMP_CMP_EQ, PR_SET_DUMPABLE, 0), (1, SCMP_CMP_NE, 0, 0))
        for request in (TIOCSTI, TIOCLINUX):
            add("ioctl", eperm, (1, SCMP_CMP_MASKED_EQ, 0xFFFFFFFF, request))
        with tempfile.TemporaryFile() as fh:
            rc = lib.seccomp_export_bpf(ctx, fh.fileno())
            if rc < 0:
                raise SeccompUnavailable(f"seccomp_export_bpf failed: {os.strerror(-rc)}")
            fh.seek(0)
            return fh.read()
    finally:
        lib.seccomp_release(ctx)


def filter_fd() -> int:
    """A fresh pipe's read end holding the filter, for one ``bwrap --seccomp FD`` (the caller closes it).

    The program is a few hundred bytes, far below a pipe's buffer, so writing it cannot block."""
    data = filter_bpf()
    r, w = os.pipe()
    try:
        os.write(w, data)
    finally:
        os.close(w)
    return r
