"""dump of a process tree: a process and all its descendants, one core each,
frozen at one instant.

    seize and stop every process (the descendants listed again until no new one
    appears: a stopped process cannot fork) -> capture each -> the tree note,
    descriptions shared across processes -> each forks its copy -> release all
    together -> stream each copy's memory -> commit every core, or none.

Any failure before the release leaves every process as it was (each
FrozenProcess detaches on the way out, each copy is ended); a SIGKILL of rcore
leaves each process to the guards of the single-process dump (dump.py)."""

import contextlib
import os
import signal
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from . import fds, sysvipc, timers, tree
from .dump import DumpSummary, ProcessDump
from .errors import NoSuchProcess, ProcessExited, RcoreError
from .interrupts import signals_held
from .linux import libc, procfs
from .linux.calllist import OUT
from .linux.ptrace import FrozenProcess


def dump_tree(root, path, *, stop, full, fork, stream, progress, unlinked_limit, run_state,
              tcp_lock, stopped, track, increment, exact_maps=False):
    """dump.dump's tree case (same options): the root's core at path, every
    other live process's at tree.member_path.  Returns a DumpSummary of the
    whole tree (processes, cores, identities: for --kill)."""
    if track or increment:
        raise RcoreError(f"process {root} has child processes: --track and --incremental "
                         "checkpoint a single process (add --no-children)")
    if os.getpid() in tree.descendants(root):
        raise RcoreError(f"rcore itself is a descendant of process {root}: it cannot "
                         "checkpoint a tree it is part of (add --no-children)")
    options = dict(full=full, fork=fork, stream=stream, unlinked_limit=unlinked_limit,
                   tcp_lock=tcp_lock, exact_maps=exact_maps)
    work = _Work(progress)
    try:
        with signals_held(), _short_gil_turns():
            members, t_freeze = _freeze(root, run_state, path, work, options)
            pdeath = {}

            def capture(one):
                frozen = work.frozen[one.pid]
                one.capture(frozen, also=_pdeath_reader(one.pid, pdeath))
                one.prepare(frozen, now=False)      # the notes are not complete yet
            work.each(work.frozen_turns(capture))
            if tcp_lock is not None and not stop:
                tcp_lock.release()
            t = _tree(root, members, work.dumps, pdeath)
            procs = {pid: one.proc for pid, one in work.dumps.items()}
            mark_shared(t, procs)
            queue_pipes_once(t, procs)
            # A pipe between members is no longer one with an end outside.
            fds.pipe.find_other_ends({pid: p.files for pid, p in procs.items()})
            # SysV objects are the tree's, not one process's: in the root's core.
            top = work.dumps[root]
            top.proc.sysvipc, top.ipc_warnings = sysvipc.capture(root, list(procs.values()))
            for pid, one in work.dumps.items():
                if pid == root:
                    one.writer.tree = t
                else:
                    one.proc.extra["tree_root"] = root
            work.each(work.frozen_turns(lambda one: one.store_frozen()),
                      [pid for pid, one in work.dumps.items() if one.now])
            for pid, one in work.dumps.items():
                if stop and one.run_state not in ("T", "t"):
                    stopped.append(pid)
            work.each(lambda one: work.frozen.pop(one.pid).release(
                signal.SIGSTOP if stop else 0))
            freeze = time.monotonic() - t_freeze
        fds.pipe.name_other_ends({pid: one.proc.files for pid, one in work.dumps.items()})
        work.each(lambda one: one.store())
        _commit_all(list(work.dumps.values()))
    finally:
        work.end()
    return _summary(t, work.dumps, freeze)


