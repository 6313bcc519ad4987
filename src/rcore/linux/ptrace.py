"""ptrace: seizing threads, reading and writing their state, and freezing a whole
thread group as one instant.

PTRACE_SEIZE rather than ATTACH: no SIGSTOP is sent, a group stop stays visible,
and if rcore dies the kernel detaches every tracee, which then runs on."""

import ctypes
import errno
import os
import signal
import threading
import time

from .. import arch
from ..errors import AccessDenied, NoSuchProcess, ProcessExited, PtraceError, RcoreError
from . import libc, procfs

ARCH = arch.host()

PTRACE_TRACEME = 0
PTRACE_CONT = 7
PTRACE_KILL = 8
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETSIGINFO = 0x4202
PTRACE_SETSIGINFO = 0x4203
PTRACE_GETREGSET = 0x4204
PTRACE_SETREGSET = 0x4205
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_PEEKSIGINFO = 0x4209
PTRACE_GETSIGMASK = 0x420A
PTRACE_SETSIGMASK = 0x420B
PTRACE_GET_RSEQ_CONFIGURATION = 0x420F

PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACEFORK = 0x2
PTRACE_O_TRACEVFORK = 0x4
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_EXITKILL = 0x100000
PTRACE_O_SUSPEND_SECCOMP = 0x200000   # root only: the filters ignore the tracee's calls

PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_STOP = 128

PTRACE_PEEKSIGINFO_SHARED = 1

NT_PRSTATUS = 1
WALL = 0x40000000          # __WALL: wait for threads and clone children too
SIGINFO_SIZE = 128
SYSCALL_TRAP = signal.SIGTRAP | 0x80   # with PTRACE_O_TRACESYSGOOD

_REQUEST_NAMES = {v: k for k, v in globals().items()
                  if k.startswith("PTRACE_") and not k.startswith(("PTRACE_O_", "PTRACE_EVENT_"))}


class SiginfoBuf(ctypes.Array):
    _type_ = ctypes.c_char
    _length_ = SIGINFO_SIZE


class PeekSiginfoArgs(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("flags", ctypes.c_uint32), ("nr", ctypes.c_int32)]


class RseqConfiguration(ctypes.Structure):
    """struct ptrace_rseq_configuration (include/uapi/linux/ptrace.h)"""
    _fields_ = [("rseq_abi_pointer", ctypes.c_uint64), ("rseq_abi_size", ctypes.c_uint32),
                ("signature", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)]


def ptrace(request, pid, addr=0, data=0):
    """The one call site: errors become exceptions that name pid and request."""
    res, err = libc.ptrace_raw(request, pid, addr, data)
    if err:
        name = _REQUEST_NAMES.get(request, hex(request))
        if err == errno.ESRCH:
            raise NoSuchProcess(pid, f"thread {pid} is gone or not stopped ({name})")
        if err == errno.EPERM and request == PTRACE_SEIZE:
            if _is_zombie(pid):
                raise ProcessExited(pid, f"process {pid} has exited (a zombie its parent "
                                         "has not reaped)")
            raise AccessDenied(pid, f"not permitted to trace process {pid} "
                                    "(already traced, or ptrace refused)")
        raise PtraceError(pid, name, err)
    return res


def _is_zombie(tid):
    # The kernel refuses to seize an exited thread with EPERM, as it refuses a
    # forbidden one: /proc tells the two apart.
    try:
        return procfs.read_stat(tid).state in ("Z", "X")
    except RcoreError:
        return False


def _thread_alive(pid, tid):
    try:
        return procfs.read_stat(tid).state not in ("Z", "X") and \
            os.path.exists(f"/proc/{pid}/task/{tid}")
    except RcoreError:
        return False


class Stop:
    """What waitpid reported about a traced thread (decoded once: a freeze
    looks at a few stops of every thread)."""
    __slots__ = ("tid", "status", "exited", "stopped", "sig", "event")

    def __init__(self, tid, status):
        self.tid, self.status = tid, status
        self.exited = os.WIFEXITED(status) or os.WIFSIGNALED(status)
        self.stopped = os.WIFSTOPPED(status)
        self.sig = os.WSTOPSIG(status) if self.stopped else 0
        self.event = (status >> 16) & 0xFF if self.stopped else 0

    @property
    def is_syscall(self):
        return self.stopped and self.sig == SYSCALL_TRAP

    @property
    def is_signal_delivery(self):
        """A signal on its way in: it must be passed on when the thread resumes."""
        return self.stopped and self.event == 0 and self.sig != SYSCALL_TRAP

    @property
    def is_group_stop(self):
        return self.event == PTRACE_EVENT_STOP and self.sig in (
            signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)

    def __repr__(self):
        return f"Stop(tid={self.tid}, status={self.status:#x})"


