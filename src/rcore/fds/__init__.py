"""Descriptors: the generic layer and the registry of kinds.

A descriptor kind is a unit: how it is captured, what its entry in the core
holds, how a restart rebuilds it and what restore does with it.  Each kind is
one module here implementing kind.Kind (CRIU's files-*.c are the precedent);
adding a kind touches that module, the registry below and the table in
docs/ARCHITECTURE.md.  This layer holds what every kind shares:

- walking the table: capture_files() reads /proc/PID/fd and fdinfo, finds
  which descriptors share one open file description (kcmp), and lets the kind
  of each description capture its own state (into FileDescriptor.kind_state);
- numbers, status flags and close-on-exec;
- shared open file descriptions: the lowest descriptor of a description is its
  "master", opened by its kind once; the others receive the same description.
  (For process trees, the master is the lowest (pid, fd); the others receive
  it the same way: FdPlan.fds maps numbers to one rcore descriptor.)
- restart: plan_files() checks and opens everything before any process exists
  (the single planning entry point of restart.py; it also turns shared memfd
  mappings into mappings of the new memfd: /proc/self/fd/N in the new process,
  FdPlan.mappings); spawn installs FdPlan.fds at
  their numbers; finish() runs inside the new process once its threads exist:
  the kinds that must be completed there (stage > 0: pidfds, epoll watches),
  then close-on-exec flags, then the file locks and leases (locks.py);
- --skip-unsupported (plan_files): a descriptor that cannot be rebuilt becomes
  a disconnected socket (reads see end of file, writes fail with EPIPE), and a
  warning names fd and kind; one whose loss would leave the process running
  but unreachable (Kind.skippable() false: a listening socket, a bound
  datagram socket without a peer) is refused all the same.

Restore (same live process, apply.py) keeps descriptors that are still the same
open file and reopens by path only what Kind.reopenable allows."""

import fcntl
import importlib
import os

from .. import locks
from ..errors import Incompatible, Unsupported
from ..linux import libc, procfs
from ..state import FileDescriptor
from . import ghost, memfd, pipe    # the generic layer uses these kinds' helpers
from .kind import Kind

# The kinds: the `kind` of an entry -> the module of this package implementing
# it, imported on first use (kind_of), so that a process without sockets, say,
# never loads socket, sock_diag, unix, inet and tcp_repair.
MODULES = {"file": "file", "dir": "directory", "chr": "device", "blk": "device",
           "pipe": "pipe", "fifo": "pipe", "memfd": "memfd", "eventfd": "eventfd",
           "timerfd": "timerfd", "signalfd": "signalfd", "epoll": "epoll",
           "inotify": "inotify", "pidfd": "pidfd", "socket": "sockets"}
# A live descriptor's readlink target "anon_inode:NAME" -> its entry kind (kinds
# without a file of their own; procfs.fd_kind says "anon").
ANON = {"anon_inode:[eventfd]": "eventfd", "anon_inode:[timerfd]": "timerfd",
        "anon_inode:[signalfd]": "signalfd", "anon_inode:[eventpoll]": "epoll",
        "anon_inode:inotify": "inotify", "anon_inode:[pidfd]": "pidfd"}
UNKNOWN = Kind()
_loaded = {}            # entry kind -> Kind, as kind_of found it

STDIO_NAMES = ("stdin", "stdout", "stderr")
SETTABLE_FLAGS = os.O_NONBLOCK | os.O_APPEND    # what F_SETFL sets and kinds care about
F_SETFD, FD_CLOEXEC = 2, 1

# Unlinked files up to this size are stored whole in the core: nothing else
# will hold their contents once the process is gone.
UNLINKED_FILE_LIMIT = 1 << 20


def kind_of(f):
    """The Kind of a FileDescriptor (UNKNOWN refuses everything)."""
    kind = _loaded.get(f.kind)
    if kind is None:
        module = MODULES.get(f.kind)
        kind = UNKNOWN if module is None else \
            importlib.import_module(f"{__name__}.{module}").KIND
        _loaded[f.kind] = kind
    return kind


# --- dump ------------------------------------------------------------------------

