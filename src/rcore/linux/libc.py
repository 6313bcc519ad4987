"""ctypes bindings for the system calls Python lacks.

Every call goes through `_check`, the one place where -1/errno becomes an OSError;
ptrace has its own raw call site in ptrace.py that adds pid and request."""

import ctypes
import itertools
import os
import struct

from .. import arch

# The C library the interpreter itself runs on (dlopen(NULL)): find_library("c")
# would run ldconfig in a subprocess at every start of rcore.
_libc = ctypes.CDLL(None, use_errno=True)
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


# syscall(2) prototyped for ptrace: fixed argument types spare the conversions
# of the variadic call, and a freeze makes some fifteen requests per thread.
_ptrace_syscall = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long,
                                   ctypes.c_void_p, ctypes.c_void_p,
                                   use_errno=True)(("syscall", _libc))
_SYS_PTRACE = ARCH.SYS["ptrace"]


def ptrace_raw(request, pid, addr, data):
    """Returns (result, errno); ptrace.py turns errno into exceptions.  errno is
    read only on -1, which the raw call returns exactly when it failed."""
    res = _ptrace_syscall(_SYS_PTRACE, request, pid, addr or None, data or None)
    return res, ctypes.get_errno() if res == -1 else 0


def _vm_rw(name, pid, local, remote):
    return syscall(name, pid, _iovecs(local), len(local), _iovecs(remote), len(remote), 0)


def _iovecs(pieces):
    # packed in one call: a dump passes a thousand at once (one per thread)
    flat = struct.pack(f"<{2 * len(pieces)}Q", *itertools.chain.from_iterable(pieces))
    return (IoVec * len(pieces)).from_buffer(bytearray(flat))


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


def unshare(flags):
    syscall("unshare", flags)     # os.unshare only from Python 3.12


MS_REC, MS_PRIVATE = 0x4000, 0x40000


def mount(source, target, fstype, flags=0):
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), None), f"mount {target}")


def pidfd_getfd(pidfd, fd):
    """A duplicate of another process's descriptor fd (close-on-exec)."""
    return syscall("pidfd_getfd", pidfd, fd, 0)


# Credentials of the calling thread only.  The kernel keeps credentials per
# thread; glibc's setresuid/setgroups (and Python's os.*) change every thread of
# the process (its setxid broadcast), these raw calls do not.  -1: unchanged.
def thread_setresuid(ruid, euid, suid):
    syscall("setresuid", ruid, euid, suid)


def thread_setresgid(rgid, egid, sgid):
    syscall("setresgid", rgid, egid, sgid)


def thread_setgroups(groups):
    array = (ctypes.c_uint32 * max(len(groups), 1))(*groups)
    syscall("setgroups", len(groups), array)


# Constants of the calls above and of calls injected into processes that Python's
# os, mmap, fcntl and signal modules lack (include/uapi/linux/{prctl,fcntl,mman}.h,
# asm-generic/mman-common.h).
AT_FDCWD = -100
MAP_FIXED, MAP_GROWSDOWN, MAP_FIXED_NOREPLACE = 0x10, 0x100, 0x100000
MAP_NORESERVE = 0x4000
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_MM_MAP = 14                  # PR_SET_MM's sub-command
PR_SET_NAME = 15
PR_GET_NAME = 16
PR_SET_MM = 35
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_TID_ADDRESS = 40
PR_GET_CHILD_SUBREAPER = 37
PR_SET_THP_DISABLE = 41
MADV_GUARD_INSTALL = 102             # Linux 6.13+
PR_TIMER_CREATE_RESTORE_IDS = 77     # arg2: RESTORE_IDS_*; timer_create takes *timerid
RESTORE_IDS_OFF, RESTORE_IDS_ON, RESTORE_IDS_GET = 0, 1, 2