@contextlib.contextmanager
def _short_gil_turns():
    """While the tree is frozen, a thread back from a ptrace stop gets the GIL
    within 0.5 ms (not Python's 5 ms): its process's capture waits less."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class _Work:
    """The ProcessDump of each live process of the tree (pre-order once frozen),
    each process's steps run by a thread of its own: ptrace answers only the
    thread that seized a process (and its fork copy), and the processes are
    captured side by side.  While the tree is frozen, only as many threads as
    there are CPUs run their steps at a time (`frozen_turns`): the Python
    between two ptrace calls is the GIL's, and ten threads taking turns for it
    on two CPUs waited more than they overlapped (the freeze of 10 processes:
    median 91 ms against 75 ms, interleaved in one run of bench-like dumps).
    The memory is then stored by all at once."""

    def __init__(self, progress=None):
        self.dumps = {}             # pid -> ProcessDump
        self.frozen = {}            # pid -> FrozenProcess, until released
        self.threads = {}           # pid -> its tracer (a one-thread executor)
        self.progress = progress
        self.copied = {}            # pid -> (bytes done, bytes to do), for progress
        self._lock = threading.Lock()
        self._turns = threading.BoundedSemaphore(max(1, len(os.sched_getaffinity(0))))

    def frozen_turns(self, step):
        """step, run by at most one thread per CPU at a time."""
        def taking_turns(one):
            with self._turns:
                return step(one)
        return taking_turns

    def add(self, one):
        self.dumps[one.pid] = one
        if self.progress is not None:
            one.progress = lambda done, total, pid=one.pid: self._progress(pid, done, total)
        self.threads[one.pid] = ThreadPoolExecutor(1, thread_name_prefix=f"rcore-{one.pid}")
        self.threads[one.pid].submit(int)       # its thread started before the freeze

    def _progress(self, pid, done, total):
        """One progress bar for the whole tree: the sums over its processes."""
        with self._lock:
            self.copied[pid] = (done, total)
            self.progress(sum(d for d, _ in self.copied.values()),
                          sum(t for _, t in self.copied.values()))

    def drop(self, pid):
        one = self.dumps.pop(pid)
        self.threads.pop(pid).shutdown()
        one.close()

    def order(self, pids):
        ordered = {pid: self.dumps.pop(pid) for pid in pids if pid in self.dumps}
        self.dumps.update(ordered)

    def run(self, pids, step):
        """step(ProcessDump) for each of pids in its own thread, side by side:
        {pid: (result, exception)} once all have ended."""
        futures = {pid: self.threads[pid].submit(step, self.dumps[pid]) for pid in pids}
        out = {}
        for pid, fut in futures.items():
            try:
                out[pid] = (fut.result(), None)
            except BaseException as err:
                out[pid] = (None, err)
        return out

    def each(self, step, pids=None):
        """step for every process (or those of pids), side by side; raises the
        first failure once every step has ended."""
        for _, err in self.run(list(self.dumps) if pids is None else pids, step).values():
            if err is not None:
                raise err

    def end(self):
        """Release what is still frozen, end each copy, remove uncommitted cores:
        each in its own thread."""
        def finish(one):
            frozen = self.frozen.pop(one.pid, None)
            try:
                if frozen is not None:
                    frozen.release()
            finally:
                one.close()
        self.run(list(self.dumps), finish)
        for pool in self.threads.values():
            pool.shutdown()


def _commit_all(ones):
    """Every core under its name, or none: the root's last (a tree is found
    through it), and those already renamed removed again if one fails."""
    done = []
    try:
        for one in reversed(ones):
            one.commit()
            done.append(one.path)
    except BaseException:
        for path in done:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise


def _freeze(root, run_state, path, work, options):
    """Seize and stop root and every descendant, listed again until no new one
    appears (a stopped process cannot fork; one forked meanwhile is caught).
    Returns (the members' pids in pre-order, zombies too; the monotonic time the
    first seize began).  work gets the ProcessDump and FrozenProcess of each live
    member."""
    zombies = set()
    t_freeze = None
    while True:
        order = tree.descendants(root)
        new = [p for p in order if p not in work.dumps and p not in zombies]
        if not new:
            work.order(order)
            return order, t_freeze
        for pid in new:
            try:
                state = run_state if pid == root else procfs.read_stat(pid).state
                if pid != root and tree.is_zombie(pid):
                    zombies.add(pid)
                    continue
                work.add(ProcessDump(pid, path if pid == root else tree.member_path(path, pid),
                                     run_state=state, **options))
            except (NoSuchProcess, ProcessExited):
                if pid == root:
                    raise
        if t_freeze is None:
            t_freeze = time.monotonic()
        seized = work.run([p for p in new if p in work.dumps], work.frozen_turns(
            lambda one: FrozenProcess(one.pid, one.options).__enter__()))
        for pid, (frozen, err) in seized.items():
            if err is None:
                work.frozen[pid] = frozen
            elif pid != root and isinstance(err, (NoSuchProcess, ProcessExited)) and (
                    tree.is_zombie(pid) or not os.path.exists(procfs.path(pid))):
                # it ended meanwhile: a zombie now, or reaped (then not listed again)
                work.drop(pid)
                if tree.is_zombie(pid):
                    zombies.add(pid)
            elif (isinstance(err, ProcessExited) and not tree.is_zombie(pid)
                  and os.path.exists(procfs.path(pid, "task"))):
                raise RcoreError(f"process {pid}: its main thread has exited while other "
                                 "threads run on; rcore cannot checkpoint such a process") \
                    from err
            else:
                raise err


def _pdeath_reader(pid, into):
    """An injected call (capture_process `also`) reading pid's parent-death signal."""
    def also(calls):
        call = calls.add("prctl", libc.PR_GET_PDEATHSIG, OUT, 0, 0, 0, out=4)

        def done():
            call.result(pid)
            (into[pid],) = struct.unpack("<i", call.data[:4])
        return done
    return also


