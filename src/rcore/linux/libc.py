"""ctypes bindings for the system calls Python lacks.

Every call goes through `_check`, the one place where -1/errno becomes an OSError;
ptrace has its own raw call site in ptrace.py that adds pid and request."""

import ctypes
import ctypes.util
import os

from .. import arch

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
ARCH = arch.host()

_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

c_ulong = ctypes.c_ulong


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def _check(result, what):
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def syscall(name, *args):
    """Raw syscall(2) by name from the architecture table."""
    ctypes.set_errno(0)
    res = _syscall(ctypes.c_long(ARCH.SYS[name]),
                   *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return _check(res, name)


def ptrace_raw(request, pid, addr, data):
    """Returns (result, errno); ptrace.py turns errno into exceptions."""
    ctypes.set_errno(0)
    res = _syscall(ctypes.c_long(ARCH.SYS["ptrace"]), ctypes.c_long(request),
                   ctypes.c_long(pid), ctypes.c_void_p(addr), ctypes.c_void_p(data))
    return res, ctypes.get_errno() if res == -1 else 0


def _vm_rw(name, pid, local, remote):
    liov = (IoVec * len(local))(*[IoVec(a, n) for a, n in local])
    riov = (IoVec * len(remote))(*[IoVec(a, n) for a, n in remote])
    return syscall(name, pid, liov, len(local), riov, len(remote), 0)


def process_vm_readv(pid, local, remote):
    """local, remote: lists of (address, length).  Returns bytes transferred,
    which is short when a remote range is not readable."""
    return _vm_rw("process_vm_readv", pid, local, remote)


def process_vm_writev(pid, local, remote):
    return _vm_rw("process_vm_writev", pid, local, remote)


def buffer_address(buf):
    """Address of a writable Python buffer (bytearray, ctypes array)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def read_memory(pid, addr, length):
    buf = bytearray(length)
    if length:
        got = process_vm_readv(pid, [(buffer_address(buf), length)], [(addr, length)])
        if got != length:
            raise OSError(14, f"short read of {length} bytes at {addr:#x} in {pid}")
    return bytes(buf)


def write_memory(pid, addr, data):
    buf = bytearray(data)
    if buf:
        got = process_vm_writev(pid, [(buffer_address(buf), len(buf))], [(addr, len(buf))])
        if got != len(buf):
            raise OSError(14, f"short write of {len(buf)} bytes at {addr:#x} in {pid}")


KCMP_FILE = 0


def kcmp_file(pid1, pid2, fd1, fd2):
    """0 when both descriptors refer to the same open file description."""
    return syscall("kcmp", pid1, pid2, KCMP_FILE, fd1, fd2)


def get_robust_list(tid):
    head = ctypes.c_ulong()
    size = ctypes.c_size_t()
    syscall("get_robust_list", tid, ctypes.byref(head), ctypes.byref(size))
    return head.value, size.value


def tgkill(tgid, tid, sig):
    syscall("tgkill", tgid, tid, sig)


def pidfd_open(pid):
    return syscall("pidfd_open", pid, 0)


def pidfd_getfd(pidfd, fd):
    """A duplicate of another process's descriptor fd (close-on-exec)."""
    return syscall("pidfd_getfd", pidfd, fd, 0)


# Constants of the calls above and of calls injected into processes that Python's
# os, mmap, fcntl and signal modules lack (include/uapi/linux/{prctl,fcntl,mman}.h,
# asm-generic/mman-common.h).
AT_FDCWD = -100
MAP_FIXED, MAP_GROWSDOWN, MAP_FIXED_NOREPLACE = 0x10, 0x100, 0x100000
MAP_NORESERVE = 0x4000
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_MM_MAP = 14                  # PR_SET_MM's sub-command
PR_SET_NAME = 15
PR_SET_MM = 35
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_TID_ADDRESS = 40


def prctl(option, a2=0, a3=0, a4=0, a5=0):
    return syscall("prctl", option, a2, a3, a4, a5)
