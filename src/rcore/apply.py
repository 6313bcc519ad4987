"""apply_* : put checkpointed kernel state into a stopped process, the inverse of
capture.py.  Shared by restore (the same live process) and restart (a fresh
one): nothing here assumes that the live thread set or descriptor table looks
like the checkpoint's.

Threads     apply_thread_state() registers, fs/gs base, XSAVE, signal mask,
            sigaltstack, robust list, clear_child_tid, rseq
            plan_threads(), end_thread(), create_thread(): make the thread set match
Process     plan_files() then apply_process_state(): descriptors (offsets, flags,
            reopened or closed, shared descriptions), signal handlers, cwd, umask

What only the process can do for itself is injected (linux/inject.py) from a
rebuild.Workspace, whose scratch page carries the structures passed by pointer.
plan_* functions only read, and raise Incompatible for what cannot be done, so
callers can refuse before they change anything."""

import errno
import os
import struct
from fcntl import F_SETFD, F_SETFL, FD_CLOEXEC
from os import O_ACCMODE, O_CLOEXEC, SEEK_SET

from . import arch, rseq
from .fds import capture_files, kind_of
from .errors import Incompatible, InjectedSyscallError, ProcessExited, PtraceError
from .linux import procfs, ptrace
from .linux.inject import Injector
from .linux.libc import AT_FDCWD, PR_SET_NAME, SS_DISABLE
from .linux.ptrace import Thread
from .record import field, record

ARCH = arch.host()
SIGKILL, SIGSTOP = 9, 19

# include/uapi/linux/sched.h
CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND = 0x100, 0x200, 0x400, 0x800
CLONE_THREAD, CLONE_SYSVSEM, CLONE_SETTLS = 0x10000, 0x40000, 0x80000
CLONE_PARENT_SETTID, CLONE_CHILD_CLEARTID = 0x100000, 0x200000
THREAD_FLAGS = (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD
                | CLONE_SYSVSEM | CLONE_SETTLS)
CLONE_ARGS = struct.Struct("<11Q")          # struct clone_args, CLONE_ARGS_SIZE_VER2

# Status flags F_SETFL can change (fs/fcntl.c SETFL_MASK); the others are fixed at open.
SETFL_MASK = 0o2000 | 0o4000 | 0o20000 | 0o40000 | 0o1000000


# --- threads -------------------------------------------------------------------------

def resume_regs(ts, restart_block_kept=False):
    """The registers a checkpointed thread must resume with: a thread that was in
    a system call reruns it (or gets EINTR where the kernel's restart block is
    lost, e.g. nanosleep), as after a signal (arch.restart_interrupted_syscall)."""
    return ARCH.restart_interrupted_syscall(ts.user_regs(ARCH), restart_block_kept)


def apply_thread_state(thread, ts, ws, *, full=True, restart_block_kept=False):
    """Give stopped `thread` (ptrace.Thread of the target) the checkpointed state
    `ts` (ThreadState): with `full` (the core has rcore's thread notes)
    sigaltstack, rseq, robust list and clear_child_tid first, by calls injected in
    that thread from workspace `ws`; then signal mask, XSAVE, and last the
    general registers including fs_base/gs_base, made to resume an interrupted
    system call as the kernel would (resume_regs).

    Memory must already be in place (rseq registration reads its area).  Without
    `full` (gdb's and the kernel's cores) only mask, XSAVE and registers are set.
    Returns a list of what could not be applied, in words."""
    missed = []
    if full:
        with Injector(thread, ws.syscall_addr) as inj:
            ss = ts.sigaltstack or {"ss_sp": 0, "ss_flags": SS_DISABLE, "ss_size": 0}
            addr = ws.put(struct.pack("<Qi4xQ", ss["ss_sp"], ss["ss_flags"], ss["ss_size"]))
            ret = inj.call("sigaltstack", addr, 0, check=False)
            if ret < 0:      # EPERM: the live thread is on its alternate stack now
                missed.append(f"sigaltstack of thread {thread.tid}: {os.strerror(-ret)}")
            if _rseq_differs(thread, ts):
                _apply_rseq(inj, thread, ts)
            head, length = ts.robust_list
            inj.call("set_robust_list", head, length or ARCH.ROBUST_LIST_HEAD_SIZE)
            inj.call("set_tid_address", ts.clear_child_tid)
    thread.set_sigmask(ts.sigmask)
    if ts.xstate:
        try:
            thread.set_xstate(ts.xstate)
        except PtraceError as err:
            if full:
                raise
            # another tool's XSAVE image the kernel refuses (e.g. other features)
            missed.append(f"FPU/vector registers of thread {thread.tid}: {err}")
    thread.set_regs(resume_regs(ts, restart_block_kept))
    return missed


