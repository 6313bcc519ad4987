"""capture_* : read the kernel state of a frozen process into the state model.

Most of it comes from /proc and ptrace; what the kernel shows to no one but the
process itself (brk, signal handlers, sigaltstack, clear_child_tid, itimers,
dumpable) is asked for by system calls run inside the target (inject.py)."""

import mmap
import os
import struct

from . import arch, frozenmaps, settings, timens, timers, tree
from .linux import libc, procfs
from .linux.calllist import OUT, CallList
from .linux.inject import Injector, frame_slot_size, map_marked, write_code
from .linux.libc import PR_GET_DUMPABLE, PR_GET_NAME, PR_GET_TID_ADDRESS
from .elf.notes import find_build_id
from .errors import InjectedSyscallError, RcoreError
from .fds import UNLINKED_FILE_LIMIT, capture_files
from .state import (ITIMERS, ExeIdentity, FileIdentity, MmFields,
                    ProcessState, SigAction, ThreadState)

ARCH = arch.host()
NSIG = 64
SIGKILL, SIGSTOP = 9, 19


def capture_mappings(pid, early=None):
    """(mappings, mapped files' identities, exact) of frozen process pid; with
    early (frozenmaps.Early), exact is False when the VmFlags are early's and
    must pass frozenmaps.check_flags once the process runs again."""
    mappings, exact = frozenmaps.at_freeze(pid, early)
    files = {}
    for e in mappings:
        if e.inode and not e.path.startswith("[") and e.path not in files:
            files[e.path] = _mapped_file_identity(pid, e)
    return mappings, files, exact


def _mapped_file_identity(pid, entry):
    # map_files/ shows the file actually mapped, even when the path now names
    # another; it needs CAP_CHECKPOINT_RESTORE.  Without it, the file at the path
    # is the mapped one when its device and inode are those maps shows.
    mapped = procfs.path(pid, "map_files", f"{entry.start:x}-{entry.end:x}")
    try:
        st = os.stat(mapped)
    except OSError:
        mapped = entry.path
        try:
            st = os.stat(mapped)
        except OSError:
            return FileIdentity(entry.path, inode=entry.inode)
        if (st.st_ino, st.st_dev) != (entry.inode, procfs.parse_dev(entry.dev)):
            return FileIdentity(entry.path, inode=entry.inode)
    return _identity(FileIdentity, entry.path, st, mapped)


def _identity(cls, path, st, build_id_from):
    return cls(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
               _build_id(st, build_id_from), st.st_ctime_ns)


# build-id by (device, inode, size, mtime, ctime): a file that has not changed
# is not read again, e.g. the libraries every process of a tree maps, or every
# periodic checkpoint of `rcore run` (reading them is part of the freeze).
_BUILD_IDS = {}
_BUILD_IDS_MAX = 4096


def _build_id(st, path):
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    found = _BUILD_IDS.get(key)
    if found is None:
        found = find_build_id(path)
        if len(_BUILD_IDS) >= _BUILD_IDS_MAX:
            _BUILD_IDS.clear()
        _BUILD_IDS[key] = found
    return found


def capture_exe(pid):
    path = procfs.read_link(pid, "exe")
    if path.endswith(" (deleted)"):
        path = path[: -len(" (deleted)")]
    return _identity(ExeIdentity, path, procfs.stat_exe(pid), procfs.path(pid, "exe"))


def capture_creds(status):
    return {"uid": [int(x) for x in status["Uid"].split()],
            "gid": [int(x) for x in status["Gid"].split()],
            "groups": [int(x) for x in status.get("Groups", "").split()]}


def capture_thread(thread, known=None, pending=True):
    """Everything ptrace shows of a stopped thread; the rest (its name and
    robust list too: one /proc read and one system call fewer per thread) is
    asked by the thread itself later (_Runner.thread_info).
    known: a dict that gets, under the tid, what an Injector of this thread
    would read again (inject.Injector's `known`).
    pending false: its pending signals are left for _Runner, which asks for
    them only if the thread says it has some (a request fewer per thread)."""
    regs = thread.get_regs()
    rseq = thread.rseq_config()
    sigmask = thread.get_sigmask()
    if known is not None:
        known[thread.tid] = (regs, sigmask, rseq)     # (capture_process adds the rseq area)
    return ThreadState(
        tid=thread.tid, regs=regs.as_dict(), xstate=thread.get_xstate(),
        sigmask=sigmask, pending=thread.peek_siginfo(shared=False) if pending else [],
        rseq=({"ptr": rseq.rseq_abi_pointer, "size": rseq.rseq_abi_size,
               "signature": rseq.signature} if rseq and rseq.rseq_abi_pointer else {}))


