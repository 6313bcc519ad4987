"""capture_* : read the kernel state of a frozen process into the state model.

Most of it comes from /proc and ptrace; what the kernel shows to no one but the
process itself (brk, signal handlers, sigaltstack, clear_child_tid, itimers,
dumpable) is asked for by system calls run inside the target (inject.py)."""

import mmap
import os
import struct

from . import arch
from .dirty import own_fds
from .linux import libc, pipes, procfs
from .linux.inject import Injector
from .linux.libc import PR_GET_DUMPABLE, PR_GET_TID_ADDRESS
from .elf.notes import find_build_id
from .errors import InjectedSyscallError
from .state import (ExeIdentity, FileDescriptor, FileIdentity, MmFields,
                    ProcessState, SigAction, ThreadState)

ARCH = arch.host()
NSIG = 64
SIGKILL, SIGSTOP = 9, 19
ITIMERS = ("real", "virtual", "prof")
SCRATCH_SIZE = 2 * ARCH.PAGE_SIZE     # a page for results, then a page of code
_THREAD_CODE_OFFSET = 256              # in the code page, after the sigaction loop


def capture_mappings(pid):
    mappings = procfs.read_smaps(pid)
    files = {}
    for e in mappings:
        if e.inode and not e.path.startswith("[") and e.path not in files:
            files[e.path] = _mapped_file_identity(pid, e)
    return mappings, files