def _rseq_differs(thread, ts):
    conf = thread.rseq_config()
    live = (conf.rseq_abi_pointer, conf.rseq_abi_size, conf.signature) \
        if conf and conf.rseq_abi_pointer else None
    want = (ts.rseq["ptr"], ts.rseq["size"], ts.rseq["signature"]) if ts.rseq else None
    return live != want


def _apply_rseq(inj, thread, ts):
    # rseq registers the calling thread only: unregister what the thread has now
    # (with its own arguments, as the kernel demands), then register the old one.
    rseq.drop_registration(inj)
    if ts.rseq:
        inj.call("rseq", ts.rseq["ptr"], ts.rseq["size"], 0, ts.rseq["signature"])


@record
class ThreadPlan:
    """How a live thread set becomes the checkpoint's.  pairs: (live Thread,
    ThreadState) to overwrite; extra: live Threads to end; missing: ThreadStates
    to create (see plan_threads for the pairing)."""
    pairs: list = field(default_factory=list)
    extra: list = field(default_factory=list)
    missing: list = field(default_factory=list)


def plan_threads(frozen, threads):
    """Match the threads of FrozenProcess `frozen` with checkpointed `threads`
    by TID; the leader takes the thread whose TID is the process's (or the
    first one, for a checkpoint of another PID).  Changes nothing."""
    plan = ThreadPlan()
    live = dict(frozen.threads)
    leader = live.pop(frozen.pid)
    first = next((t for t in threads if t.tid == frozen.pid), threads[0])
    plan.pairs.append((leader, first))
    for ts in threads:
        if ts is first:
            continue
        t = live.pop(ts.tid, None)
        if t is None:
            plan.missing.append(ts)
        else:
            plan.pairs.append((t, ts))
    plan.extra = list(live.values())
    return plan


def end_thread(frozen, thread, ws):
    """End one non-leader thread of a frozen process with an injected exit(0), as
    if it had returned.  Its clear_child_tid and robust futexes are written by
    the kernel as it exits: do this before memory is restored."""
    regs = thread.get_regs()
    ARCH.set_syscall(regs, ws.syscall_addr, ARCH.SYS["exit"], [0])
    thread.set_regs(regs)
    thread.cont()
    while True:
        try:
            stop = thread.wait()
        except ProcessExited:
            break
        if stop.exited:
            break
        thread.cont()
    frozen.threads.pop(thread.tid, None)


def create_thread(frozen, inj, ws, ts, *, same_tid=True):
    """Create a thread in frozen process `frozen` for ThreadState `ts`, by an
    injected clone3 in the thread of Injector `inj` (running from workspace ws):
    CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS with tls = ts's fs_base and,
    when ts.clear_child_tid is set, CLONE_PARENT_SETTID|CLONE_CHILD_CLEARTID on
    that address (glibc's pd->tid).  With same_tid, set_tid=[ts.tid] is asked
    for first (needs CAP_SYS_ADMIN in the PID namespace) and a fresh TID taken
    if that is refused.

    The new thread is auto-attached (PTRACE_O_TRACECLONE is set on the cloning
    thread for the call), stopped before running any instruction, and added to
    frozen.threads; its state is not applied yet: call apply_thread_state()."""
    parent = inj.thread
    parent.set_options(frozen.options | ptrace.PTRACE_O_TRACECLONE)
    try:
        tid = None
        if same_tid:
            tid = _clone3(inj, ws, ts, [ts.tid])
        if tid is None:
            tid = _clone3(inj, ws, ts, [])
    finally:
        parent.set_options(frozen.options)
    thread = Thread(tid, frozen.pid)
    frozen.threads[tid] = thread
    while True:                     # its first stop: PTRACE_EVENT_STOP
        stop = thread.wait()
        if stop.exited:
            frozen.threads.pop(tid, None)
            raise ProcessExited(frozen.pid, f"new thread {tid} died at once")
        if stop.stopped:
            break
    return thread