def capture_process(frozen, syscall_addr, mappings=None, mapped_files=None, run_state=None,
                    unlinked_limit=UNLINKED_FILE_LIMIT, tcp_lock=None, safe=None,
                    rseq_areas=None, also=None, before=None):
    """The whole ProcessState of a FrozenProcess.  Threads are listed leader first.
    run_state: the state letter read before freezing (frozen, it reads "t").
    safe (inject.SafeSites): guard the injected calls against rcore's death.
    rseq_areas: a dict that gets each thread's rseq area (address -> bytes) as
    it is at the freeze, read before any injected call (see read_rseq_areas).
    also(inj, scratch): more calls to inject with the others (a tree's
    pdeath signal).  before: its tree.Before, read before the freeze."""
    pid = frozen.pid
    clocks = timens.capture_clocks(pid)
    st = procfs.read_stat(pid)
    if run_state:
        st.state = run_state
    status = procfs.read_status(pid)
    if mappings is None:
        mappings, mapped_files, _ = capture_mappings(pid)
    cmdline = [a.decode("utf-8", "surrogateescape")
               for a in procfs.read_bytes(pid, "cmdline").split(b"\0")[:-1]]
    proc = ProcessState(
        pid=pid, arch=ARCH.NAME, ppid=st.ppid, pgrp=st.pgrp, sid=st.session, state=st.state,
        comm=st.comm, cmdline=cmdline, exe=capture_exe(pid),
        mm=MmFields(st.start_code, st.end_code, st.start_data, st.end_data, st.start_brk, 0,
                    st.start_stack, st.arg_start, st.arg_end, st.env_start, st.env_end),
        mappings=mappings, mapped_files=mapped_files or {}, files=capture_files(pid, unlinked_limit, tcp_lock=tcp_lock),
        auxv=procfs.read_bytes(pid, "auxv"), cwd=procfs.read_link(pid, "cwd"),
        root=procfs.read_link(pid, "root"), umask=int(status.get("Umask", "0022"), 8),
        rlimits=procfs.read_rlimits(pid),
        personality=int(procfs.read_bytes(pid, "personality").strip() or b"0", 16),
        creds=capture_creds(status), no_new_privs=int(status.get("NoNewPrivs", "0")),
        nice=st.nice,
        times={"utime": st.utime, "stime": st.stime, "cutime": st.cutime, "cstime": st.cstime},
        clocks=clocks, start_time=st.start_time, boot_id=procfs.read_boot_id(),
        children=tree.children_frozen(pid, before, _namespace_init(status)))
    leader = frozen.leader()
    tids = [pid] + sorted(t for t in frozen.threads if t != pid)
    known = {}
    proc.threads = [capture_thread(frozen.threads[t], known, pending=t == pid) for t in tids]
    proc.shared_pending = leader.peek_siginfo(shared=True)
    areas = read_rseq_areas(pid, proc.threads)
    if rseq_areas is not None:
        rseq_areas.update(areas)
    for ts in proc.threads:
        known[ts.tid] += (areas.get(ts.rseq.get("ptr")) if ts.rseq else None,)
    _capture_injected(frozen, syscall_addr, proc, status, safe, known, also)
    return proc


def _namespace_init(status):
    # NSpid lists the process's PID in each namespace, its own last
    return status.get("NSpid", "").split()[-1:] == ["1"]


def read_rseq_areas(pid, threads):
    """{address: bytes} of the threads' rseq areas (ThreadState.rseq), in one
    process_vm_readv.  The kernel rewrites a thread's area (cpu_id...) whenever
    it returns to user space, which injected calls make it do: a core must hold
    the values of the frozen instant, read before them."""
    areas = {ts.rseq["ptr"]: ts.rseq["size"] for ts in threads if ts.rseq}
    if not areas:
        return {}
    buf = bytearray(sum(areas.values()))
    at = libc.buffer_address(buf)
    local, remote, off = [], [], 0
    for addr, size in areas.items():
        local.append((at + off, size))
        remote.append((addr, size))
        off += size
    if libc.process_vm_readv(pid, local, remote) != len(buf):
        # one area unreadable (a program may unmap its rseq area): each alone
        return {addr: libc.read_memory(pid, addr, size) for addr, size in areas.items()}
    out, off = {}, 0
    for addr, size in areas.items():
        out[addr] = bytes(buf[off:off + size])
        off += size
    return out


