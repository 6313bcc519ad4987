"""restore: roll a live process back to a checkpoint of itself.

    open the core -> check that it belongs to this process (the same process:
    PID, start time and boot; executable, arch, mapped files) and that every
    value it holds is one the kernel takes (validate.py) -> freeze -> plan
    threads, descriptors and the rebuild (refusing what cannot be done) ->
    PTRACE_O_EXITKILL, workspace (the first change) -> end threads created
    since -> rebuild the address space (rebuild.py) -> create threads that
    exited since -> process state, then every thread's state (apply.py) ->
    remove the workspace -> release.

Nothing in the process changes before every check has passed: an error, or
rcore killed, before that leaves it running untouched.  From the first change on
a failure (a system call refused, the process killed) leaves a half-restored
process that must not run on: it is killed, and the error says so; rcore itself
killed takes it along (PTRACE_O_EXITKILL).  The process is never left traced."""

import os
import signal
import time

from . import arch, dirty, identity, owner, rseq, validate
from .apply import (apply_process_state, apply_thread_state, check_process_state,
                    create_thread, end_thread, plan_files, plan_threads, set_thread_name)
from .interrupts import signals_held
from .elf.reader import CoreFile
from .errors import Incompatible, NoSuchProcess, ProcessExited, RcoreError
from .linux import inject, procfs, ptrace
from .linux.inject import Injector
from .linux.ptrace import FrozenProcess
from .rebuild import (Workspace, check_rebuild, fill_memory, is_shared_anon, pieces,
                      rebuild_address_space)
from .record import field, record
from .state import is_kernel_mapping

ARCH = arch.host()

NOT_IN_FOREIGN_CORES = ("the mapping layout and brk", "open descriptors and offsets",
                        "signal handlers", "cwd and umask", "sigaltstack, rseq, robust "
                        "lists and clear_child_tid", "threads created or ended since")


@record
class RestoreSummary:
    """What restore() changed in the process."""
    path: str
    pid: int
    threads: int
    threads_created: int
    threads_ended: int
    regions_unmapped: int
    regions_mapped: int
    bytes_compared: int
    bytes_written: int
    seconds: float
    bytes_mapped_from_core: int = 0
    not_restored: list = field(default_factory=list)
    notes: list = field(default_factory=list)       # what was checked less, or forced
    tracking: str = ""          # how dirty tracking (dump --track) was used, in words


def restore(pid, path=None, *, stop=False, force=False, map_core=False, progress=None,
            tracking=True):
    """Roll process `pid` back to the checkpoint in core file `path` (default
    core.PID).  It runs on from the checkpointed instant, or stays stopped with
    `stop`.  `force` restores a checkpoint of another process (another PID, or
    the same PID taken by a later process) or of a changed executable.
    `map_core` maps large anonymous regions from the core instead of writing
    them: milliseconds whatever changed, at the cost described in
    rebuild.map_from_core (the core must then stay unchanged in place).
    When dirty tracking was armed by `dump --track` of this core (dirty.py),
    only pages written since are compared, and tracking is re-armed relative
    to the core afterwards; tracking=False compares all memory instead.

    Cores written by gdb's gcore or the kernel carry memory and registers only:
    those are restored into the mappings that still exist, and the summary's
    not_restored lists the rest.  Raises Incompatible or CoreFormatError
    (nothing changed), NoSuchProcess/AccessDenied, or RcoreError after a failure
    midway (the process was killed)."""
    t0 = time.monotonic()
    path = path or f"core.{pid}"
    if not os.path.exists(f"/proc/{pid}"):
        raise NoSuchProcess(pid)
    with CoreFile(path) as core:
        if core.tree is not None and len(core.tree.processes) > 1 and not force:
            # The other processes would run on from now, against a root from then.
            raise Incompatible(f"{path} is the root of a checkpoint of {len(core.tree.processes)} "
                               "processes; restore rolls back one process, and the others "
                               "would not be rolled back with it (restart the tree, or "
                               "--force to roll back this process alone)")
        speaker, notes = check_restorable(pid, core, force)
        with signals_held(), FrozenProcess(pid) as frozen:
            # Again once frozen: the process could have gained privileges
            # (execve of a set-user-ID program) since the first check.
            owner.check_target(speaker, pid)
            job = _Restore(frozen, core, progress, map_core, tracking)
            job.plan()
            try:
                job.run()
            except BaseException as err:
                if not job.changed:
                    raise
                _kill(frozen)
                raise RcoreError(f"restore of process {pid} failed midway ({err}); "
                                 "the half-restored process was killed") from err
            # A process that was in a job-control stop (gdb hands it over so)
            # goes back to it as it is detached: a second SIGSTOP would linger.
            frozen.release(signal.SIGSTOP if stop and not frozen.was_group_stopped else 0)
        s = job.summary
        return RestoreSummary(os.path.abspath(path), pid, len(core.state.threads),
                              job.created, job.ended, s.unmapped, s.created, s.compared,
                              s.written, time.monotonic() - t0, s.mapped_from_core,
                              job.not_restored, notes, job.tracking)


