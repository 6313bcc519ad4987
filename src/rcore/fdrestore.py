"""The file-descriptor table of a restarted process.

rcore opens every descriptor itself, before the process exists, and spawn.py
installs them at their numbers just before execve: open file descriptions that
were shared (dup, `2>&1`) are shared again, offsets and status flags are those of
the checkpoint.  After execve the close-on-exec flags are put back by an injected
fcntl (they would have closed the descriptors at execve).

    regular file      reopened by path with its flags (O_APPEND kept), at its
                      offset; a file open with O_APPEND that grew since the
                      checkpoint is cut back to its checkpointed size (what the
                      process appended after the checkpoint it appends again;
                      other written files are simply rewritten from the offset);
                      a file open only for reading must be unchanged
    unlinked file     recreated from the contents stored in the core, then
                      unlinked again
    directory, character/block device    reopened by path
    terminal          reattached to the terminal rcore runs on
    pipe              both ends in the process: a new pipe holding the bytes
                      that were queued; one end only (a standard stream piped to
                      another program): rcore's own descriptor of that number
    FIFO              reopened by path, with its queued bytes
    socket, eventfd, epoll, timerfd, signalfd, inotify, memfd...
                      refused, naming the fd; with skip_unsupported, /dev/null
                      and a warning

Everything is checked (files exist and are the same, nothing unsupported)
while planning, before any process is started."""

import os
import stat

from .errors import Incompatible, Unsupported
from .linux import pipes

STATUS_FLAGS = (os.O_ACCMODE | os.O_APPEND | os.O_NONBLOCK | os.O_DIRECT | os.O_NOATIME
                | os.O_SYNC | os.O_DSYNC | os.O_LARGEFILE | os.O_PATH | os.O_DIRECTORY)
TTY_MAJORS = {4, 5, 136, 137, 138, 139, 140, 141, 142, 143}   # tty, /dev/tty+console, pts
F_SETFD, FD_CLOEXEC = 2, 1
STDIO_NAMES = ("stdin", "stdout", "stderr")


class FdPlan:
    """rcore-side descriptors for the new process: fds {number: rcore fd}."""

    def __init__(self):
        self.fds = {}
        self.cloexec = []
        self.warnings = []
        self.truncate = []          # (rcore fd, size) done by commit()
        self.redirected = {}        # (path, is stdin) -> rcore fd
        self._owned = []            # rcore fds to close when done
        self._keepers = []          # FIFO ends held open until the process has its own

    def own(self, fd):
        self._owned.append(fd)
        return fd

    def commit(self):
        """Just before the process runs: roll written files back to the checkpoint."""
        for fd, size in self.truncate:
            os.ftruncate(fd, size)
        self.truncate = []

    def close(self):
        for fd in self._owned + self._keepers:
            try:
                os.close(fd)
            except OSError:
                pass
        self._owned, self._keepers = [], []


def plan_files(proc, stdio=(None, None, None), skip_unsupported=False):
    """Open everything the checkpoint's descriptor table needs; raise
    Unsupported/Incompatible naming the fd if something cannot be rebuilt.
    stdio: redirections of fds 0-2 (a path, an open fd, or a file object)."""
    plan = FdPlan()
    try:
        _plan(plan, proc, stdio, skip_unsupported)
    except BaseException:
        plan.close()
        raise
    return plan