# Signals and threads (include/uapi/asm-generic/signal*.h, include/linux/signal_types.h,
# include/uapi/linux/futex.h, include/uapi/linux/rseq.h).
NSIG = 64
SA_NOCLDSTOP, SA_NOCLDWAIT, SA_SIGINFO, SA_EXPOSE_TAGBITS = 0x1, 0x2, 0x4, 0x800
SA_RESTORER, SA_ONSTACK, SA_RESTART = 0x04000000, 0x08000000, 0x10000000
SA_NODEFER, SA_RESETHAND = 0x40000000, 0x80000000
# The flags the kernel keeps (UAPI_SA_FLAGS): it clears the others at rt_sigaction.
SA_FLAGS_KEPT = (SA_NOCLDSTOP | SA_NOCLDWAIT | SA_SIGINFO | SA_EXPOSE_TAGBITS | SA_RESTORER
                 | SA_ONSTACK | SA_RESTART | SA_NODEFER | SA_RESETHAND)
SIG_DFL, SIG_IGN = 0, 1
SS_ONSTACK, SS_DISABLE, SS_AUTODISARM = 1, 2, 1 << 31   # sigaltstack flags
MINSIGSTKSZ = 2048
RSEQ_MIN_SIZE = 32                  # struct rseq as rseq(2) first took it (ORIG_RSEQ_SIZE),
                                    # also the alignment it wants
PID_MAX_LIMIT = 1 << 22             # highest pid_max (include/linux/threads.h, 64-bit)
PATH_MAX = 4096


def prctl(option, a2=0, a3=0, a4=0, a5=0):
    return syscall("prctl", option, a2, a3, a4, a5)


# --- descriptor kinds (fds/): calls Python's os, select and signal modules lack ----

# include/uapi/linux/kcmp.h
KCMP_EPOLL_TFD = 7
KcmpEpollSlot = ctypes.c_uint32 * 3         # struct kcmp_epoll_slot {efd, tfd, toff}


def kcmp_epoll_tfd(pid, fd, epfd, tfd):
    """0 when fd of pid is the file epoll epfd watches under number tfd."""
    slot = KcmpEpollSlot(epfd, tfd, 0)
    return syscall("kcmp", pid, pid, KCMP_EPOLL_TFD, fd, ctypes.addressof(slot))


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_int64)]


class Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", Timespec), ("it_value", Timespec)]


def _timespec(ns):
    return Timespec(ns // 1000000000, ns % 1000000000)


# include/uapi/linux/timerfd.h
TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET = 1, 2
TFD_IOC_SET_TICKS = 0x40085400              # _IOW('T', 0, u64)


def timerfd_create(clockid, flags):
    return syscall("timerfd_create", clockid, flags)


def timerfd_settime(fd, flags, value_ns, interval_ns):
    spec = Itimerspec(_timespec(interval_ns), _timespec(value_ns))
    syscall("timerfd_settime", fd, flags, ctypes.byref(spec), 0)


def timerfd_set_ticks(fd, ticks):
    """Expirations not read yet (needs CONFIG_CHECKPOINT_RESTORE)."""
    syscall("ioctl", fd, TFD_IOC_SET_TICKS, ctypes.byref(ctypes.c_uint64(ticks)))


def signalfd(mask, flags, fd=-1):
    """A new signalfd (fd -1), or a new mask for signalfd fd."""
    return syscall("signalfd4", fd, ctypes.byref(ctypes.c_uint64(mask)), 8, flags)


EPOLL_CTL_ADD = 1


def epoll_create1(flags):
    return syscall("epoll_create1", flags)


def inotify_init1(flags):
    return syscall("inotify_init1", flags)


def inotify_add_watch(fd, path, mask):
    return syscall("inotify_add_watch", fd, ctypes.c_char_p(os.fsencode(path)), mask)


def inotify_rm_watch(fd, wd):
    return syscall("inotify_rm_watch", fd, wd)


def open_by_handle_at(mount_fd, handle_type, handle, flags):
    """struct file_handle {u32 handle_bytes; int handle_type; u8 f_handle[]}
    (needs CAP_DAC_READ_SEARCH)."""
    buf = ctypes.create_string_buffer(len(handle) + 8)
    ctypes.memmove(buf, (ctypes.c_uint32 * 2)(len(handle), handle_type & 0xFFFFFFFF), 8)
    ctypes.memmove(ctypes.addressof(buf) + 8, handle, len(handle))
    return syscall("open_by_handle_at", mount_fd, buf, flags)


# --- sockets (fds/unix.py, inet.py, tcp_repair.py): what Python's socket lacks ----

SO_PEEK_OFF, SO_SNDBUFFORCE, SO_RCVBUFFORCE = 42, 32, 33     # asm-generic/socket.h
IP_FREEBIND = 15                            # linux/in.h
SO_ATTACH_FILTER, SO_DETACH_FILTER, SO_GET_FILTER = 26, 27, 26
# include/uapi/linux/tcp.h
TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ, TCP_REPAIR_OPTIONS = 19, 20, 21, 22
TCP_TIMESTAMP, TCP_REPAIR_WINDOW = 24, 29
TCP_REPAIR_ON, TCP_REPAIR_OFF, TCP_REPAIR_OFF_NO_WP = 1, 0, -1
TCP_RECV_QUEUE, TCP_SEND_QUEUE = 1, 2
TCPOPT_MAXSEG, TCPOPT_WINDOW, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP = 2, 3, 4, 8
TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4
SIOCINQ, SIOCOUTQ, SIOCOUTQNSD = 0x541B, 0x5411, 0x894B


class SockFilter(ctypes.Structure):         # linux/filter.h: one classic BPF instruction
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]