def _kill(frozen):
    """SIGKILL a frozen process and collect the exit of every thread: a traced
    process stays a zombie its parent cannot reap until the tracer has (threads
    other than the leader first: waiting for the leader waits for them)."""
    try:
        os.kill(frozen.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for tid in sorted(frozen.threads, key=lambda t: t == frozen.pid):
        thread = frozen.threads.pop(tid)
        try:
            while not thread.wait().exited:
                pass
        except ProcessExited:
            pass


# --- compatibility ----------------------------------------------------------------

def check_restorable(pid, core, force=False):
    """Everything restore checks before it stops process pid: the core is of
    this process (check_same_process) and program (check_compatible), and
    every value it holds is one the kernel takes (validate.check_checkpoint).
    Raises Incompatible, NotPermitted or CoreFormatError; returns (the
    owner.Owner the core speaks for (None: trusted), notes: a check that could
    only be partial, or that force overrode)."""
    speaker = check_compatible(pid, core, force)
    notes = check_same_process(pid, core, force)
    validate.check_checkpoint(core)
    return speaker, notes


def check_same_process(pid, core, force=False):
    """Refuse a checkpoint of another process than pid: another PID, or the
    same PID since taken by another process (the start time and boot ID that
    rcore records tell them apart).  Cores without those (older rcore, gdb,
    the kernel) are taken on their PID alone, with a note.  force accepts
    another process, with a note.  Returns the notes."""
    proc = core.state
    if proc.pid != pid:
        why = f"{core.path} is a checkpoint of process {proc.pid}, not of process {pid}"
    elif not (proc.start_time and proc.boot_id):
        return [f"{core.path} does not record when its process started (written by an "
                "older rcore, gdb or the kernel): only its PID was compared"]
    elif proc.boot_id != procfs.read_boot_id():
        why = (f"{core.path} is a checkpoint of a process {pid} from before the machine "
               f"restarted, not of the process {pid} running now")
    elif proc.start_time != (started := procfs.read_stat(pid).start_time):
        why = (f"{core.path} is a checkpoint of a process {pid} started at tick "
               f"{proc.start_time} after boot, not of the process {pid} running now "
               f"(started at tick {started})")
    else:
        return []
    if not force:
        raise Incompatible(f"{why}; --force to restore it anyway")
    return [f"{why}: restored anyway (--force)"]


def check_compatible(pid, core, force=False):
    """Refuse, before anything changes, a checkpoint that is not of process pid:
    another architecture, another executable (identity.py: device, inode, size,
    mtime, ctime, build-id; skipped with force), or a mapped file changed since.
    For cores without rcore's notes the file mappings the core names must be
    where they were.  A core owned by another user than root may only go into a
    process that user could change, and its files are looked at as that user
    (owner.py).  Raises Incompatible or NotPermitted with one line naming what
    differs; returns the owner.Owner the core speaks for (None: trusted)."""
    core.require_complete()
    if core.arch.NAME != ARCH.NAME:
        raise Incompatible(f"{core.path} is a core of an {core.arch.NAME} process, "
                           f"this machine is {ARCH.NAME}")
    speaker = owner.of_core(core)
    owner.check_creds(speaker, core)
    owner.check_target(speaker, pid)
    with owner.as_owner(speaker):
        live_exe = _live_exe_path(pid)
        if core.has_rcore:
            if not force:
                _check_exe(pid, core, live_exe, speaker is None)
            _check_mapped_files(pid, core, speaker is None,
                                skip=core.state.exe.path if force else None)
        else:
            _check_foreign_layout(pid, core, live_exe)
    return speaker


def _live_exe_path(pid):
    exe = procfs.read_link(pid, "exe")
    return exe[: -len(" (deleted)")] if exe.endswith(" (deleted)") else exe


def _check_exe(pid, core, live_exe, trusted):
    want = core.state.exe
    if want is None:
        raise Incompatible(f"{core.path} does not record its executable")
    identity.require_recorded(f"the executable {want.path}", want, trusted)
    diffs = identity.diffs(want, procfs.stat_exe(pid), procfs.path(pid, "exe"))
    if diffs:
        raise Incompatible(f"{core.path} is a checkpoint of {want.path}, but process {pid} "
                           f"runs {live_exe} ({', '.join(diffs)} differ); --force to "
                           "restore anyway")


def _check_mapped_files(pid, core, trusted, skip=None):
    proc = core.state
    identity.require_mappings_recorded(proc)
    live = procfs.read_maps(pid)
    for path, ident in proc.mapped_files.items():
        maps = [m for m in proc.mappings if m.path == path]
        if path == skip or (maps and all(is_shared_anon(m) for m in maps)):
            continue
        if any(m.deleted for m in maps):
            _check_deleted_mapping(pid, path, ident, maps, live)
            continue
        identity.check_file(f"mapped file {path}", path, ident, trusted)


def _check_deleted_mapping(pid, path, ident, maps, live):
    # A deleted file can only be used while the process still maps it.
    for e in live:
        if e.path == path and e.inode == ident.inode:
            mapped = procfs.path(pid, "map_files", f"{e.start:x}-{e.end:x}")
            try:
                st = os.stat(mapped)
            except OSError:
                continue
            if not identity.diffs(ident, st, mapped):
                return
    raise Incompatible(f"mapped file {path} was deleted and the process no longer "
                       "maps it")


def _check_foreign_layout(pid, core, live_exe):
    """gdb/kernel cores name files (NT_FILE) but not their identity: the process
    must map the same files at the same addresses, the executable included."""
    live = {e.start: e for e in procfs.read_maps(pid)}
    named = [m for m in core.state.mappings if m.path]
    if not any(m.path == live_exe for m in named):
        raise Incompatible(f"{core.path} is not a core of {live_exe} "
                           f"(it maps {named[0].path if named else 'no files'})")
    for m in named:
        e = live.get(m.start)
        if e is None or e.path != m.path:
            raise Incompatible(f"{core.path}: {m.path} at {m.start:#x} is not mapped there "
                               f"in process {pid} (a core of another process?)")


# --- the restore itself ------------------------------------------------------------

class _Restore:
    def __init__(self, frozen, core, progress, map_core=False, tracking=True):
        self.map_core = map_core
        self.use_tracking = tracking
        self.tracking = ""
        self.frozen = frozen
        self.pid = frozen.pid
        self.core = core
        self.proc = core.state
        self.full = core.has_rcore
        self.progress = progress
        self.changed = False
        self.created = self.ended = 0
        self.not_restored = []
        self.summary = None

    def plan(self):
        """Everything that can refuse, before any change."""
        self.threads = plan_threads(self.frozen, self.proc.threads)
        self.files = None
        if self.proc.pid != self.pid:
            self.not_restored.append(
                f"the checkpoint is of process {self.proc.pid}, not {self.pid}: thread IDs "
                "the program cached (glibc's, for pthread_kill and mutexes) name the old ones")
        if self.full:
            check_process_state(self.proc)
            check_rebuild(self.pid, self.proc.mappings)
            self.files = plan_files(self.pid, self.proc.files)
        else:
            self.not_restored.append("the core has no rcore notes (a gdb or kernel core): "
                                     "restored memory and registers only; not restored: "
                                     + ", ".join(NOT_IN_FOREIGN_CORES))

    def run(self):
        frozen, pid, proc = self.frozen, self.pid, self.proc
        leader = frozen.leader()
        # The leader's registers are borrowed until apply_thread_state sets them.
        inj = Injector(leader, inject.find_syscall_insn(pid))
        where = Workspace.place(pid, avoid=[(m.start, m.end) for m in proc.mappings])
        # The workspace is the first change.  From here on, rcore dying would leave
        # a half-restored process running: with EXITKILL the kernel kills it
        # instead.  Before here, rcore dying leaves it untouched and running.
        frozen.add_options(ptrace.PTRACE_O_EXITKILL)
        try:
            ws = Workspace.create(inj, pid, addr=where)
        except BaseException:
            inj.restore()           # nothing else changed: the process runs on as it was
            raise
        self.changed = True
        if self.full:
            for t in self.threads.extra:
                end_thread(frozen, t, ws)
                self.ended += 1
            # The kernel writes each thread's rseq area at every return to user
            # space: unregistered while memory is replaced, registered again with
            # the thread's state (apply_thread_state).
            for thread in frozen.threads.values():
                if thread is leader:
                    rseq.drop_registration(inj)
                else:
                    with Injector(thread, ws.syscall_addr) as tinj:
                        rseq.drop_registration(tinj)
            written = self._dirty_pages()
            self.summary = rebuild_address_space(pid, inj, ws, proc.mappings, self.core,
                                                 proc.mm, self.progress, self.map_core,
                                                 written)
            if self.use_tracking:
                rearmed = dirty.rearm(pid, inj, ws.scratch, self.core, written)
                self.tracking = "; ".join(x for x in (self.tracking, rearmed) if x)
            pairs = list(self.threads.pairs)
            for ts in self.threads.missing:
                thread = create_thread(frozen, inj, ws, ts)
                if ts.comm:
                    set_thread_name(thread, ws, ts.comm)
                pairs.append((thread, ts))
                self.created += 1
            self.not_restored += apply_process_state(pid, inj, ws, proc, self.files)
        else:
            self.summary = fill_memory(pid, self._still_mapped(), self.core,
                                       progress=self.progress)
            pairs = self.threads.pairs
            for t in self.threads.extra:
                self.not_restored.append(f"thread {t.tid} is not in the core: left running")
            for ts in self.threads.missing:
                self.not_restored.append(f"thread {ts.tid} of the core no longer exists")
        self.not_restored += self.summary.skipped
        # The leader last: the workspace is removed from it, at a syscall-exit
        # stop, so it never runs an instruction from the unmapped page.
        pairs.sort(key=lambda p: p[0] is leader)
        for thread, ts in pairs:
            self.not_restored += apply_thread_state(thread, ts, ws, full=self.full)
        with Injector(leader, ws.syscall_addr) as last:
            ws.remove(last)

    def _dirty_pages(self):
        """dirty.Written when tracking is armed relative to this core, else None
        (and self.tracking says why it is not used)."""
        if not self.use_tracking:
            return None
        written, why = dirty.for_restore(self.pid, self.core)
        self.tracking = why or ("only pages written since the checkpoint compared "
                                "(dirty tracking)" if written else "")
        return written

    def _still_mapped(self):
        """Foreign cores: the core's regions that are still mapped the same way."""
        live = procfs.read_maps(self.pid)
        out = []
        for m in self.core.state.mappings:
            got = pieces(live, m.start, m.end)
            covered = got and got[0].start <= m.start and got[-1].end >= m.end and all(
                a.end == b.start for a, b in zip(got, got[1:]))
            if not covered or any(is_kernel_mapping(p) for p in got):
                if m.stored == "all" and not (got and all(is_kernel_mapping(p) for p in got)):
                    self.not_restored.append(f"{m.start:#x}-{m.end:#x} is not mapped in the "
                                             "process any more")
                continue
            if any(p.shared for p in got):
                continue
            out.append(m)
        return out
