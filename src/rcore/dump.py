"""dump: a live process to a core file, with a freeze of milliseconds.

    freeze all threads -> capture state -> read what a fork would not share
    faithfully -> the target forks a copy of itself (an injected clone that never
    runs user code) -> release the target -> write the copy's memory while the
    target runs on -> kill the copy and have the target reap it.

The copy has exit signal 0 (no SIGCHLD; wait(-1) without __WALL does not see it)
and is born in rcore's code (arch fork_code): if rcore dies, it names itself and
ends at once instead of running anything.  Every call injected into the target is
guarded (inject.SafeSites): a SIGKILL of rcore at any instant leaves each thread
to finish the call and return to its own context."""

import errno
import mmap
import os
import signal
import threading
import time

from . import arch, chain, dirty, fds, frozenmaps, readahead, sysvipc, timers, tree
from .capture import UNLINKED_FILE_LIMIT, capture_mappings, capture_process
from .elf.writer import CoreWriter
from .interrupts import signals_held
from .errors import AccessDenied, NoSuchProcess, ProcessExited, RcoreError
from .linux import inject, libc, procfs, ptrace
from .linux.ptrace import FrozenProcess, Thread
from .memory import CHUNK, PAGE, LiveMemory, nonzero_runs
from .record import field, record
from .stream import CopyStream, StreamFailed, stream_eligible

ARCH = arch.host()
ELF_MAGIC = b"\x7fELF"


@record
class DumpSummary:
    """What dump() wrote, and how long the process was frozen."""
    path: str
    pid: int
    threads: int
    regions: int
    bytes_stored: int          # data bytes written (holes excluded)
    file_size: int
    freeze_seconds: float
    seconds: float
    copy_method: str           # how memory left the process: "stream", "read", "frozen",
                               # or "ahead" (an increment read ahead and at the freeze)
    warnings: list = field(default_factory=list)   # what a restart will not carry, in words
    tracking: str = ""         # dump --track: armed, or why not (dirty.py)
    processes: int = 1         # processes dumped (a tree: one core each, dumptree.py)
    zombies: int = 0           # zombies of the tree (in its note, no core)
    cores: list = field(default_factory=list)        # every core written, the root's first
    identities: list = field(default_factory=list)   # (pid, start time) of each process


# Where each mapping's bytes come from and how much of it the core stores.
NOTHING, HEADER, SPARSE, DENSE = "none", "header", "sparse", "dense"


def plan_mapping(m, mem, full):
    """How much of mapping m to store: NOTHING, HEADER (first page, for build-ids,
    as the kernel does), SPARSE (anonymous: only populated pages) or DENSE."""
    if m.path == "[vsyscall]" or "io" in m.vmflags or "pf" in m.vmflags:
        return NOTHING
    if m.path.startswith("[vvar"):
        return NOTHING
    if m.perms[0] != "r" and not m.shared and not m.anonymous:
        # Never written: a guard page, or file pages the program cannot read.
        # Written pages made PROT_NONE afterwards are the program's data: they
        # are stored below, as the kernel's core dumps do (/proc/PID/mem reads
        # them).
        return NOTHING
    if not m.file_backed:
        return DENSE if (m.shared or m.path == "[vdso]") else SPARSE
    if m.deleted:
        # Nothing else holds these bytes: shared anonymous memory (a deleted
        # /dev/zero), SysV shm, memfd, an unlinked file.  The kernel stores the
        # shared ones too (nlink 0 counts as anonymous shared).
        return DENSE
    if full:
        return DENSE
    if not m.shared and m.anonymous:
        # A written-to private file mapping (smaps counts its copied-on-write
        # pages, resident or swapped, as Anonymous): whole, as the kernel does.
        return DENSE
    if m.offset == 0 and mem.read(m.start, 4) == ELF_MAGIC:
        return HEADER
    return NOTHING


def _from_original(m):
    # What a fork does not share faithfully: shared memory keeps changing, and
    # MADV_DONTFORK / MADV_WIPEONFORK memory is absent or zero in the copy.
    return m.shared or "dc" in m.vmflags or "wf" in m.vmflags