def capture_files(pid, unlinked_limit=UNLINKED_FILE_LIMIT, with_data=True, tcp_lock=None):
    """The descriptor table of (frozen) process pid, each entry captured by its
    kind.  with_data: also what only the process holds (queued pipe bytes,
    contents of unlinked files up to unlinked_limit bytes...) for a restart.
    tcp_lock: a tcp_repair.NetworkLock to capture established TCP connections
    alive (dump --tcp-established); the caller releases it."""
    with Capture(pid, with_data, unlinked_limit, tcp_lock) as ctx:
        return _capture_table(ctx)


def _capture_table(ctx):
    from ..dirty import own_fds     # (dirty.py imports rebuild, which imports this package)
    pid = ctx.pid
    own = own_fds(pid)              # rcore's dirty tracking (dirty.py), not the program's
    fds = []
    masters = {}                    # (dev, inode) -> fds opening a description of it
    for info in procfs.read_fds(pid):
        if info.fd in own:
            continue
        # kcmp: which fds share one open file description (only fds of one
        # file can: the others are not compared, which keeps big tables fast)
        same_file = masters.setdefault((info.st_dev, info.ino), [])
        description = next((m for m in same_file if _same_description(pid, m, info.fd)),
                           info.fd)
        if description == info.fd:
            same_file.append(info.fd)
        target = info.target
        deleted = target.endswith(" (deleted)")
        kind = procfs.fd_kind(info)
        if kind == "anon":
            kind = ANON.get(target, kind)
        fds.append(FileDescriptor(
            fd=info.fd, kind=kind, path=target[: -len(" (deleted)")] if deleted else target,
            flags=info.flags & ~os.O_CLOEXEC, pos=info.pos,
            cloexec=bool(info.flags & os.O_CLOEXEC), description=description,
            inode=info.ino, dev=info.st_dev, rdev=info.st_rdev, size=info.st_size,
            mtime_ns=info.st_mtime_ns, ctime_ns=info.st_ctime_ns, deleted=deleted))
        if description == info.fd:
            fdinfo = procfs.parse_status(info.text)
            fdinfo["lines"] = info.text.decode("utf-8", "surrogateescape").splitlines()
            _capture_kind(ctx, fds[-1], fdinfo)
            locks.capture(fds[-1], fdinfo)
    pipe.find_other_ends({pid: fds})
    return fds


class Capture:
    """What the kinds' capture() share over one walk of a descriptor table."""

    def __init__(self, pid, with_data, unlinked_limit, tcp_lock=None):
        self.pid, self.with_data, self.unlinked_limit = pid, with_data, unlinked_limit
        self.tcp_lock = tcp_lock
        self.kind_data = {}
        self._pidfd = None

    def copy_fd(self, fd):
        """rcore's own duplicate of the process's fd (pidfd_getfd), to ask the
        kernel what only an open descriptor tells; the caller closes it."""
        if self._pidfd is None:
            self._pidfd = libc.pidfd_open(self.pid)
        return libc.pidfd_getfd(self._pidfd, fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._pidfd is not None:
            os.close(self._pidfd)


def _capture_kind(ctx, f, fdinfo):
    """A failure leaves the reason in the entry: restart then refuses the fd
    with it, and dump and info show it."""
    try:
        kind_of(f).capture(ctx, f, fdinfo)
    except (OSError, ValueError) as err:
        f.kind_state = {"error": f"could not be captured: {err}"}


def _same_description(pid, fd1, fd2):
    try:
        return libc.kcmp_file(pid, pid, fd1, fd2) == 0
    except OSError:
        return False


def dump_warnings(proc, in_tree=None):
    """What a restart of proc's descriptors will not carry, in words (one line
    per descriptor), to say at dump time.  in_tree(f): whether the other end of
    pipe or socket f is in another process of proc's tree (rebuilt with it:
    not refused as a connection outside the process)."""
    plan = FdPlan(proc)
    out = []
    for f in plan.files:
        if f.description != f.fd or (in_tree is not None and in_tree(f)):
            continue
        why = _why_not(f, plan)
        out += [f"{why}: a restart will refuse it"] if why else _kind_warnings(f)
    return out


def _why_not(f, plan):
    try:
        _check(f, plan)
    except Unsupported as err:
        return str(err)
    return None


def _kind_warnings(f):
    return [f"fd {f.fd} ({f.kind}): {w}" for w in kind_of(f).warnings(f)] + locks.warnings(f)


# --- core file --------------------------------------------------------------------

def decode(f):
    """A FileDescriptor read from a core, with its kind's keys checked (raises
    ValueError naming fd and kind)."""
    if not isinstance(f.kind_state, dict):
        raise ValueError(f"fd {f.fd}: kind_state is not an object")
    if not isinstance(f.locks, list):
        raise ValueError(f"fd {f.fd}: locks is not a list")
    locks.check(f)
    if f.description == f.fd and "error" not in f.kind_state:
        try:
            kind_of(f).decode(f)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"fd {f.fd} ({f.kind}): bad {err}") from None
    return f