def _clone3(inj, ws, ts, set_tid):
    regs = ts.regs
    flags = THREAD_FLAGS
    ctid = ts.clear_child_tid
    if ctid:
        flags |= CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID
    tid_addr = ws.put(struct.pack(f"<{len(set_tid)}Q", *set_tid), 512) if set_tid else 0
    args = CLONE_ARGS.pack(flags, 0, ctid, ctid, 0, 0, 0, regs.get("fs_base", 0),
                           tid_addr, len(set_tid), 0)
    addr = ws.put(args)
    got = []

    def on_event(event, msg):
        if event == ptrace.PTRACE_EVENT_CLONE:
            got.append(msg)
    ret = inj.call("clone3", addr, CLONE_ARGS.size, check=False, on_event=on_event)
    if ret < 0:
        if set_tid and -ret in (errno.EEXIST, errno.EPERM, errno.EINVAL, errno.ENOSPC):
            return None
        raise InjectedSyscallError(inj.thread.tgid, "clone3", -ret)
    return got[0] if got else ret


def set_thread_name(thread, ws, name):
    """comm of one thread (prctl PR_SET_NAME runs in the thread itself)."""
    with Injector(thread, ws.syscall_addr) as inj:
        inj.call("prctl", PR_SET_NAME, ws.put(name.encode()[:15] + b"\0"), 0, 0, 0)


# --- files ------------------------------------------------------------------------

@record
class FilesPlan:
    """What turns the live descriptor table into the checkpoint's.  Computed by
    plan_files() before anything changes; applied by apply_files()."""
    close: list = field(default_factory=list)     # fd numbers
    reopen: list = field(default_factory=list)    # FileDescriptor to open by path
    dup: list = field(default_factory=list)       # (from fd, to fd): shared descriptions
    adjust: list = field(default_factory=list)    # (FileDescriptor wanted, live or None)


def _same_open_file(live, want):
    return (live.kind == want.kind and live.inode == want.inode and live.dev == want.dev
            and live.rdev == want.rdev
            and (live.flags & O_ACCMODE) == (want.flags & O_ACCMODE)
            and kind_of(want).same(live, want))


def _check_reopenable(f):
    if not kind_of(f).reopenable:
        raise Incompatible(f"fd {f.fd} ({f.path}) was closed or replaced since the "
                           f"checkpoint, and a {f.kind} cannot be reopened")
    if f.deleted:
        raise Incompatible(f"fd {f.fd}: {f.path} was deleted and cannot be reopened")
    try:
        st = os.stat(f.path)
    except OSError as err:
        raise Incompatible(f"fd {f.fd}: cannot reopen {f.path}: {err.strerror}") from None
    if (st.st_ino, st.st_dev) != (f.inode, f.dev):      # zeroed fields too
        raise Incompatible(f"fd {f.fd}: {f.path} was replaced by another file since "
                           "the checkpoint")


def plan_files(pid, files):
    """Compare the live descriptors of `pid` with checkpointed `files`
    (FileDescriptor list).  Raises Incompatible naming the fd when one must be
    reopened but cannot be (pipes, sockets, deleted or replaced files), or is
    above the process's limit of open files (dup2 would refuse it)."""
    live = {f.fd: f for f in capture_files(pid, with_data=False)}
    limit = procfs.read_rlimits(pid).get("nofile", [-1])[0]
    for f in files:
        if f.fd not in live and 0 <= limit <= f.fd:
            raise Incompatible(f"fd {f.fd} of the checkpoint is above the limit of open "
                               f"files of process {pid} ({limit})")
    want = {f.fd: f for f in files}
    plan = FilesPlan(close=sorted(fd for fd in live if fd not in want))
    kept = set()
    for fd in sorted(want):
        f, cur = want[fd], live.get(fd)
        if f.description == fd:
            if cur and cur.description == fd and _same_open_file(cur, f):
                kept.add(fd)
                plan.adjust.append((f, cur))
            else:
                _check_reopenable(f)
                plan.reopen.append(f)
                plan.adjust.append((f, None))
        elif f.description in kept and cur and cur.description == f.description:
            kept.add(fd)
            if cur.cloexec != f.cloexec:
                plan.adjust.append((f, cur))
        else:
            plan.dup.append((f.description, fd))
            plan.adjust.append((f, None))
    for f, cur in plan.adjust:
        if _seeks(f, cur):
            _check_offset(pid, f, cur)
    return plan