# Exit statuses this wait() took: a tracee that is also rcore's own child (a job
# of `rcore run`) is reaped here when it dies while traced, and its parent's
# own wait would then find no child (subprocess reports that as status 0).
EXITED = {}                         # pid -> wait status


def wait(tid, nohang=False):
    flags = WALL | (os.WNOHANG if nohang else 0)
    while True:
        try:
            got, status = os.waitpid(tid, flags)
        except ChildProcessError:
            raise ProcessExited(tid, f"thread {tid} is gone") from None
        except InterruptedError:
            continue
        if got == 0:
            return None
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            EXITED[got] = status
        return Stop(got, status)


class Thread:
    """One seized thread.  Methods need it to be in a ptrace stop."""

    def __init__(self, tid, tgid):
        self.tid, self.tgid = tid, tgid
        self.pending_signal = 0     # signal to hand back when the thread resumes
        self.last_stop = None

    # --- attaching and running -------------------------------------------------
    def seize(self, options=PTRACE_O_TRACESYSGOOD):
        ptrace(PTRACE_SEIZE, self.tid, 0, options)

    def set_options(self, options):
        ptrace(PTRACE_SETOPTIONS, self.tid, 0, options)

    def interrupt(self):
        ptrace(PTRACE_INTERRUPT, self.tid)

    def cont(self, sig=0):
        ptrace(PTRACE_CONT, self.tid, 0, sig)

    def syscall(self, sig=0):
        ptrace(PTRACE_SYSCALL, self.tid, 0, sig)

    def detach(self, sig=0):
        ptrace(PTRACE_DETACH, self.tid, 0, sig)

    def wait(self):
        stop = wait(self.tid)
        self.last_stop = stop
        return stop

    def event_msg(self):
        msg = ctypes.c_ulong()
        ptrace(PTRACE_GETEVENTMSG, self.tid, 0, ctypes.addressof(msg))
        return msg.value

    # --- registers -------------------------------------------------------------
    def get_regs(self):
        regs = ARCH.UserRegs()
        ptrace(PTRACE_GETREGS, self.tid, 0, ctypes.addressof(regs))
        return regs

    def set_regs(self, regs):
        ptrace(PTRACE_SETREGS, self.tid, 0, ctypes.addressof(regs))

    def get_regset(self, note_type, max_size):
        buf = _BUFFERS.regset
        if max_size > len(buf):
            buf = ctypes.create_string_buffer(max_size)
        iov = _BUFFERS.iov
        iov.iov_base, iov.iov_len = ctypes.addressof(buf), max_size
        ptrace(PTRACE_GETREGSET, self.tid, note_type, ctypes.addressof(iov))
        return ctypes.string_at(buf, iov.iov_len)

    def set_regset(self, note_type, data):
        buf = ctypes.create_string_buffer(bytes(data), len(data))
        iov = libc.IoVec(ctypes.addressof(buf), len(data))
        ptrace(PTRACE_SETREGSET, self.tid, note_type, ctypes.addressof(iov))

    def get_xstate(self):
        return self.get_regset(ARCH.NT_ARCH_XSTATE, ARCH.XSTATE_MAX)

    def set_xstate(self, data):
        self.set_regset(ARCH.NT_ARCH_XSTATE, data)

    # --- signals -----------------------------------------------------------------
    def get_sigmask(self):
        mask = ctypes.c_uint64()
        ptrace(PTRACE_GETSIGMASK, self.tid, 8, ctypes.addressof(mask))
        return mask.value

    def set_sigmask(self, mask):
        value = ctypes.c_uint64(mask)
        ptrace(PTRACE_SETSIGMASK, self.tid, 8, ctypes.addressof(value))

    def get_siginfo(self):
        buf = SiginfoBuf()
        ptrace(PTRACE_GETSIGINFO, self.tid, 0, ctypes.addressof(buf))
        return bytes(buf)

    def peek_siginfo(self, shared):
        """Pending signals (their siginfo) of this thread, or of the whole process
        when shared; the queue is left as it is."""
        out = []
        bufs, args = _BUFFERS.siginfo, _BUFFERS.peek
        args.flags, args.nr = PTRACE_PEEKSIGINFO_SHARED if shared else 0, _PEEK_BATCH
        while True:
            args.off = len(out)
            n = ptrace(PTRACE_PEEKSIGINFO, self.tid, ctypes.addressof(args), ctypes.addressof(bufs))
            out.extend(bytes(bufs[i]) for i in range(n))
            if n < _PEEK_BATCH:
                return out

    # --- rseq ------------------------------------------------------------------
    def rseq_config(self):
        conf = RseqConfiguration()
        try:
            ptrace(PTRACE_GET_RSEQ_CONFIGURATION, self.tid, ctypes.sizeof(conf),
                   ctypes.addressof(conf))
        except PtraceError as err:
            if err.errno in (errno.EIO, errno.EINVAL):   # kernel without rseq
                return None
            raise
        return conf


