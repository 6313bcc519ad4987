"""spawn: a fresh process of a given executable, with a chosen PID, stopped under
ptrace right after execve, before any of its instructions run.

    rcore --fork--> launcher --clone3(set_tid=[pid], CLONE_PARENT)--> child
    child: waits on a pipe until rcore has seized it, installs the descriptors it
           is to keep at their numbers, closes everything else, execve()
    rcore: PTRACE_SEIZE (EXITKILL|TRACEEXEC|TRACECLONE), lets it go, waits for
           PTRACE_EVENT_EXEC, then for execve's syscall-exit stop.

Seizing rather than PTRACE_TRACEME lets the same code serve a child of rcore (it
can be waited for) and a detached process whose launcher has already exited (it
is reparented to init or the nearest subreaper, as a daemon would be).
PTRACE_O_EXITKILL: if rcore dies before it detaches, the half-built process
dies with it instead of running on in an arbitrary state.

The child is created by a raw clone3 system call from Python, in a launcher
process (see _launch); before execve it only makes plain system calls."""

import ctypes
import errno
import os
import resource
import signal
import struct
import time

from . import timens
from .errors import RcoreError
from .linux import libc, ptrace
from .linux.ptrace import Thread

CLONE_PARENT = 0x00008000     # the new process is a sibling of its creator
F_DUPFD = 0
CLOSE_RANGE_MAX = (1 << 32) - 1
SEIZE_OPTIONS = (ptrace.PTRACE_O_TRACESYSGOOD | ptrace.PTRACE_O_TRACEEXEC
                 | ptrace.PTRACE_O_TRACECLONE | ptrace.PTRACE_O_EXITKILL)


class CloneArgs(ctypes.Structure):
    """struct clone_args (include/uapi/linux/sched.h), CLONE_ARGS_SIZE_VER2."""
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
        "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")]


assert ctypes.sizeof(CloneArgs) == 88


class PidTaken(RcoreError):
    def __init__(self, pid, what="PID", hint="restart with --any-pid"):
        self.pid = pid
        super().__init__(f"{what} {pid} is in use by another process; end it first, "
                         f"or {hint}")


class PidNotSettable(RcoreError):
    def __init__(self, pid):
        self.pid = pid
        super().__init__(f"restarting as PID {pid} needs root (CAP_CHECKPOINT_RESTORE "
                         "for clone3 set_tid); use --any-pid to take any PID")


def pid_in_use(pid):
    return os.path.exists(f"/proc/{pid}") or os.path.exists(f"/proc/{pid}/task/{pid}")


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def check_pids_free(tids, zombie_wait=2.0):
    """The checkpointed PID and TIDs must all be free (clone3 set_tid needs that).
    A zombie is given zombie_wait seconds to be reaped: `rcore dump --kill` then
    `rcore restart` in a script otherwise races the killed process's parent."""
    deadline = time.monotonic() + zombie_wait
    for i, tid in enumerate(tids):
        while pid_in_use(tid) and _zombie(tid) and time.monotonic() < deadline:
            time.sleep(0.005)
        if pid_in_use(tid):
            raise PidTaken(tid, "PID" if i == 0 else "thread ID")


def clone_with_pid(pid, flags=0, exit_signal=signal.SIGCHLD):
    """fork() with a chosen PID (None: any), by a raw clone3.  Returns like fork;
    raises OSError (EEXIST: the PID is taken; EPERM: set_tid needs privilege)."""
    args = CloneArgs()
    args.flags = flags
    # With CLONE_PARENT the kernel takes the creator's own exit signal (SIGCHLD
    # for an os.fork() child) and refuses any other.
    args.exit_signal = 0 if flags & CLONE_PARENT else exit_signal
    tid = ctypes.c_int32(pid or 0)
    if pid:
        args.set_tid = ctypes.addressof(tid)
        args.set_tid_size = 1
    return libc.syscall("clone3", ctypes.byref(args), ctypes.sizeof(args))


