"""The system-call filter of the bubblewrap sandbox, compiled with libseccomp through ctypes.

libseccomp (the C library, Debian's ``libseccomp2``) turns a list of rules into the BPF program that
``bwrap --seccomp FD`` installs for the script. ctypes instead of Python bindings: the C library is
already on every system that has bubblewrap's usual dependencies, and no wheel has to be built.

Denied calls fail with EPERM ("Operation not permitted"; sockets other than AF_UNIX with
EAFNOSUPPORT), not a kill: a script that merely probes gets an error it can report.
Everything else is allowed: the filter removes what a file conversion never needs and what
widens the kernel's attack surface.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import tempfile

# Kernel interfaces an escaping or snooping script would use; no data conversion calls them.
DENIED = (
    # other processes and the kernel itself
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "bpf", "perf_event_open", "userfaultfd", "personality", "lookup_dcookie", "syslog",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    # keys of the kernel keyring (credentials of other programs live there)
    "keyctl", "add_key", "request_key",
    # namespaces and the file-system view: the sandbox is built from these
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at",
    # io_uring runs operations the filter cannot see
    "io_uring_setup", "io_uring_enter", "io_uring_register",
)  # fmt: skip
AF_UNIX = 1
# clone() flags that would make a new namespace (CLONE_NEWNS ... CLONE_NEWNET, CLONE_NEWTIME).
_CLONE_NAMESPACES = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)
_ACT_ALLOW = 0x7FFF0000
_CMP_NE, _CMP_MASKED_EQ = 1, 7


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)
    ]  # fmt: skip
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def unavailable_reason() -> str | None:
    """Why no filter can be built here, or None when libseccomp is usable."""
    if _library() is None:
        return "libseccomp (the C library, package `libseccomp2`) is not installed"
    return None


@functools.lru_cache(maxsize=1)
def filter_program() -> bytes:
    """The BPF program (struct sock_filter[]) for the native architecture; other architectures'
    system calls (the i386 entry points of an x86-64 kernel) are killed by libseccomp's default."""
    lib = _library()
    if lib is None:
        raise RuntimeError(unavailable_reason())
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise RuntimeError("seccomp_init failed")
    try:
        for name in DENIED:
            _add(lib, ctx, name, _act_errno(errno.EPERM))
        # Only local sockets: the network is already gone, this also closes netlink and raw packets.
        # EAFNOSUPPORT, what a kernel built without IPv4 answers: programs report it as "no network".
        _add(lib, ctx, "socket", _act_errno(errno.EAFNOSUPPORT), _ArgCmp(0, _CMP_NE, AF_UNIX, 0))
        for flag in _CLONE_NAMESPACES:
            _add(lib, ctx, "clone", _act_errno(errno.EPERM), _ArgCmp(0, _CMP_MASKED_EQ, flag, flag))
        # clone3 passes its flags in memory the filter cannot read: ENOSYS makes the C library fall
        # back to clone(), whose flags are checked above (what Docker and Flatpak do too).
        _add(lib, ctx, "clone3", _act_errno(errno.ENOSYS))
        with tempfile.TemporaryFile() as out:
            if lib.seccomp_export_bpf(ctx, out.fileno()) != 0:
                raise RuntimeError("seccomp_export_bpf failed")
            out.seek(0)
            return out.read()
    finally:
        lib.seccomp_release(ctx)


def _add(lib: ctypes.CDLL, ctx: int, name: str, action: int, *conditions: _ArgCmp) -> None:
    number = lib.seccomp_syscall_resolve_name(name.encode())
    if number < 0:  # a call this kernel/architecture does not have: nothing to deny
        return
    array = (_ArgCmp * len(conditions))(*conditions) if conditions else None
    rc = lib.seccomp_rule_add_array(ctx, action, number, len(conditions), array)
    if rc != 0:
        raise RuntimeError(f"seccomp_rule_add({name}) failed: {os.strerror(-rc)}")


def filter_fd() -> int:
    """A readable file descriptor at the start of the program, for ``bwrap --seccomp FD``."""
    fd = os.memfd_create("forge-seccomp", 0)
    os.write(fd, filter_program())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