def _seeks(f, cur):
    """Does apply_files lseek this descriptor to its checkpointed offset?"""
    return f.description == f.fd and kind_of(f).seekable(f) and (cur is None or cur.pos != f.pos)


def _check_offset(pid, f, cur):
    """lseek to f.pos on rcore's own open file description of the same file (the
    process's is not touched): an offset past what the filesystem or device
    allows (EINVAL) refuses the core here rather than midway."""
    src = procfs.path(pid, "fd", str(f.fd)) if cur is not None else f.path
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | O_CLOEXEC)
    except OSError:
        return                  # rcore cannot tell: the restore will
    try:
        os.lseek(fd, f.pos, SEEK_SET)
    except OSError as err:
        raise Incompatible(f"fd {f.fd}: offset {f.pos} cannot be set on {f.path}: "
                           f"{err.strerror}") from None
    finally:
        os.close(fd)


def apply_files(inj, ws, plan):
    """Carry out a FilesPlan in the target (Injector inj, workspace ws).
    Returns what was left as it is, in words."""
    for fd in plan.close:
        inj.call("close", fd, check=False)
    for f in plan.reopen:
        flags = (f.flags & ~O_CLOEXEC) | O_CLOEXEC     # no leak before dup2
        tmp = inj.call("openat", AT_FDCWD, ws.put_str(f.path), flags, 0)
        if tmp != f.fd:
            inj.call("dup2", tmp, f.fd)
            inj.call("close", tmp)
    for src, dst in plan.dup:
        inj.call("dup2", src, dst)
    for f, cur in plan.adjust:
        primary = f.description == f.fd
        if _seeks(f, cur):
            inj.call("lseek", f.fd, f.pos, SEEK_SET)
        if primary and cur is not None and (cur.flags ^ f.flags) & SETFL_MASK:
            inj.call("fcntl", f.fd, F_SETFL, f.flags & SETFL_MASK)
        if cur is None or cur.cloexec != f.cloexec:
            inj.call("fcntl", f.fd, F_SETFD, FD_CLOEXEC if f.cloexec else 0)
    # The state of kept descriptors (eventfd counts, timers...): by their kinds.
    return [note for f, cur in plan.adjust if cur is not None and f.description == f.fd
            for note in kind_of(f).roll_back(ws.pid, cur, f)]


# --- process-wide ------------------------------------------------------------------

def check_process_state(proc):
    """What apply_process_state would fail on, checked before anything changes."""
    if proc.cwd and not os.path.isdir(proc.cwd):
        raise Incompatible(f"the checkpoint's working directory {proc.cwd} no longer exists")


def apply_process_state(pid, inj, ws, proc, files_plan=None):
    """Put back the process-wide state of ProcessState `proc` into stopped process
    `pid` through Injector `inj` (any live thread; running from workspace ws):
    signal handlers (rt_sigaction), cwd, umask, and the descriptor table
    (files_plan from plan_files(), computed here if not given: callers that must
    refuse before changing anything compute it first).

    Only for cores with rcore's notes (CoreFile.has_rcore): a kernel or gdb
    core's ProcessState holds defaults (cwd "/", umask 022), not the process's.
    Returns a list of what was not applied, in words."""
    missed = []
    for sa in proc.sigactions:
        if sa.signo in (SIGKILL, SIGSTOP):
            continue
        addr = ws.put(struct.pack("<QQQQ", sa.handler, sa.flags, sa.restorer, sa.mask))
        inj.call("rt_sigaction", sa.signo, addr, 0, 8)
    if proc.cwd:
        inj.call("chdir", ws.put_str(proc.cwd))
    if proc.umask is not None:
        inj.call("umask", proc.umask)
    if proc.files:
        missed += apply_files(inj, ws,
                              plan_files(pid, proc.files) if files_plan is None else files_plan)
    return missed