def _mapped_file_identity(pid, entry):
    # map_files/ shows the file actually mapped, even when the path now names another.
    try:
        st = os.stat(procfs.path(pid, "map_files", f"{entry.start:x}-{entry.end:x}"))
    except OSError:
        return FileIdentity(entry.path, inode=entry.inode)
    return FileIdentity(entry.path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def capture_exe(pid):
    path = procfs.read_link(pid, "exe")
    if path.endswith(" (deleted)"):
        path = path[: -len(" (deleted)")]
    st = procfs.stat_exe(pid)
    build_id = find_build_id(procfs.path(pid, "exe"))
    return ExeIdentity(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, build_id)


# Unlinked files up to this size are stored whole in the core: nothing else
# will hold their contents once the process is gone.
UNLINKED_FILE_LIMIT = 1 << 20


def capture_files(pid, unlinked_limit=UNLINKED_FILE_LIMIT, with_data=True):
    """The descriptor table.  with_data: also what only the process holds (queued
    pipe bytes, unlinked files of at most unlinked_limit bytes) for a restart."""
    own = own_fds(pid)              # rcore's dirty tracking (dirty.py), not the program's
    infos = [i for i in procfs.read_fds(pid) if i.fd not in own]
    fds = []
    for info in infos:
        description = info.fd
        for earlier in fds:             # kcmp: which fds share one open file description
            if earlier.description == earlier.fd and _same_description(pid, earlier.fd, info.fd):
                description = earlier.fd
                break
        target = info.target
        deleted = target.endswith(" (deleted)")
        fds.append(FileDescriptor(
            fd=info.fd, kind=procfs.fd_kind(info),
            path=target[: -len(" (deleted)")] if deleted else target,
            flags=info.flags & ~os.O_CLOEXEC, pos=info.pos, cloexec=bool(info.flags & os.O_CLOEXEC),
            description=description, inode=info.ino, dev=info.st_dev, rdev=info.st_rdev,
            size=info.st_size, mtime_ns=info.st_mtime_ns, deleted=deleted))
    if with_data:
        _capture_fd_data(pid, fds, unlinked_limit)
    return fds


def _capture_fd_data(pid, fds, unlinked_limit):
    """What a restart cannot find anywhere else: the bytes queued in pipes and
    FIFOs (peeked without consuming them, see linux/pipes.py) and the contents
    of small unlinked files.  A failure here leaves the fields empty; restart
    then refuses what it cannot rebuild."""
    seen_pipes = set()
    for f in fds:
        try:
            if f.kind in ("pipe", "fifo") and (f.dev, f.inode) not in seen_pipes:
                seen_pipes.add((f.dev, f.inode))
                data, f.pipe_size = pipes.peek_pipe(pid, f.fd)
                f.queued = data.hex()
            elif f.kind == "file" and f.deleted and f.size <= unlinked_limit:
                with open(procfs.path(pid, "fd", str(f.fd)), "rb") as src:
                    f.contents = src.read(unlinked_limit + 1)[:unlinked_limit].hex()
                f.contents_stored = True
        except OSError:
            continue


def _same_description(pid, fd1, fd2):
    try:
        return libc.kcmp_file(pid, pid, fd1, fd2) == 0
    except OSError:
        return False


def capture_creds(status):
    return {"uid": [int(x) for x in status["Uid"].split()],
            "gid": [int(x) for x in status["Gid"].split()],
            "groups": [int(x) for x in status.get("Groups", "").split()]}


def capture_thread(thread):
    """Everything ptrace shows of a stopped thread (the rest is injected later)."""
    regs = thread.get_regs()
    rseq = thread.rseq_config()
    head, length = libc.get_robust_list(thread.tid)
    return ThreadState(
        tid=thread.tid, regs=regs.as_dict(), xstate=thread.get_xstate(),
        sigmask=thread.get_sigmask(), pending=thread.peek_siginfo(shared=False),
        robust_list=[head, length],
        rseq=({"ptr": rseq.rseq_abi_pointer, "size": rseq.rseq_abi_size,
               "signature": rseq.signature} if rseq and rseq.rseq_abi_pointer else {}),
        comm=procfs.read_comm(thread.tgid, tid=thread.tid))


def capture_process(frozen, syscall_addr, mappings=None, mapped_files=None, run_state=None,
                    unlinked_limit=UNLINKED_FILE_LIMIT):
    """The whole ProcessState of a FrozenProcess.  Threads are listed leader first.
    run_state: the state letter read before freezing (frozen, it reads "t")."""
    pid = frozen.pid
    st = procfs.read_stat(pid)
    if run_state:
        st.state = run_state
    status = procfs.read_status(pid)
    if mappings is None:
        mappings, mapped_files = capture_mappings(pid)
    cmdline = [a.decode("utf-8", "surrogateescape")
               for a in procfs.read_bytes(pid, "cmdline").split(b"\0")[:-1]]
    proc = ProcessState(
        pid=pid, arch=ARCH.NAME, ppid=st.ppid, pgrp=st.pgrp, sid=st.session, state=st.state,
        comm=st.comm, cmdline=cmdline, exe=capture_exe(pid),
        mm=MmFields(st.start_code, st.end_code, st.start_data, st.end_data, st.start_brk, 0,
                    st.start_stack, st.arg_start, st.arg_end, st.env_start, st.env_end),
        mappings=mappings, mapped_files=mapped_files or {}, files=capture_files(pid, unlinked_limit),
        auxv=procfs.read_bytes(pid, "auxv"), cwd=procfs.read_link(pid, "cwd"),
        root=procfs.read_link(pid, "root"), umask=int(status.get("Umask", "0022"), 8),
        rlimits=procfs.read_rlimits(pid),
        personality=int(procfs.read_bytes(pid, "personality").strip() or b"0", 16),
        creds=capture_creds(status), no_new_privs=int(status.get("NoNewPrivs", "0")),
        nice=st.nice,
        times={"utime": st.utime, "stime": st.stime, "cutime": st.cutime, "cstime": st.cstime})
    leader = frozen.leader()
    tids = [pid] + sorted(t for t in frozen.threads if t != pid)
    proc.threads = [capture_thread(frozen.threads[t]) for t in tids]
    proc.shared_pending = leader.peek_siginfo(shared=True)
    _capture_injected(frozen, syscall_addr, proc)
    return proc


def _capture_injected(frozen, syscall_addr, proc):
    """State only the process can ask for: run the calls in its own threads.
    Scratch pages receive the results and are unmapped again."""
    leader = frozen.leader()
    with Injector(leader, syscall_addr) as inj:
        scratch = _Scratch(inj, frozen.pid)
        try:
            proc.mm.brk = inj.call("brk", 0)
            proc.sigactions = _read_sigactions(inj, scratch, frozen.pid)
            proc.itimers = _read_itimers(inj, scratch.addr, frozen.pid)
            proc.dumpable = inj.call("prctl", PR_GET_DUMPABLE, 0, 0, 0, 0)
            for ts in proc.threads:
                thread = frozen.threads[ts.tid]
                if thread is leader:
                    _read_thread_injected(inj, scratch, frozen.pid, ts)
                else:
                    with Injector(thread, syscall_addr) as tinj:
                        _read_thread_injected(tinj, scratch, frozen.pid, ts)
        finally:
            scratch.remove(inj)


class _Scratch:
    """Pages mapped in the target: one for what injected calls return (.addr),
    then one holding the sigaction loop (.code) and the thread_info function
    (.thread_code); both None when the target may not make it executable (MDWE,
    SELinux execmem)."""

    def __init__(self, inj, pid):
        self.addr = inj.call("mmap", 0, SCRATCH_SIZE, mmap.PROT_READ | mmap.PROT_WRITE,
                             mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        self.code = self.thread_code = None
        try:
            code_at = self.addr + ARCH.PAGE_SIZE
            thread_code_at = code_at + _THREAD_CODE_OFFSET
            libc.write_memory(pid, code_at, ARCH.SIGACTION_LOOP_CODE)
            libc.write_memory(pid, thread_code_at, ARCH.THREAD_INFO_CODE)
            if inj.call("mprotect", code_at, ARCH.PAGE_SIZE, mmap.PROT_READ | mmap.PROT_EXEC,
                        check=False) == 0:
                self.code, self.thread_code = code_at, thread_code_at
        except BaseException:
            self.remove(inj)
            raise

    def remove(self, inj):
        inj.call("munmap", self.addr, SCRATCH_SIZE, check=False)


def _read_sigactions(inj, scratch, pid):
    return (_read_sigactions_at_once(inj, scratch, pid)
            or _read_sigactions_one_by_one(inj, scratch.addr, pid))


def _read_sigactions_at_once(inj, scratch, pid):
    """All handlers in one run of the scratch's sigaction loop (one ptrace stop
    instead of two per signal); None when the scratch has no executable page."""
    if scratch.code is None:
        return None
    size = ARCH.SIGACTION_SIZE
    results_at = scratch.addr + NSIG * size
    inj.run(scratch.code, 1, NSIG, scratch.addr, results_at,
            trap_at=scratch.code + len(ARCH.SIGACTION_LOOP_CODE) - 1)
    data = libc.read_memory(pid, scratch.addr, NSIG * (size + 8))
    results = struct.unpack_from(f"<{NSIG}q", data, NSIG * size)
    actions = []
    for sig in range(1, NSIG + 1):
        if sig in (SIGKILL, SIGSTOP):
            continue
        if -4096 < results[sig - 1] < 0:      # as the one-by-one path's check
            raise InjectedSyscallError(pid, "rt_sigaction", -results[sig - 1])
        handler, flags, restorer, mask = struct.unpack_from("<QQQQ", data, (sig - 1) * size)
        actions.append(SigAction(sig, handler, flags, restorer, mask))
    return actions


def _read_sigactions_one_by_one(inj, scratch, pid):
    actions = []
    for sig in range(1, NSIG + 1):
        if sig in (SIGKILL, SIGSTOP):
            continue
        inj.call("rt_sigaction", sig, 0, scratch, 8)
        handler, flags, restorer, mask = struct.unpack("<QQQQ", libc.read_memory(pid, scratch, 32))
        actions.append(SigAction(sig, handler, flags, restorer, mask))
    return actions


def _read_itimers(inj, scratch, pid):
    out = {}
    for which, name in enumerate(ITIMERS):
        inj.call("getitimer", which, scratch)
        isec, iusec, vsec, vusec = struct.unpack("<qqqq", libc.read_memory(pid, scratch, 32))
        out[name] = [isec * 1000000 + iusec, vsec * 1000000 + vusec]
    return out


def _read_thread_injected(inj, scratch, pid, ts):
    """clear_child_tid and sigaltstack, which only the thread itself can ask for:
    in one run of the thread_info function, or two calls without it."""
    at = scratch.addr
    if scratch.thread_code is not None:
        inj.run(scratch.thread_code, at,
                trap_at=scratch.thread_code + len(ARCH.THREAD_INFO_CODE) - 1)
        data = libc.read_memory(pid, at, ARCH.THREAD_INFO_SIZE)
        for name, (ret,) in (("prctl", struct.unpack_from("<q", data, 32)),
                             ("sigaltstack", struct.unpack_from("<q", data, 40))):
            if -4096 < ret < 0:
                raise InjectedSyscallError(pid, name, -ret)
    else:
        inj.call("prctl", PR_GET_TID_ADDRESS, at, 0, 0, 0)
        inj.call("sigaltstack", 0, at + 8)
        data = libc.read_memory(pid, at, 32)
    (ts.clear_child_tid,) = struct.unpack_from("<Q", data, 0)
    sp, flags, size = struct.unpack_from("<Qi4xQ", data, 8)
    ts.sigaltstack = {"ss_sp": sp, "ss_flags": flags, "ss_size": size}