# --- restart ----------------------------------------------------------------------

class TreeFiles:
    """What the plans of the processes of one tree share: every entry of every
    process (a pipe's ends, a socket's peer may be in another process), what
    kinds built once for all (kind_data: one pipe, one socket pair), and each
    open file description shared across processes (by_shared: (pid, fd) of its
    first holder -> rcore's descriptor of it)."""

    def __init__(self, procs):
        self.files = [f for p in procs for f in p.files]
        self.kind_data = {}
        self.by_shared = {}


class FdPlan:
    """rcore-side descriptors for the new process: fds {number: rcore fd}.
    In a tree (TreeFiles), kinds look for other ends in all_files and share
    kind_data with the other processes' plans."""

    def __init__(self, proc, tree=None):
        self.pid = proc.pid
        self.tree = tree
        self.files = sorted(proc.files, key=lambda f: f.fd)
        self.all_files = tree.files if tree else self.files
        self.fds = {}
        self.cloexec = []
        self.warnings = []
        self.truncate = []              # (rcore fd, size) done by commit()
        self.at_commit = []             # what kinds do last (arm timers)
        self.after_release = []         # f(pid) once the process runs (SIGWINCH)
        self.redirected = {}            # (path, is stdin) -> rcore fd
        self.in_process = []            # FileDescriptor finished by finish()
        self.locked = []                # FileDescriptor whose locks finish() takes again
        self.ghosts = []                # private directories of deleted files (ghost.py)
        self.dups = []                  # (from fd, to fd) made by finish()
        self.spare = []                 # numbers used only while rebuilding; finish() closes
        self.mappings = proc.mappings   # to rebuild (memfd.map_sources)
        self.tids = {t.tid: t.tid for t in proc.threads}    # checkpointed -> now
        self.kind_data = tree.kind_data if tree else {}     # kind name -> what open() shares
        self.tcp_established = False    # restart --tcp-established (tcp_repair.py)
        self._owned = []                # rcore fds to close when done
        self._keepers = []              # held open until the process has its own

    def own(self, fd):
        self._owned.append(fd)
        return fd

    def keep(self, fd):
        self._keepers.append(fd)
        return fd

    def commit(self):
        """Just before the process runs: roll written files back to the
        checkpoint, arm timers."""
        for fd, size in self.truncate:
            os.ftruncate(fd, size)
        self.truncate = []
        ghost.remove(self.ghosts)       # the process holds them deleted again
        self.ghosts = []
        for step in self.at_commit:
            step()
        self.at_commit = []

    def released(self, pid):
        """Once the process runs: what kinds tell it then."""
        for step in self.after_release:
            try:
                step(pid)
            except ProcessLookupError:
                pass
        self.after_release = []

    def close(self):
        for fd in self._owned + self._keepers:
            try:
                os.close(fd)
            except OSError:
                pass
        self._owned, self._keepers = [], []
        ghost.remove(self.ghosts)
        self.ghosts = []


def plan_files(proc, stdio=(None, None, None), skip_unsupported=False, read_memory=None,
               inherit=None, tcp_established=False, tree=None):
    """Check and open everything the checkpoint's descriptor table needs, before
    any process exists; raise Unsupported/Incompatible naming the fd if
    something cannot be rebuilt.  stdio: redirections of fds 0-2 (a path, an
    open fd, or a file object).  read_memory(addr, length): the core's bytes;
    with it, plan.mappings are the mappings to rebuild, shared memfd mappings
    made mappings of the rebuilt memfd (memfd.map_sources).  inherit: {fd: a
    path or one of rcore's own descriptors (int)} that checkpointed descriptor
    fd becomes instead of being rebuilt (`--inherit-fd`: what the program
    inherited from whatever started it, a pipe from a CI runner...).
    tcp_established: bring established TCP connections back alive (their
    repair state is in the core).  tree: the TreeFiles of the checkpointed
    tree this process is part of (plans made in the tree's order: an open file
    description shared with an earlier process is that process's)."""
    plan = FdPlan(proc, tree)
    plan.tcp_established = tcp_established
    try:
        _plan(plan, stdio, skip_unsupported, inherit or {})
        if read_memory is not None:
            plan.mappings = memfd.map_sources(plan, plan.mappings, read_memory)
    except BaseException:
        plan.close()
        raise
    return plan