BPF_RET_K = 0x06                            # BPF_RET | BPF_K: accept k bytes (0: drop)


def socket_filter_length(fd):
    """Instructions of the classic BPF filter attached to socket fd (0: none);
    asked with a zero length, so that the kernel copies nothing."""
    length = ctypes.c_uint32(0)
    _check(_libc.getsockopt(fd, 1, SO_GET_FILTER, None, ctypes.byref(length)), "getsockopt")
    return length.value


def socket_filter(fd):
    """The classic BPF program attached to socket fd, as bytes of struct
    sock_filter (b"": none; an eBPF program attached with SO_ATTACH_BPF reads
    as none too)."""
    n = socket_filter_length(fd)
    if not n:
        return b""
    prog = (SockFilter * n)()
    length = ctypes.c_uint32(n)
    _check(_libc.getsockopt(fd, 1, SO_GET_FILTER, prog, ctypes.byref(length)), "getsockopt")
    return bytes(prog)[:length.value * ctypes.sizeof(SockFilter)]


def attach_filter(fd, program):
    """Attach a classic BPF program (bytes of struct sock_filter) to socket fd."""
    n = len(program) // ctypes.sizeof(SockFilter)
    prog = (SockFilter * n).from_buffer_copy(program)
    fprog = SockFprog(n, prog)
    _check(_libc.setsockopt(fd, 1, SO_ATTACH_FILTER, ctypes.byref(fprog),
                            ctypes.sizeof(fprog)), "setsockopt(SO_ATTACH_FILTER)")


# A socket filter that drops every packet before the protocol sees it.
DROP_FILTER = bytes(SockFilter(BPF_RET_K, 0, 0, 0))


# SysV IPC (include/uapi/linux/ipc.h, shm.h, sem.h, msg.h)
IPC_CREAT = 0o1000
IPC_EXCL = 0o2000
IPC_NOWAIT = 0o4000
IPC_RMID = 0
IPC_SET = 1
IPC_STAT = 2
SHM_RDONLY = 0o10000
SHM_REMAP = 0o40000
SHM_EXEC = 0o100000
GETPID = 11
GETALL = 13
SETALL = 17
MSG_COPY = 0o40000                  # msgrcv: copy the message at index msgtyp (CHECKPOINT_RESTORE)
IPC_STAT_SIZE = 256                 # room for any of shmid64_ds/semid64_ds/msqid64_ds
# struct ipc64_perm, the start of every *id64_ds: key, uid, gid, cuid, cgid,
# mode (then seq and padding)
IPC64_PERM = struct.Struct("<iIIIIH")     # the *id64_ds fields: arch (x86_64.py)


def ipc_stat(call, ident):
    """IPC_STAT of a SysV object (call: "shmctl", "semctl" or "msgctl"):
    the raw *id64_ds bytes."""
    buf = ctypes.create_string_buffer(IPC_STAT_SIZE)
    if call == "semctl":
        syscall(call, ident, 0, IPC_STAT, buf)
    else:
        syscall(call, ident, IPC_STAT, buf)
    return buf


def ipc_set(call, ident, buf):
    if call == "semctl":
        syscall(call, ident, 0, IPC_SET, buf)
    else:
        syscall(call, ident, IPC_SET, buf)