class _Copier:
    """Moves mapping data from a process into the core, skipping zero pages.

    copy() cuts the mappings into chunks and has worker threads, one per CPU,
    each take the next chunk, read it into its own buffer (/proc/PID/mem), find
    its zero pages and pwrite the rest.  Both system calls release the GIL, so
    the workers use every CPU, and a buffer is written while it is still in the
    cache of the CPU that filled it.  copy() returns when all is written."""

    def __init__(self, writer, progress=None, total=0, workers=None):
        self.writer = writer
        self.stored = 0
        self.done = 0
        self.total = total
        self.progress = progress
        self.workers = workers or min(4, os.cpu_count() or 1)
        self._lock = threading.Lock()

    def copy(self, mem, plan):
        """Store the data of each (mapping, how) of plan, read from mem."""
        if not plan:
            return
        chunks = self.chunks(mem, plan)
        errors = []
        threads = [threading.Thread(target=self._work, args=(mem, chunks, errors),
                                    name=f"rcore-copy-{i}", daemon=True)
                   for i in range(self.workers - 1)]
        for t in threads:
            t.start()
        try:
            self._work(mem, chunks, errors)
        finally:
            for t in threads:
                t.join()
        if errors:
            raise errors[0]

    def chunks(self, mem, plan):
        """(address, length, file offset) of each chunk to copy, in order.  Chunks
        end at multiples of CHUNK: the core writer places big segments at file
        offsets congruent to their addresses, so that writes fill whole folios."""
        for m, how in plan:
            for addr, length in self._runs(mem, m, how):
                end = addr + length
                while addr < end:
                    n = min(end, (addr // CHUNK + 1) * CHUNK) - addr
                    yield addr, n, self.writer.data_offset(m, addr)
                    addr += n

    @staticmethod
    def _runs(mem, m, how):
        if how == HEADER:
            yield m.start, PAGE
        elif how == SPARSE and m.anonymous < m.size:
            yield from mem.iter_populated_runs(m.start, m.end)
        else:
            yield m.start, m.size

    def _work(self, mem, chunks, errors):
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            while not errors:
                with self._lock:
                    chunk = next(chunks, None)
                if chunk is None:
                    return
                addr, n, offset = chunk
                got = mem.readinto(buf, addr, n)
                if got < n:        # an unreadable page (e.g. beyond a file's end)
                    buf[got:n] = bytes(n - got)
                self.store(buf, view, n, offset)
        except BaseException as err:
            errors.append(err)

    def store(self, buf, view, n, offset):
        """Write buf[:n] at offset, its zero pages left as holes.  Thread-safe."""
        stored = 0
        for off, size in nonzero_runs(buf, n):
            self.writer.pwrite(view[off:off + size], offset + off)
            stored += size
        with self._lock:
            self.stored += stored
            self.done += n
            if self.progress:
                self.progress(self.done, self.total)


def _segments(plan):
    """The core writer's (mapping, filesz) of each (mapping, how) of plan."""
    return [(m, 0 if how == NOTHING else PAGE if how == HEADER else m.size) for m, how in plan]


def _fork_copy(frozen, syscall_addr, safe):
    """Have the frozen leader fork a copy of itself, from a page of code whose
    paths need no tracer to end (arch fork_code): returns (the stopped, traced
    copy, the address where the copy's own calls are injected), or None when the
    target may not map code (the caller then reads everything now)."""
    leader = frozen.leader()
    page = ARCH.PAGE_SIZE
    with inject.Injector(leader, syscall_addr, block_signals=True, safe=safe) as inj:
        # Mapped executable and never writable, written through /proc/PID/mem (which
        # may write any page of the process): no W^X policy (MDWE) refuses that.
        addr = inject.map_marked(inj, page, mmap.PROT_READ | mmap.PROT_EXEC)
        if -4096 < addr < 0:
            return None
        try:
            code, fork_site, exit_site = ARCH.fork_code(addr)
            inject.write_code(frozen.pid, addr, code)
            child = []
            leader.set_options(frozen.options | ptrace.PTRACE_O_TRACECLONE)
            default_addr, inj.addr = inj.addr, fork_site
            try:
                # clone(flags=0): a fork whose exit signal is 0.
                inj.call("clone", 0, 0, 0, 0, 0,
                         on_event=lambda ev, msg: child.append(msg)
                         if ev == ptrace.PTRACE_EVENT_CLONE else None)
            finally:
                inj.addr = default_addr
                leader.set_options(frozen.options)
        finally:
            inj.call("munmap", addr, page, check=False)   # the copy keeps its own
        if not child:
            raise RcoreError(f"process {frozen.pid} did not fork a copy")
        copy = Thread(child[0], child[0])
        copy.wait()                # its first stop, before any user code
        if inj.frame_area():       # the copy's stack as the program left it
            libc.write_memory(copy.tid, *inj.frame_area())
    # Let it name itself (its first call, prctl(PR_SET_NAME)) and stop it after:
    # what follows is exit_group.
    for _ in range(2):
        copy.syscall()
        stop = copy.wait()
        while not stop.is_syscall:
            if stop.exited:
                raise ProcessExited(copy.tid)
            copy.syscall()
            stop = copy.wait()
    return copy, exit_site


def _dead_copies(pid):
    """Zombie children of pid that are copies a killed rcore left: named by
    fork_code, exit signal 0, no longer traced.  The program's own children are
    never taken (it may be waiting for them)."""
    found = []
    try:
        # the leader forks every copy (_fork_copy): they are its children
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        return found
    for kid in kids:
        try:
            st = procfs.read_stat(kid)
            traced = procfs.read_status(kid).get("TracerPid", "0") != "0"
        except RcoreError:
            continue
        if (st.state == "Z" and st.comm == ARCH.COPY_NAME.decode() and not st.exit_signal
                and not traced):
            found.append(kid)
    return found


def _clean_up_after_dead_dumps(frozen, syscall_addr, safe, mappings, among=None):
    """Have the frozen target reap the copies dead rcore runs left as zombies and
    unmap the memory they left in it (in the mappings starting at `among`, if
    given).  True if it unmapped any."""
    dead = _dead_copies(frozen.pid)
    if among is not None:
        mappings = [m for m in mappings if m.start in among]
    leftovers = inject.find_leftovers(frozen.pid, mappings)
    if dead or leftovers:
        with inject.Injector(frozen.leader(), syscall_addr, block_signals=True,
                             safe=safe) as inj:
            for kid in dead:
                inj.call("wait4", kid, 0, ptrace.WALL | os.WNOHANG, 0, check=False)
            for start, size in leftovers:
                inj.call("munmap", start, size, check=False)
    return bool(leftovers)


def _put_back_rseq_areas(writer, areas):
    for addr, data in areas.items():
        offset = writer.stored_offset(addr)
        if offset is not None:
            writer.pwrite(data, offset)


def seize_options(pid):
    """ptrace options for freezing `pid`.  A seccomp filter (an allow-list that
    kills on anything else, or one that makes calls fail) would act on the calls
    rcore injects: as root rcore suspends it for the traced threads, and for the
    fork copy, which inherits the option.  Without root the dump is refused before
    anything is injected."""
    if procfs.read_status(pid).get("Seccomp", "0") == "0":
        return ptrace.PTRACE_O_TRACESYSGOOD
    if os.geteuid() != 0:
        raise AccessDenied(pid, f"process {pid} runs under a seccomp filter, which could "
                                "kill it for a call rcore injects: only root can suspend "
                                "the filter for a dump")
    return ptrace.PTRACE_O_TRACESYSGOOD | ptrace.PTRACE_O_SUSPEND_SECCOMP


def _end_copy(pid, copy, options, safe):
    """Kill the copy, then have the target reap it (it is the target's child)."""
    try:
        os.kill(copy.tid, signal.SIGKILL)
        copy.wait()
    except (ProcessLookupError, ProcessExited):
        pass
    try:
        # The leader alone (it forked the copy: it reaps it): the process is
        # not frozen again, which for 1000 threads took as long as the dump's.
        with signals_held(), FrozenProcess(pid, options, leader_only=True) as frozen:
            addr = inject.find_syscall_insn(pid)
            with inject.Injector(frozen.leader(), addr, block_signals=True, safe=safe) as inj:
                inj.call("wait4", copy.tid, 0, ptrace.WALL, 0, check=False)
    except (NoSuchProcess, ProcessExited):
        pass                        # the target is gone, and its zombie child with it


def dump(pid, path=None, *, stop=False, kill=False, full=False, fork=True, stream=True,
         progress=None, unlinked_limit=UNLINKED_FILE_LIMIT, tcp_established=False,
         track=False, incremental=None, children=True):
    """Write a core file of live process `pid` to `path` (default core.PID),
    and with children (the default) one of each of its descendants beside it
    (PATH.PID, dumptree.py); the root's core then records the tree.
    The target runs on afterwards, unless stop (SIGSTOP) or kill (SIGKILL: dump
    returns once it is dead; a tree's every process).  Unlinked files the process has open are stored
    in the core up to unlinked_limit bytes each (a restart needs them).
    fork=False reads all memory while the target is frozen; stream=False has
    rcore read the fork copy's memory instead of the copy sending it.
    tcp_established: capture established TCP connections for restart
    --tcp-established (fds/tcp_repair.py); with kill, the target stays stopped
    from the checkpoint to its death and its connections end without a word
    to their peers.
    track: arm dirty tracking (dirty.py) at the checkpointed instant, so that a
    later restore of this core compares only the pages written since.
    incremental: the path of a checkpoint that tracking is armed relative to;
    the core then stores only the pages written since it, names it as its
    parent (chain.py), and tracking is re-armed relative to the new core.
    Without such tracking a full core is written and the summary says why."""
    t0 = time.monotonic()
    path = os.path.abspath(path or f"core.{pid}")
    if not os.path.isdir(os.path.dirname(path)):
        raise RcoreError(f"output directory does not exist: {os.path.dirname(path)}")
    if not os.path.exists(f"/proc/{pid}"):
        raise NoSuchProcess(pid)
    run_state = procfs.read_stat(pid).state
    one = _dump
    before = tree.Before(pid)
    if children and before.children:
        from .dumptree import dump_tree as one
        before = None
    increment, note = chain.prepare_increment(pid, incremental) if incremental else (None, "")
    lock = None
    if tcp_established:
        from .fds.tcp_repair import NetworkLock     # (sockets: imported only for them)
        lock = NetworkLock()
    # --kill: what the program does after the checkpoint is undone by the restart,
    # so it is held stopped until killed: running on, it could write files or
    # pipes, and in a tree, a member killed before another lets that one see end
    # of file and act on it.
    held_stopped = kill and not stop
    stopped = []               # _dump notes there that it sent SIGSTOP
    options = dict(stop=stop or held_stopped, full=full, fork=fork,
                   progress=progress, unlinked_limit=unlinked_limit, run_state=run_state,
                   tcp_lock=lock, stopped=stopped,
                   track=(track or bool(incremental)) and not kill, increment=increment)
    if before is not None:
        options["before"] = before
    try:
        try:
            summary = one(pid, path, stream=stream and fork, **options)
        except (StreamFailed, frozenmaps.FlagsChanged) as err:
            # The copy could not send its memory (e.g. a seccomp filter it inherited
            # forbids vmsplice) and is gone: take the dump again, reading the copy.
            # Or a mapping's flags changed just before the freeze: take it again
            # with smaps read while frozen.
            if lock is not None:
                lock.release()
            if increment:
                # The first attempt re-armed tracking: what was written before it is
                # no longer reported, so the second attempt is a full core.
                options["increment"] = None
                note = "full dump: the incremental attempt had to be taken again"
            if isinstance(err, StreamFailed):
                stream = False
            summary = one(pid, path, stream=stream and fork, exact_maps=True, **options)
        if note:
            summary.tracking = "; ".join(x for x in (note, summary.tracking) if x)
        if kill and summary.processes > 1:
            from .dumptree import kill_tree
            kill_tree(summary.identities)
        elif kill:
            _kill_and_wait_dead(pid)
            if lock is not None:
                lock.close_silently()
    except BaseException:
        if lock is not None:
            lock.release()          # the target lives on: its packets flow again
        for stopped_pid in stopped:
            # --stop (or --tcp-established with --kill) stopped it as the freeze
            # ended: a failed dump leaves it running
            _continue(stopped_pid)
        raise
    finally:
        if lock is not None:
            lock.release()
    if lock is not None and lock.captured and not kill:
        summary.warnings.append(
            f"--tcp-established without --kill: the process keeps its {lock.captured} "
            "established connections, and restart --tcp-established is refused while "
            "they exist")
    summary.seconds = time.monotonic() - t0
    return summary


def _dump(pid, path, *, stop, full, fork, stream, progress, unlinked_limit, run_state,
          tcp_lock, stopped, track, increment, exact_maps=False, before=None):
    one = ProcessDump(pid, path, full=full, fork=fork, stream=stream, progress=progress,
                      unlinked_limit=unlinked_limit, run_state=run_state, tcp_lock=tcp_lock,
                      track=track, increment=increment, exact_maps=exact_maps, before=before)
    try:
        one.read_ahead()
        if before is not None:
            before.refresh()
        with signals_held(), FrozenProcess(pid, one.options) as frozen:
            # from the first seize, as the tree dump counts: seizing a thread stops it
            t_freeze = frozen.seized_at
            one.capture(frozen)
            one.proc.sysvipc, one.ipc_warnings = sysvipc.capture(pid, [one.proc])
            if tcp_lock is not None and not stop:
                tcp_lock.release()      # the target runs on: no packet may be dropped
            one.prepare(frozen)
            if stop and run_state not in ("T", "t"):
                stopped.append(pid)
            frozen.release(signal.SIGSTOP if stop else 0)
            freeze = time.monotonic() - t_freeze
        fds.pipe.name_other_ends({pid: one.proc.files})
        one.store()
        one.commit()
    finally:
        one.close()
    return one.summary(freeze)


class ProcessDump:
    """The dump of one process in steps: read_ahead() before the freeze (an
    increment), capture() and prepare() while it is frozen (prepare opens the
    core, stores what cannot wait and forks the copy, or an increment reads its
    pages), store() and commit() after its release, close() always (ends the
    copy, removes an uncommitted core).  A tree dump (dumptree.py) runs the
    steps of every process of the tree side by side."""

    def __init__(self, pid, path, *, full=False, fork=True, stream=True, progress=None,
                 unlinked_limit=UNLINKED_FILE_LIMIT, run_state=None, tcp_lock=None,
                 track=False, increment=None, exact_maps=False, before=None):
        self.pid, self.path = pid, path
        self.before = before         # tree.Before: its children while it ran
        # smaps read now, while the process runs, keeps its page walk out of the
        # freeze (frozenmaps.py); exact_maps reads it while frozen instead.
        self.early = None if exact_maps else frozenmaps.Early(pid)
        # Memory dead rcore runs left (inject.map_marked), looked for now too:
        # it reads a word of every anonymous mapping (each thread's stack), and
        # only those found are looked at again while frozen.  One left after
        # this is found by the next dump.
        self.leftovers = None if exact_maps else {
            start for start, _ in inject.find_leftovers(pid, self.early.entries)}
        self.maps_exact = True
        self.full, self.fork, self.stream, self.progress = full, fork, stream, progress
        self.unlinked_limit, self.run_state, self.tcp_lock = unlinked_limit, run_state, tcp_lock
        self.track, self.increment = track, increment
        self.options = seize_options(pid)
        self.mem = LiveMemory(pid)
        self.copy = self.writer = self.proc = None
        self.held = None            # an increment's pages in rcore's memory (readahead.py)
        self.method = "frozen"
        self.tracking, self.track_note = None, ""
        self.now, self.later = [], []
        self.ipc_warnings = []      # what of SysV IPC the core lacks (sysvipc.py)

    def _errors(self):
        return _OsErrors(self.pid, self.path)

    def read_ahead(self):
        """An increment: read the pages written since its parent while the
        process still runs (readahead.py)."""
        if self.increment:
            with self._errors():
                self.held = readahead.read_ahead(self.increment.tracking)

    def capture(self, frozen, also=None):
        """The process's state (self.proc).  also(inj, scratch): more injected
        calls, run with the others."""
        with self._errors():
            pid = self.pid
            mappings, files, self.maps_exact = capture_mappings(pid, self.early)
            self.syscall_addr = inject.find_syscall_insn(pid, mappings)
            self.safe = inject.SafeSites.find(pid, mappings)
            self.rseq_areas = {}
            self.proc = capture_process(frozen, self.syscall_addr, mappings, files,
                                        self.run_state, self.unlinked_limit, self.tcp_lock,
                                        safe=self.safe, rseq_areas=self.rseq_areas, also=also,
                                        before=self.before)

    def prepare(self, frozen, now=True):
        """Plan the core, store what a fork would not carry (unless now is
        false: then store_frozen() must follow before the release), fork the
        copy."""
        with self._errors():
            self._prepare(frozen, now)

    def store_frozen(self):
        """Store what a fork would not carry (prepare with now=False)."""
        with self._errors():
            if self.now:
                self._open()
                self.copier.copy(self.mem, self.now)

    def _prepare(self, frozen, store_now):
        pid, proc, mem = self.pid, self.proc, self.mem
        if _clean_up_after_dead_dumps(frozen, self.syscall_addr, self.safe, proc.mappings,
                                      self.leftovers):
            proc.mappings, proc.mapped_files, self.maps_exact = capture_mappings(pid)
        plan = [(m, plan_mapping(m, mem, self.full)) for m in proc.mappings
                if m.path != "[vsyscall]"]
        for m, how in plan:
            m.stored = "all" if how in (SPARSE, DENSE) else how
        increment = self.increment
        if increment:
            # The walk that lists the pages written since the read-ahead protects
            # them again.  Inherited mappings are cut into their runs of written
            # pages only when the core is opened (_open), after the release.
            self.written = dirty.Written(pid, earlier=self.held.ahead)
            self.written.take()
            chain.mark_inherited(plan, increment, self.written, SPARSE)
        self.plan = plan
        self.segments = _segments(plan)
        self.writer = CoreWriter(self.path, proc, self.segments,
                                 parent=increment and increment.parent)
        self.copier = _Copier(self.writer, self.progress)
        now, later = [], []
        for m, how in plan:
            if how != NOTHING:
                (now if not self.fork or _from_original(m) else later).append((m, how))
        self.now = now
        if store_now:
            self.store_frozen()
        if self.track and increment:
            self.tracking = increment.tracking
            self.track_note = dirty.track_new(frozen, self.syscall_addr, proc.mappings,
                                              self.tracking, self.safe)
        elif self.track:
            self.tracking, self.track_note = dirty.arm(frozen, self.syscall_addr,
                                                       proc.mappings, self.safe)
        self.later = later
        if later and increment and self._hold(later):
            return
        if later:
            copy = _fork_copy(frozen, self.syscall_addr, self.safe)
            if copy is None:
                self._open()
                self.copier.copy(mem, self.later)      # no code page for the fork: now
                self.later = []
            else:
                self.copy, self.copy_syscall = copy

    def _rseq_pages(self):
        # stored by an increment whatever tracking says: the dump puts back their
        # bytes of the frozen instant, which the kernel changed since
        return [(a - a % PAGE, a - a % PAGE + PAGE) for a in self.rseq_areas]

    def _hold(self, later):
        """Read an increment's part of the plan now into rcore's memory, when
        that is estimated to cost less than the fork (readahead.py).  True if
        it was read."""
        held = self.held
        ranges = readahead.to_read_frozen(held, later, self.written,
                                          lambda m, how: _Copier._runs(self.mem, m, how),
                                          self._rseq_pages())
        if not readahead.frozen_read_cheaper(ranges, readahead.resident_pages(self.pid)):
            return False
        held.read_frozen(ranges)
        return True

    def _open(self):
        # The core is created when data must be written while the process is
        # frozen, else after its release: the freeze does not wait for the file.
        if self.writer.fd is not None:
            return
        if self.increment:
            # inherited mappings become their runs of written pages (thousands:
            # the freeze does not wait for them unless it writes the core)
            runs = chain.WrittenRuns(self.written, self._rseq_pages())
            self.plan, self.now, self.later = (runs.cut(x) for x in
                                               (self.plan, self.now, self.later))
            self.segments = self.writer.segments = _segments(self.plan)
        self.copier.total = sum(size for _, size in self.segments)
        self.writer.open()

    def store(self):
        """Store the copy's memory (the process runs again)."""
        with self._errors():
            self._check_flags()
            self._open()
            if self.copy:
                self.method = _store_copy(self.copy, self.copy_syscall, self.copier,
                                          self.later, self.stream)
            elif self.later:
                self.copier.copy(self.held, self.later)
                self.method = "ahead"
            _put_back_rseq_areas(self.writer, self.rseq_areas)

    def _check_flags(self):
        """The early VmFlags against the copy (the process at the freeze), or
        against the process itself when all was read while it was frozen."""
        if self.maps_exact:
            return
        if self.copy:
            later, copy = procfs.read_bytes(self.copy.tid, "smaps"), True
        else:
            later, copy = procfs.read_bytes(self.pid, "smaps"), False
        frozenmaps.check_flags(self.early, later, copy=copy)
        self.maps_exact = True

    def commit(self):
        with self._errors():
            self.writer.commit()
            if self.tracking:
                dirty.set_baseline(self.tracking,
                                   {"checkpoint_id": self.writer.checkpoint_id})

    def close(self):
        self.mem.close()
        if self.held is not None:
            self.held.close()
        copy, self.copy = self.copy, None
        if copy:
            _end_copy(self.pid, copy, self.options, self.safe)
        if self.writer:
            self.writer.abort()

    def summary(self, freeze):
        proc = self.proc
        return DumpSummary(self.path, self.pid, len(proc.threads), len(self.segments),
                           self.copier.stored, self.writer.size, freeze, 0.0, self.method,
                           ([tree.children_not_carried(proc)] if proc.children else [])
                           + fds.dump_warnings(proc) + timers.warnings(proc.timers)
                           + self.ipc_warnings,
                           self.track_note, cores=[self.path])


class _OsErrors:
    """OSError of a dump step as rcore's errors: ESRCH is the process gone."""

    def __init__(self, pid, path):
        self.pid, self.path = pid, path

    def __enter__(self):
        return self

    def __exit__(self, exc_type, err, tb):
        if exc_type is not None and issubclass(exc_type, OSError):
            if err.errno == errno.ESRCH:
                raise ProcessExited(self.pid) from err
            raise _os_error(err, self.path) from err
        return False


def _store_copy(copy, syscall_addr, copier, plan, stream):
    """Store the fork copy's part of the plan; returns how ("stream" or "read").
    Raises StreamFailed when the copy is lost before all is stored."""
    streamed, rest = [], []
    for m, how in plan:
        eligible = stream and how == SPARSE and stream_eligible(m)
        (streamed if eligible else rest).append((m, how))
    mem = LiveMemory(copy.tid)
    pipes = CopyStream(copy, syscall_addr, CHUNK)
    try:
        if streamed:
            try:
                pipes.setup()
            except StreamFailed:
                copier.copy(mem, plan)           # the copy is still stopped: read it
                return "read"
            pipes.run(copier.chunks(mem, streamed), copier.store,
                      meanwhile=lambda: copier.copy(mem, rest))
            return "stream"
        copier.copy(mem, rest)
        return "read"
    except ProcessExited as err:
        if err.pid != copy.tid:
            raise
        raise StreamFailed(f"the dump's copy is gone: {err}") from err
    finally:
        pipes.close()
        mem.close()


def _kill_and_wait_dead(pid, timeout=5.0):
    """SIGKILL, then wait until the process is a zombie or gone, so that a restart
    right after finds its PID and files released."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if procfs.read_stat(pid).state in ("Z", "X"):
                return
        except NoSuchProcess:
            return
        time.sleep(0.002)


def _continue(pid):
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def _os_error(err, path):
    if err.errno == errno.ENOSPC:
        return RcoreError(f"disk full while writing {path}")
    if err.errno in (errno.EACCES, errno.EROFS, errno.EPERM) and err.filename:
        return RcoreError(f"cannot write {path}: {err.strerror}")
    return RcoreError(f"{path}: {err.strerror or err}")