def _capture_injected(frozen, syscall_addr, proc, status, safe=None, known=None, also=None):
    """State only the process can ask for: run the calls in its own threads
    (guarded calls with `safe`, inject.SafeSites).  A scratch mapping receives the
    results and is unmapped again.  Guarded, and with a signal the program
    ignores (stop_signal) and a page of code, the leader's calls are one run of
    a loop over them (calllist.CallList) and each other thread's state one run
    of a function, each ending in that signal's delivery stop: one ptrace stop
    instead of two per call."""
    pid = frozen.pid
    leader = frozen.leader()
    calls = CallList()
    brk = calls.add("brk", 0)
    actions = ask_sigactions(calls, pid)
    itimers = [calls.add("getitimer", which, OUT, out=32) for which in range(len(ITIMERS))]
    dumpable = calls.add("prctl", PR_GET_DUMPABLE, 0, 0, 0, 0)
    leader_info = _ask_thread_info(calls, pid)
    finish = [timers.capture(calls, pid), settings.capture(calls, pid, proc.mappings)]
    if also is not None:
        finish.append(also(calls))
    # The other threads' signal frames go to the scratch mapping, after the
    # calls' table, rather than below their stack pointers: a thread may be
    # running on a signal stack or a small stack of a runtime's own.
    # Each thread's results follow the frames (the threads run at once).
    slots, size = {}, (calls.size + 63) & ~63
    for ts in proc.threads[1:]:
        slots[ts.tid] = size
        size += frame_slot_size(ts.xstate)
    results_at = size
    size += len(proc.threads) * _RESULT_SLOT
    size = (size + ARCH.PAGE_SIZE - 1) & -ARCH.PAGE_SIZE
    sig = stop_signal(status, proc) if safe is not None else None
    with Injector(leader, syscall_addr, block_signals=True, safe=safe,
                  xstate=proc.threads[0].xstate) as inj:
        scratch = map_marked(inj, size, mmap.PROT_READ | mmap.PROT_WRITE)
        if -4096 < scratch < 0:
            raise InjectedSyscallError(pid, "mmap", -scratch)
        code = None
        try:
            if sig:
                code = _map_code(inj, pid)
            calls.run(inj, scratch, code=code, sig=sig)
            proc.mm.brk = brk.result(pid)
            proc.sigactions = actions()
            proc.itimers = {name: _itimer(call, pid) for name, call in zip(ITIMERS, itimers)}
            proc.dumpable = dumpable.result(pid)
            leader_info(proc.threads[0])
            proc.timers, proc.settings, *_ = [done() for done in finish]
            runner = _Runner(code, sig, scratch, pid)
            others = [(ts, lambda frames, ts=ts: Injector(
                frozen.threads[ts.tid], syscall_addr, block_signals=True, safe=safe,
                frame_at=scratch + slots[ts.tid], xstate=ts.xstate,
                known=(known or {}).get(ts.tid), frames=frames)) for ts in proc.threads[1:]]
            runner.threads_info(others, scratch + results_at)
        finally:
            if code is not None:
                inj.call("munmap", code, ARCH.PAGE_SIZE, check=False)
            inj.call("munmap", scratch, size, check=False)


def ask_sigactions(calls, pid):
    """Add an rt_sigaction read of every signal's action to `calls`; returns
    the function that, once they have run, returns the SigActions."""
    asked = [(sig, calls.add("rt_sigaction", sig, 0, OUT, 8, out=ARCH.SIGACTION_SIZE))
             for sig in range(1, NSIG + 1) if sig not in (SIGKILL, SIGSTOP)]

    def done():
        actions = []
        for sig, call in asked:
            call.result(pid)
            handler, flags, restorer, mask = struct.unpack("<QQQQ", call.data)
            actions.append(SigAction(sig, handler, flags, restorer, mask))
        return actions
    return done


def _ask_thread_info(calls, pid):
    """Add the calling thread's thread_info calls (arch THREAD_INFO_CODE's) to
    `calls`; returns the function that, once they have run, sets them in a
    ThreadState."""
    tid_address = calls.add("prctl", PR_GET_TID_ADDRESS, OUT, 0, 0, 0, out=8)
    altstack = calls.add("sigaltstack", 0, OUT, out=ARCH.STACK_T.size)
    name = calls.add("prctl", PR_GET_NAME, OUT, 0, 0, 0, out=16)
    robust = calls.add("get_robust_list", 0, OUT, OUT + 8, out=16)

    def done(ts):
        for call in (tid_address, altstack, name, robust):
            call.result(pid)
        _set_thread_info(ts, _U64.unpack(tid_address.data)[0], ARCH.STACK_T.unpack(altstack.data))
        ts.comm = _decode_comm(name.data)
        ts.robust_list = list(struct.unpack("<QQ", robust.data))
    return done