def _plan(plan, stdio, skip_unsupported, inherit):
    unknown = sorted(set(inherit) - {f.fd for f in plan.files})
    if unknown:
        raise Incompatible(f"--inherit-fd {unknown[0]}: the process had no descriptor "
                           f"{unknown[0]} at the checkpoint")
    by_description = {}
    for f in plan.files:
        if f.fd < 3 and stdio[f.fd] is not None:
            plan.fds[f.fd] = _redirect(plan, f.fd, stdio[f.fd])
            continue
        if f.fd in inherit:
            plan.fds[f.fd] = _inherited(plan, f, inherit[f.fd])
            if f.description == f.fd:
                by_description[f.fd] = plan.fds[f.fd]
            _note_cloexec(plan, f)
            continue
        if _shared_across(plan, f, by_description):
            continue
        if f.description in by_description:
            src = by_description[f.description]
            if src is None:
                plan.dups.append((f.description, f.fd))
            else:
                plan.fds[f.fd] = src
            _note_cloexec(plan, f)
            continue
        try:
            _check(f, plan)
            src = _open(plan, f)
            if src is not None and kind_of(f).new_description:
                _set_status_flags(src, f)
            if src is None or kind_of(f).stage:
                plan.in_process.append(f)
            if f.locks:
                plan.locked.append(f)
            plan.warnings += _kind_warnings(f)
        except Unsupported as err:
            src = _skip(plan, f, err, skip_unsupported)
        if src is not None:
            plan.fds[f.fd] = src
        by_description[f.description] = src
        if plan.tree:
            plan.tree.by_shared[(plan.pid, f.fd)] = src
        _note_cloexec(plan, f)
    for fd, target in enumerate(stdio):     # redirections of streams that were closed
        if target is not None and fd not in plan.fds:
            plan.fds[fd] = _redirect(plan, fd, target)
    plan.in_process.sort(key=lambda f: (kind_of(f).stage, kind_of(f).order(f, plan)))


def _shared_across(plan, f, by_description):
    """f's open file description is an earlier process's (dump's `shared`):
    the same rcore descriptor, so that both have one offset, one set of flags.
    Returns whether f is done."""
    shared = getattr(f, "shared", None)
    if not plan.tree or not shared or f.description != f.fd:
        return False
    key = tuple(shared)
    if key not in plan.tree.by_shared:
        return False
    src = plan.tree.by_shared[key]
    if src is None:
        raise Unsupported(f"fd {f.fd} ({f.kind}) shares its open file description with fd "
                          f"{key[1]} of process {key[0]}; rcore makes a {f.kind} inside one "
                          "process and cannot share it with another")
    plan.fds[f.fd] = src
    by_description[f.fd] = src
    plan.tree.by_shared[(plan.pid, f.fd)] = src
    _note_cloexec(plan, f)
    return True


def _open(plan, f):
    try:
        return kind_of(f).open(plan, f)
    except OSError as err:
        raise Incompatible(f"fd {f.fd} ({f.kind}): cannot be rebuilt: "
                           f"{err.strerror or err}") from None


def _set_status_flags(fd, f):
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    want = (flags & ~SETTABLE_FLAGS) | (f.flags & SETTABLE_FLAGS)
    if want != flags:
        fcntl.fcntl(fd, fcntl.F_SETFL, want)