def _tree(root, order, dumps, pdeath):
    members = []
    for pid in order:
        try:
            m = tree.read_member(pid, pdeath.get(pid, 0))
        except NoSuchProcess:
            if pid in dumps:
                raise ProcessExited(pid) from None
            continue                    # a zombie reaped meanwhile: not in the tree
        if pid in dumps:
            m.zombie, m.exit_status = False, 0
            m.tids = [t.tid for t in dumps[pid].proc.threads]
            m.core = os.path.basename(dumps[pid].path)
        members.append(m)
    # the zombies of a parent outside what is kept cannot be placed: drop them
    kept, out = set(), []
    for m in members:
        if m.pid == root or m.ppid in kept:
            kept.add(m.pid)
            out.append(m)
    return tree.Tree(root, out)


def mark_shared(t, procs):
    """Set `shared` = [pid, fd] on each descriptor entry whose open file
    description is one an earlier process of the tree holds (kcmp KCMP_FILE,
    compared only for entries of the same file), naming that process's master
    entry of it.  procs: pid -> ProcessState."""
    earlier = {}                    # (dev, inode) -> [(pid, master fd)]
    for m in t.processes:
        proc = procs.get(m.pid)
        if proc is None:
            continue
        mine = {}
        for f in proc.files:
            key = (f.dev, f.inode)
            if f.description == f.fd:
                for pid, fd in earlier.get(key, ()):
                    if _same_description(pid, m.pid, fd, f.fd):
                        mine[f.fd] = [pid, fd]
                        break
        for f in proc.files:
            f.shared = mine.get(f.description)
        for f in proc.files:
            if f.description == f.fd and f.shared is None:
                earlier.setdefault((f.dev, f.inode), []).append((m.pid, f.fd))


def queue_pipes_once(t, procs):
    """A pipe's queued bytes stay on the entry of the first process holding it
    (in the tree's order), removed from the others' (each process captured them
    on its own): restart fills the pipe once."""
    seen = set()
    for m in t.processes:
        proc = procs.get(m.pid)
        for f in proc.files if proc else ():
            if f.kind not in ("pipe", "fifo") or f.description != f.fd:
                continue
            key = (f.dev, f.inode)
            if key in seen:
                f.queued = ""
            elif f.queued or "queued_error" in f.kind_state or f.pipe_size:
                seen.add(key)


def _same_description(pid1, pid2, fd1, fd2):
    try:
        return libc.kcmp_file(pid1, pid2, fd1, fd2) == 0
    except OSError:
        return False


def _summary(t, dumps, freeze):
    ones = list(dumps.values())
    root = ones[0]
    warnings = []
    for one in ones:
        prefix = "" if one is root else f"process {one.pid}: "
        warnings += [prefix + w for w in fds.dump_warnings(one.proc, _other_end_in(one, dumps))
                     + timers.warnings(one.proc.timers) + one.ipc_warnings]
    from .treerestart import warnings_of        # what a restart of the tree changes
    warnings += warnings_of(t)
    zombies = sum(m.zombie for m in t.processes)
    s = DumpSummary(root.path, root.pid, sum(len(o.proc.threads) for o in ones),
                    sum(len(o.segments) for o in ones), sum(o.copier.stored for o in ones),
                    sum(o.writer.size for o in ones), freeze, 0.0, root.method, warnings)
    s.processes = len(ones)
    s.zombies = zombies
    s.cores = [o.path for o in ones]
    s.identities = [(o.pid, o.proc.start_time) for o in ones]
    return s


def _other_end_in(one, dumps):
    """in_tree for fds.dump_warnings: a pipe whose read and write ends are both
    held in the tree, a unix socket whose peer another process holds."""
    ends, sockets = {}, set()
    for pid, other in dumps.items():
        for f in other.proc.files:
            if f.kind == "pipe":
                ends.setdefault(f.inode, set()).add(f.flags & os.O_ACCMODE == os.O_WRONLY)
            elif f.kind == "socket" and pid != one.pid:
                sockets.add(f.inode)

    def in_tree(f):
        if f.kind == "pipe":
            return ends.get(f.inode) == {True, False}
        return (f.kind == "socket" and isinstance(f.kind_state, dict)
                and f.kind_state.get("peer_ino") in sockets)
    return in_tree


def kill_tree(identities, timeout=5.0):
    """SIGKILL every process of a dumped tree that is still the same process
    (PID and start time), children before parents, then wait until each is dead."""
    alive = [(pid, start) for pid, start in identities if procfs.identity_alive(pid, start)]
    for pid, start in reversed(alive):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for pid, start in alive:
        while time.monotonic() < deadline:
            try:
                st = procfs.read_stat(pid)
            except NoSuchProcess:
                break
            if st.state in ("Z", "X") or st.start_time != start:
                break
            time.sleep(0.002)