def _itimer(call, pid):
    call.result(pid)
    isec, iusec, vsec, vusec = struct.unpack("<qqqq", call.data)
    return [isec * 1000000 + iusec, vsec * 1000000 + vusec]


# Signals whose default action is to ignore them (SIGCONT left out: it continues)
_IGNORED_BY_DEFAULT = (23, 28, 17)     # SIGURG, SIGWINCH, SIGCHLD


def stop_signal(status, proc):
    """A signal that ends injected runs (see arch _STOP_THEN_RET): one this
    process ignores (no handler: SigCgt; SIG_IGN or ignored by default), that no
    thread blocks (a thread could be waiting for it with sigwait) and that is not
    pending.  Whichever thread it reached, the kernel would discard it: the
    process cannot tell.  None if there is none.
    Only the leader's pending signals are known yet (the others' are asked
    after their runs): an ignored, unblocked signal pending in another thread
    can only have come during the freeze (the kernel queues it only to a traced
    thread), and the run it ends first is run again (_Runner.threads_info)."""
    caught = int(status.get("SigCgt", "f" * 16), 16)
    ignored = int(status.get("SigIgn", "0"), 16)
    blocked = 0
    pending = {int.from_bytes(info[:4], "little") for info in proc.shared_pending}
    for ts in proc.threads:
        blocked |= ts.sigmask
        pending |= {int.from_bytes(info[:4], "little") for info in ts.pending}
    candidates = _IGNORED_BY_DEFAULT + tuple(
        sig for sig in range(1, NSIG + 1) if ignored >> (sig - 1) & 1)
    for sig in candidates:
        bit = 1 << (sig - 1)
        if sig in (SIGKILL, SIGSTOP) or (caught | blocked) & bit or sig in pending:
            continue
        return sig
    return None


_THREAD_CODE_OFFSET = 256              # in the code page, after the call-list loop


def _map_code(inj, pid):
    """A page holding the call-list loop and thread_info, mapped executable and
    written through /proc/PID/mem; None if the process may not map code."""
    code = map_marked(inj, ARCH.PAGE_SIZE, mmap.PROT_READ | mmap.PROT_EXEC)
    if -4096 < code < 0:
        return None
    try:
        write_code(pid, code, ARCH.CALL_LIST_CODE)
        write_code(pid, code + _THREAD_CODE_OFFSET, ARCH.THREAD_INFO_CODE)
    except BaseException:
        inj.call("munmap", code, ARCH.PAGE_SIZE, check=False)
        raise
    return code