_PEEK_BATCH = 32


class _Buffers(threading.local):
    """Buffers of the requests that read much, one set per tracer thread (a tree
    dump has several): a freeze reads every thread's XSAVE image and pending
    signals, and a fresh 16 KiB buffer each time cost more than the request."""

    def __init__(self):
        self.regset = ctypes.create_string_buffer(ARCH.XSTATE_MAX)
        self.iov = libc.IoVec()
        self.siginfo = (SiginfoBuf * _PEEK_BATCH)()
        self.peek = PeekSiginfoArgs()


_BUFFERS = _Buffers()


def list_threads(pid):
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        raise NoSuchProcess(pid) from None


def _thread_count(pid):
    """How many threads pid has: the link count of /proc/PID/task is 2 plus
    the thread group's count.  One stat, where listing them took a millisecond
    for 1000 threads."""
    try:
        return os.stat(f"/proc/{pid}/task").st_nlink - 2
    except FileNotFoundError:
        raise NoSuchProcess(pid) from None


class FrozenProcess:
    """All threads of `pid` seized and stopped at one instant.

    Use as a context manager: on leaving, every thread is detached again, whatever
    happened inside (an error, Ctrl-C).  Threads created while seizing are caught by
    listing /proc/PID/task again until every listed thread is stopped (or the
    process has as many threads as are stopped): a stopped thread cannot create
    another.

    leader_only: the main thread alone, the others running on: for a call in
    it that needs no instant (a dump's last call, reaping its copy).
    seized_at: time.monotonic() of the first seize, where the freeze begins."""

    def __init__(self, pid, options=PTRACE_O_TRACESYSGOOD, leader_only=False):
        self.pid = pid
        self.options = options
        self.leader_only = leader_only
        self.threads = {}          # tid -> Thread, in stopped state
        self.was_group_stopped = False
        self.seized_at = None

    def __enter__(self):
        if not os.path.exists(f"/proc/{self.pid}"):
            raise NoSuchProcess(self.pid)
        try:
            self._freeze()
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def _freeze(self):
        while True:
            if self.leader_only:
                new = [] if self.threads else [self.pid]
            elif self.threads and _thread_count(self.pid) == len(self.threads):
                # every thread is seized: a stopped thread leaves its stop only
                # by an end of the whole process, which the dump then meets
                break
            else:
                new = [tid for tid in list_threads(self.pid) if tid not in self.threads]
            if not new:
                break
            if self.seized_at is None:
                self.seized_at = time.monotonic()
            for tid in new:
                thread = Thread(tid, self.pid)
                try:
                    thread.seize(self.options)
                except (NoSuchProcess, ProcessExited, AccessDenied):
                    if tid == self.pid or _thread_alive(self.pid, tid):
                        raise
                    continue          # a thread that exited meanwhile (an exiting
                                      # thread refuses with EPERM)
                self.threads[tid] = thread
                try:
                    thread.interrupt()
                except NoSuchProcess:
                    pass
            for tid in new:
                if tid in self.threads:
                    self._wait_stopped(self.threads[tid])
        if self.pid not in self.threads:
            raise ProcessExited(self.pid)

    def _wait_stopped(self, thread):
        while True:
            try:
                stop = thread.wait()
            except ProcessExited:
                self._forget(thread)
                return
            if stop.exited:
                self._forget(thread)
                if thread.tid == self.pid:
                    raise ProcessExited(self.pid)
                return
            if stop.is_signal_delivery:
                # Let the signal in (its handler frame becomes part of the snapshot);
                # the pending interrupt stops the thread right after.
                thread.cont(stop.sig)
                continue
            if stop.is_group_stop:
                self.was_group_stopped = True
            return

    def _forget(self, thread):
        self.threads.pop(thread.tid, None)

    def leader(self):
        return self.threads[self.pid]

    def add_options(self, options):
        """Set more ptrace options on every thread (and threads created later
        through create_thread, which uses self.options)."""
        self.options |= options
        for thread in self.threads.values():
            thread.set_options(self.options)

    def release(self, final_signal=0):
        """Detach every thread; `final_signal` (e.g. SIGSTOP) is sent to the process
        first so that it takes effect as the threads leave the ptrace stop."""
        if final_signal:
            try:
                os.kill(self.pid, final_signal)
            except ProcessLookupError:
                pass
        for thread in list(self.threads.values()):
            try:
                thread.detach(thread.pending_signal)
            except (NoSuchProcess, PtraceError):
                pass
        self.threads.clear()