def _plan(plan, proc, stdio, skip_unsupported):
    files = sorted(proc.files, key=lambda f: f.fd)
    by_description = {}
    pipe_ends = {}                  # pipe inode -> {"r": [fd...], "w": [...]}
    for f in files:
        if f.kind == "pipe":
            pipe_ends.setdefault(f.inode, {"r": [], "w": []})[
                "w" if f.flags & os.O_ACCMODE == os.O_WRONLY else "r"].append(f)
    built_pipes = {}
    for f in files:
        if f.fd < 3 and stdio[f.fd] is not None:
            plan.fds[f.fd] = _redirect(plan, f.fd, stdio[f.fd])
            continue
        if f.description in by_description:
            plan.fds[f.fd] = by_description[f.description]
            _note_cloexec(plan, f)
            continue
        try:
            src = _open_one(plan, f, pipe_ends, built_pipes)
        except Unsupported as err:
            if not skip_unsupported:
                raise Unsupported(f"{err} (--skip-unsupported replaces it with "
                                  "/dev/null)") from None
            plan.warnings.append(f"{err}: replaced with /dev/null")
            src = plan.own(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
        by_description[f.description] = src
        plan.fds[f.fd] = src
        _note_cloexec(plan, f)
    for fd, target in enumerate(stdio):     # redirections of streams that were closed
        if target is not None and fd not in plan.fds:
            plan.fds[fd] = _redirect(plan, fd, target)


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


def _open_one(plan, f, pipe_ends, built_pipes):
    if f.kind == "file" and f.deleted:
        return _open_unlinked(plan, f)
    if f.kind == "file":
        return _open_regular(plan, f)
    if f.kind == "dir":
        return _open_path(plan, f, f.flags | os.O_DIRECTORY)
    if f.kind in ("chr", "blk"):
        if os.major(f.rdev) in TTY_MAJORS:
            return _terminal(f)
        return _open_path(plan, f, f.flags)
    if f.kind == "pipe":
        return _open_pipe(plan, f, pipe_ends[f.inode], built_pipes)
    if f.kind == "fifo":
        return _open_fifo(plan, f)
    raise Unsupported(f"fd {f.fd} ({f.path}) cannot be restored yet")


def _open_path(plan, f, flags):
    try:
        fd = plan.own(os.open(f.path, (flags & STATUS_FLAGS) | os.O_CLOEXEC))
    except FileNotFoundError:
        raise Incompatible(f"fd {f.fd}: {f.path} no longer exists") from None
    except OSError as err:
        raise Incompatible(f"fd {f.fd}: cannot reopen {f.path}: {err.strerror}") from None
    if f.pos and not f.flags & os.O_PATH:
        try:
            os.lseek(fd, f.pos, os.SEEK_SET)
        except OSError:
            pass                      # devices without offsets
    return fd


def _open_regular(plan, f):
    fd = _open_path(plan, f, f.flags)
    st = os.fstat(fd)
    if (st.st_ino, st.st_dev) != (f.inode, f.dev):      # zeroed fields too
        raise Incompatible(f"fd {f.fd}: {f.path} is another file than at the checkpoint")
    writable = f.flags & os.O_ACCMODE != os.O_RDONLY
    if writable:
        if st.st_size < f.size:
            raise Incompatible(f"fd {f.fd}: {f.path} is shorter ({st.st_size} bytes) than at "
                               f"the checkpoint ({f.size}): data the process wrote is gone")
        if st.st_size > f.size and f.flags & os.O_APPEND:
            # Appends made after the checkpoint would be made again after them.
            plan.truncate.append((fd, f.size))
    elif (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns) \
            or f.ctime_ns and st.st_ctime_ns != f.ctime_ns:     # ctime: 0 in older cores
        raise Incompatible(f"fd {f.fd}: {f.path} changed since the checkpoint "
                           "(size, modification or change time)")
    return fd


def _open_unlinked(plan, f):
    if not f.contents_stored:
        raise Unsupported(f"fd {f.fd}: the unlinked file {f.path} ({f.size} bytes) is not "
                          "stored in the core (larger than the dump's --unlinked-limit)")
    data = bytes.fromhex(f.contents)
    directory = os.path.dirname(f.path) or "/"
    candidates = [f.path] + [os.path.join(d, f".rcore-unlinked-{os.getpid()}-{f.fd}")
                             for d in (directory, "/tmp")]
    for path in candidates:
        try:
            tmp = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError:
            continue
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(tmp, view):]
            fd = plan.own(os.open(path, (f.flags & STATUS_FLAGS) | os.O_CLOEXEC))
            os.lseek(fd, f.pos, os.SEEK_SET)
            return fd
        finally:
            os.close(tmp)
            os.unlink(path)
    raise Incompatible(f"fd {f.fd}: cannot recreate the unlinked file {f.path}")


def _terminal(f):
    for fd in (f.fd, 0, 1, 2):
        if fd < 3 and _isatty(fd):
            return fd
    raise Unsupported(f"fd {f.fd} was a terminal ({f.path}) and rcore runs without one")


def _isatty(fd):
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _open_pipe(plan, f, ends, built):
    if ends["r"] and ends["w"]:
        if f.inode not in built:
            r, w = os.pipe2(os.O_CLOEXEC)
            plan.own(r)
            plan.own(w)
            queued = next((bytes.fromhex(e.queued) for e in ends["r"] + ends["w"] if e.queued), b"")
            capacity = max((e.pipe_size for e in ends["r"] + ends["w"]), default=0)
            pipes.fill_pipe(w, queued, capacity)
            built[f.inode] = (r, w)
        r, w = built[f.inode]
        end = w if f.flags & os.O_ACCMODE == os.O_WRONLY else r
        if f.flags & os.O_NONBLOCK:
            # Status flags belong to the open file description, which dup()
            # shares: open the pipe end again for a description of its own.
            access = os.O_WRONLY if end == w else os.O_RDONLY
            end = plan.own(os.open(f"/proc/self/fd/{end}",
                                   access | os.O_NONBLOCK | os.O_CLOEXEC))
        return end
    if f.fd < 3:
        # A standard stream piped to or from another program, which is not
        # part of the checkpoint: the restarted process uses rcore's own.
        try:
            os.fstat(f.fd)
            return f.fd
        except OSError:
            pass
    raise Unsupported(f"fd {f.fd} ({f.path}) is a pipe whose other end is outside the process")


def _open_fifo(plan, f):
    try:
        if not stat.S_ISFIFO(os.stat(f.path).st_mode):
            raise Incompatible(f"fd {f.fd}: {f.path} is no longer a FIFO")
        # An end opened for both directions keeps the open of the other end from
        # blocking and holds the queued bytes until the process has its ends.
        keeper = os.open(f.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Incompatible(f"fd {f.fd}: the FIFO {f.path} no longer exists") from None
    plan._keepers.append(keeper)
    if f.queued and pipes.queued_bytes(keeper) == 0:
        pipes.fill_pipe(keeper, bytes.fromhex(f.queued), f.pipe_size)
    fd = plan.own(os.open(f.path, (f.flags & STATUS_FLAGS) | os.O_NONBLOCK | os.O_CLOEXEC))
    if not f.flags & os.O_NONBLOCK:
        os.set_blocking(fd, True)
    return fd


def apply_cloexec(inj, plan):
    """In the new process, after execve: put the close-on-exec flags back."""
    for fd in plan.cloexec:
        inj.call("fcntl", fd, F_SETFD, FD_CLOEXEC)