class _Runner:
    """Reads handlers and per-thread state by one run of code each (code: the
    page from _map_code, sig: stop_signal), or one call at a time without them."""

    def __init__(self, code, sig, scratch, pid):
        self.code = code if sig else None
        self.sig, self.scratch, self.pid = sig, scratch, pid

    def thread_info(self, inj, ts):
        """Also its pending signals (ThreadState.pending), which capture_thread
        left out."""
        if self.code is None:
            return _read_thread_injected(inj, self.scratch, self.pid, ts)
        at = self.scratch
        code = self.code + _THREAD_CODE_OFFSET
        inj.run_to_signal(code, at, sig=self.sig, end=code + len(ARCH.THREAD_INFO_CODE) - 1)
        self._set_info(ts, libc.read_memory(self.pid, at, ARCH.THREAD_INFO_SIZE), inj.thread)

    def threads_info(self, threads, results_at):
        """thread_info of every (ThreadState, Injector factory) in `threads`.  With
        the code page, all run at once: each thread is set running, then each is
        waited for, and the results (one slot each from results_at) are read in
        one call.  Batches bound what is in flight; every thread started is
        waited for and restored, whatever fails."""
        if self.code is None:
            for ts, make in threads:
                with make(None) as tinj:
                    self.thread_info(tinj, ts)
            return
        code = self.code + _THREAD_CODE_OFFSET
        for first in range(0, len(threads), _PARALLEL):
            batch = threads[first:first + _PARALLEL]
            base = results_at + first * _RESULT_SLOT
            made, running, frames = [], set(), []
            try:
                for ts, make in batch:
                    made.append(make(frames))
                # The last result of each slot starts as a value no call returns:
                # a run the signal cut short (sent by someone else, first) shows.
                frames += [(base + i * _RESULT_SLOT + _LAST_RESULT, _UNSET)
                           for i in range(len(made))]
                _write_all(self.pid, frames)
                for i, tinj in enumerate(made):
                    tinj.start_to_signal(code, base + i * _RESULT_SLOT, sig=self.sig)
                    running.add(i)
            finally:
                error = None
                for i, tinj in enumerate(made):
                    if i in running:
                        error = _first_error(error, tinj.finish_to_signal, end=None, sig=self.sig)
                    error = _first_error(error, tinj.restore)
                if error is not None:
                    raise error
            data = libc.read_memory(self.pid, base, len(batch) * _RESULT_SLOT)
            for i, (ts, make) in enumerate(batch):
                slot = data[i * _RESULT_SLOT:(i + 1) * _RESULT_SLOT]
                if slot[_LAST_RESULT:_LAST_RESULT + 8] == _UNSET:
                    with make(None) as tinj:        # again, alone, to its end
                        self.thread_info(tinj, ts)
                else:
                    self._set_info(ts, slot, made[i].thread)

    def _set_info(self, ts, data, thread):
        (tid_address, ss_sp, ss_flags, ss_size, tid_ret, ss_ret, name, name_ret,
         head, length, robust_ret, pending, pending_ret) = ARCH.THREAD_INFO.unpack_from(data)
        for call, ret in (("prctl", tid_ret), ("sigaltstack", ss_ret), ("prctl", name_ret),
                          ("get_robust_list", robust_ret), ("rt_sigpending", pending_ret)):
            if -4096 < ret < 0:
                raise InjectedSyscallError(self.pid, call, -ret)
        _set_thread_info(ts, tid_address, (ss_sp, ss_flags, ss_size))
        ts.comm = _decode_comm(name)
        ts.robust_list = [head, length]
        # Pending for the thread: its own signals and the process's (blocked,
        # as all but the run's signal were).  Signals that came during the
        # freeze are taken too: the program would have found them pending.
        if pending:
            ts.pending = thread.peek_siginfo(shared=False)


def _write_all(pid, pieces):
    """Write each (address, bytes) of pieces into pid, in one process_vm_writev."""
    if not pieces:
        return
    buf = bytearray().join(data for _, data in pieces)
    base, local, remote, off = libc.buffer_address(buf), [], [], 0
    for addr, data in pieces:
        local.append((base + off, len(data)))
        remote.append((addr, len(data)))
        off += len(data)
    if libc.process_vm_writev(pid, local, remote) != len(buf):
        raise RcoreError(f"cannot write the threads' signal frames into process {pid}")


def _first_error(error, step, **kwargs):
    """Run step; returns error, or the exception step raised when error is None
    (the caller goes on giving the other threads back before raising it)."""
    try:
        step(**kwargs)
    except BaseException as err:
        return error or err
    return error


# Where each thread's thread_info results go (8-byte aligned) and how many
# threads run at once (their frames and preset results are written by one
# process_vm_writev: two iovecs a thread, at most IOV_MAX, 1024).  The last
# result (the return value of the last call) starts as _UNSET, which no system
# call returns.
_RESULT_SLOT = (ARCH.THREAD_INFO_SIZE + 7) & ~7
_LAST_RESULT = ARCH.THREAD_INFO_SIZE - 8
_U64 = struct.Struct("<Q")
_UNSET = _U64.pack(1 << 63)
_PARALLEL = 256


def _read_thread_injected(inj, scratch, pid, ts):
    """clear_child_tid and sigaltstack, which only the thread itself can ask for;
    its name and robust list from outside, as it would tell them."""
    inj.call("prctl", PR_GET_TID_ADDRESS, scratch, 0, 0, 0)
    inj.call("sigaltstack", 0, scratch + 8)
    data = libc.read_memory(pid, scratch, 8 + ARCH.STACK_T.size)
    _set_thread_info(ts, _U64.unpack_from(data)[0], ARCH.STACK_T.unpack_from(data, 8))
    ts.pending = inj.thread.peek_siginfo(shared=False)
    ts.comm = procfs.read_comm(pid, tid=ts.tid)
    ts.robust_list = list(libc.get_robust_list(ts.tid))


def _decode_comm(name):
    """A thread's name as PR_GET_NAME gives it (NUL-terminated, 16 bytes), as
    /proc/PID/task/TID/comm would show it."""
    return name.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _set_thread_info(ts, clear_child_tid, stack):
    """clear_child_tid and the sigaltstack (a STACK_T's fields) of ts."""
    ts.clear_child_tid = clear_child_tid
    sp, flags, size = stack
    ts.sigaltstack = {"ss_sp": sp, "ss_flags": flags, "ss_size": size}