def _skip(plan, f, err, skip_unsupported):
    """--skip-unsupported: a disconnected descriptor in place of f, and a warning;
    refused without the option, or when f is not skippable (a server socket)."""
    k = kind_of(f)
    if not k.skippable(f):
        hint = f"; --skip-unsupported does not skip it: {k.why_not_skippable(f)}"
        raise Unsupported(f"{err}{hint}") from None
    if not skip_unsupported:
        raise Unsupported(f"{err} (--inherit-fd {f.fd}:PATH or {f.fd}:fd:N says what it "
                          "becomes: a file, or one of rcore's own descriptors; "
                          "--skip-unsupported makes it a disconnected descriptor)") from None
    plan.warnings.append(f"{err}: it is now a disconnected socket (reads see end of file, "
                         "writes fail with EPIPE)")
    return _disconnected(plan)


def _disconnected(plan):
    """What stands for a skipped descriptor: one end of a socket pair whose other
    end is closed.  Not /dev/null, which would swallow writes in silence."""
    import socket           # (only here: see MODULES)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    b.close()
    return plan.own(a.detach())


def _check(f, plan):
    if f.kind_state.get("error"):
        raise Unsupported(f"fd {f.fd} ({f.kind}) {f.kind_state['error']}")
    kind_of(f).check(f, plan)


def _note_cloexec(plan, f):
    if f.cloexec:
        plan.cloexec.append(f.fd)


def _redirect(plan, fd, target):
    if isinstance(target, int):
        return target
    if hasattr(target, "fileno"):
        return target.fileno()
    # The same file for stdout and stderr is opened once, as `>FILE 2>&1` does:
    # one offset, so that neither overwrites what the other wrote.
    key = (target, fd == 0)
    if key not in plan.redirected:
        flags = os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:
            plan.redirected[key] = plan.own(os.open(target, flags | os.O_CLOEXEC, 0o666))
        except OSError as err:
            raise Incompatible(f"cannot open {target} for {STDIO_NAMES[fd]}: "
                               f"{err.strerror}") from None
    return plan.redirected[key]


def _inherited(plan, f, what):
    """--inherit-fd: rcore's descriptor `what` as it is, or the file at path
    `what` opened with f's access mode (created, and appended to, when f
    writes: it stands for a pipe or a log more often than not)."""
    if isinstance(what, int):
        try:
            os.fstat(what)
        except OSError:
            raise Incompatible(f"--inherit-fd {f.fd}:fd:{what}: rcore has no descriptor "
                               f"{what}") from None
        return what
    access = f.flags & os.O_ACCMODE
    flags = access | os.O_CLOEXEC
    if access != os.O_RDONLY:
        flags |= os.O_CREAT | os.O_APPEND
    try:
        return plan.own(os.open(what, flags, 0o666))
    except OSError as err:
        raise Incompatible(f"--inherit-fd {f.fd}:{what}: {err.strerror}") from None


def finish(inj, ws, plan, tids=None):
    """In the new process, after execve and once its threads exist: the kinds
    finished there (by stage), the descriptors sharing their descriptions, then
    the close-on-exec flags (execve would have closed those descriptors).
    tids: checkpointed TID -> TID now, when they differ."""
    if tids:
        plan.tids.update(tids)
    for fd in plan.spare:
        inj.call("close", fd)
    for f in plan.in_process:
        kind_of(f).in_process(inj, ws, plan, f)
        if f.fd not in plan.fds and not f.cloexec:
            inj.call("fcntl", f.fd, F_SETFD, 0)     # made there, maybe close-on-exec
    for src, dst in plan.dups:
        inj.call("dup2", src, dst)
    for fd in plan.cloexec:
        inj.call("fcntl", fd, F_SETFD, FD_CLOEXEC)
    for f in plan.locked:               # once every descriptor has its number
        locks.take(inj, ws, f)


# --- info -------------------------------------------------------------------------

def describe(proc, tree=None):
    """rcore info: {fd: (the kind's state, what restart does with it)}.  tree:
    the TreeFiles of the tree proc is part of (a pipe to another member is no
    pipe to the outside)."""
    plan = FdPlan(proc, tree)
    out = {}
    for f in plan.files:
        if f.description != f.fd:
            out[f.fd] = ("", f"shares fd {f.description}'s open file description")
            continue
        why = _why_not(f, plan)
        try:
            state = kind_of(f).describe(f) if not f.kind_state.get("error") else ""
        except (KeyError, TypeError, ValueError):
            state = ""
        if f.locks:
            state += (", " if state else "") + "holds " + ", ".join(map(locks.describe, f.locks))
        out[f.fd] = (state, f"refused: {why}" if why else kind_of(f).action(f, plan))
    return out