def _launch(pid, detach, child, clocks=None):
    """Create the new process from a launcher forked for the purpose: a raw
    clone3 is only safe in a single-threaded process (no fork handlers run, so a
    lock another thread holds would stay held in the child), and the launcher,
    a fresh os.fork() child, is single-threaded whatever rcore's caller runs.
    The new process is rcore's child (CLONE_PARENT), or with detach, the
    launcher's in a new session: the launcher exits at once and the process is
    reparented to init or the nearest subreaper, as a daemon would be.
    clocks: the launcher first makes a time namespace for it (timens.py).
    `child()` runs in the new process and never returns."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        launcher = os.fork()
        if launcher == 0:
            step = "clone"
            try:
                os.close(r)
                if detach:
                    os.setsid()
                if clocks is not None:
                    step = "timens"
                    timens.enter_new(clocks)
                    step = "clone"
                got = clone_with_pid(pid, 0 if detach else CLONE_PARENT)
                if got == 0:
                    child()
            except OSError as err:
                got = -(err.errno or errno.EIO)
            except BaseException:
                got = -errno.EIO
            try:
                os.write(w, struct.pack("<i?", got, step == "timens"))
            finally:
                os._exit(0)
        os.close(w)
        w = -1
        os.waitpid(launcher, 0)
        data = os.read(r, 5)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    got, in_timens = struct.unpack("<i?", data) if len(data) == 5 else (-errno.EIO, False)
    if in_timens:
        raise RcoreError(f"cannot make a time namespace for the process: {os.strerror(-got)} "
                         "(restart with --host-clocks to keep the host's clocks)")
    if got == -errno.EEXIST:
        raise PidTaken(pid)
    if got == -errno.EPERM and pid:
        raise PidNotSettable(pid)
    if got < 0:
        raise RcoreError(f"cannot start a process: {os.strerror(-got)}")
    return got


def _install_fds(fds):
    """In the child: fds {number: rcore's descriptor}; every other descriptor is
    closed, rcore's own included."""
    # First lift every source above all numbers involved, so that installing one
    # cannot overwrite a source still needed.
    base = max([3, *fds, *fds.values()]) + 1
    high = {}
    for target, src in fds.items():
        if src not in high:
            high[src] = libc._libc.fcntl(src, F_DUPFD, base)
            if high[src] < 0:
                os._exit(126)
    keep = set(high.values())
    close_all_but(keep)
    for target, src in fds.items():
        os.dup2(high[src], target)          # dup2 clears FD_CLOEXEC: kept over exec
    close_all_but(set(fds))


def close_all_but(keep):
    lo = 0
    for fd in sorted(keep) + [CLOSE_RANGE_MAX + 1]:
        if fd > lo:
            libc.syscall("close_range", lo, fd - 1, 0)
        lo = fd + 1


def exec_when_told(exe, argv, env, fds, go_r, go_w, err_w, creds, pdeath_signal=0):
    """Runs in the new process; never returns.  go_w None: the caller holds no
    copy of rcore's end (spawn_tree)."""
    try:
        if go_w is not None:
            os.close(go_w)                  # EOF, not a hang, if rcore dies first
        if os.read(go_r, 1) != b"g":        # rcore has seized us
            os._exit(127)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        # Every disposition default, as restart assumes: SIG_IGN would survive
        # execve (Python ignores SIGPIPE and SIGXFSZ, nohup SIGHUP...).
        for sig in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
            signal.signal(sig, signal.SIG_DFL)
        if creds:
            os.setgroups(creds["groups"])
            os.setresgid(*creds["gid"][:3])
            os.setresuid(*creds["uid"][:3])
        if pdeath_signal:
            # After the credentials: changing them clears it.
            libc.prctl(libc.PR_SET_PDEATHSIG, pdeath_signal)
        fds = dict(fds)
        err_fd = max([2, *fds]) + 1          # a number the program does not use
        fds[err_fd] = err_w
        # Room for the highest descriptor (the checkpointed rlimits come later).
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = 2 * (max([err_fd, *fds.values()]) + 1)
        if soft < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
        _install_fds(fds)
        err_w = err_fd
        os.set_inheritable(err_w, False)     # closes when execve succeeds
        os.execve(exe, argv, env)
    except OSError as err:
        code = err.errno or errno.EIO
    except BaseException:
        code = errno.EIO
    try:
        os.write(err_w, struct.pack("<i", code))
    finally:
        os._exit(127)


def spawn_stopped(exe, argv, *, pid=None, fds=None, env=None, detach=False, creds=None,
                  clocks=None):
    """Start `exe` as PID `pid` (None: any PID) with descriptors `fds`
    ({number: rcore's fd}, nothing else is inherited) and return its seized
    Thread, stopped at the syscall-exit stop of its execve.  detach: the process
    is not rcore's child (its launcher exits; it is reparented as a daemon).
    creds: uid/gid/groups to take before execve (needs root).
    clocks: {"monotonic": ns, "boottime": ns} the process's clocks go on from,
    in a time namespace of its own (timens.py); None: the host's clocks."""
    fds = fds or {}
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if fds and max(fds) + 2 > hard:
        raise RcoreError(f"descriptor {max(fds)} is above the open-file limit rcore runs "
                         f"with ({hard}, RLIMIT_NOFILE hard limit)")
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    child = None
    try:
        child = _launch(pid, detach,
                        lambda: exec_when_told(exe, argv, env or {}, fds, go_r, go_w, err_w, creds),
                        clocks)
        thread = Thread(child, child)
        thread.seize(SEIZE_OPTIONS)
        os.close(err_w)
        err_w = -1
        os.write(go_w, b"g")
        child = None            # until_exec reaps it if it dies
        return until_exec(thread, err_r, exe)
    except BaseException:
        if child:
            kill_and_reap(child)
        raise
    finally:
        for fd in (go_r, go_w, err_r, err_w):
            if fd >= 0:
                os.close(fd)


def until_exec(thread, err_r, exe):
    """Let a seized child that was told to go run to the syscall-exit stop of
    its execve; err_r: the pipe its exec_when_told() writes errno to if execve fails.
    Returns the thread; kills and reaps the child on any failure."""
    try:
        stop = thread.wait()
        while not (stop.stopped and stop.event == ptrace.PTRACE_EVENT_EXEC):
            if stop.exited:
                data = os.read(err_r, 4)
                why = os.strerror(struct.unpack("<i", data)[0]) if len(data) == 4 else \
                    f"it ended first ({_ended(stop.status)})"
                raise RcoreError(f"cannot execute {exe}: {why}")
            thread.cont(stop.sig if stop.is_signal_delivery else 0)
            stop = thread.wait()
        # On to execve's syscall-exit stop, still before any user instruction:
        # from there injected calls run like from any syscall stop (from the
        # event stop, the first PTRACE_SYSCALL would end execve itself).  The
        # kernel has dropped the pre-exec rseq registration by then.
        thread.syscall()
        stop = thread.wait()
        while not stop.is_syscall:
            if stop.exited:
                raise RcoreError(f"{exe} died right after execve")
            thread.syscall(stop.sig if stop.is_signal_delivery else 0)
            stop = thread.wait()
        return thread
    except BaseException:
        kill_and_reap(thread.tid)
        raise


def _ended(status):
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)}"


def kill_and_reap(pid, reaped_elsewhere=False):
    """End a half-built process for good: SIGKILL, then wait until it is gone
    (as its tracer or parent), so that its PID is free again.  Non-leader
    threads are reaped first: waitpid on the leader waits for them.
    reaped_elsewhere: not rcore's child (a member of a tree): once dead and no
    longer rcore's tracee, its parent or init reaps it, whenever that is."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(10000):
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except FileNotFoundError:
            return
        mine = False
        for tid in sorted(tids, key=lambda t: t == pid):
            try:
                os.waitpid(tid, ptrace.WALL | os.WNOHANG)
                mine = True
            except ChildProcessError:
                pass
        if not os.path.exists(f"/proc/{pid}"):
            return
        if reaped_elsewhere and not mine and _zombie(pid):
            return
        time.sleep(0.001)
