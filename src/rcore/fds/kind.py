"""The interface every descriptor kind implements (one module per kind, as
CRIU's files-*.c).  Defaults here describe a kind rcore cannot rebuild."""

import contextlib
import os

from ..errors import Incompatible, Unsupported
from ..linux import libc


class Kind:
    """One kind of descriptor: how it is captured, what its entry in the core
    holds, whether and how a restart rebuilds it, and what restore does.

    Which entries (`kind` values of RCORE_FILES) and which live descriptors
    ("anon_inode:NAME") are of a kind: fds.MODULES and fds.ANON.

    reopenable   restore may reopen it by path when it was closed or replaced
                 since the checkpoint (otherwise restore refuses then)
    new_description  open() returns a new open file description of f's own,
                 whose status flags the generic layer sets as f had them
    stage        0: rcore opens it before the process exists (open());
                 1, 2...: it is finished inside the new process, once every
                 descriptor and thread is there, in the order of stages
                 (in_process()); an epoll instance is completed after the
                 descriptors it watches
    """
    reopenable = False
    stage = 0
    new_description = False     # open() makes a description of f's own: the generic
                                # layer gives it f's O_NONBLOCK and O_APPEND

    def seekable(self, f):
        """Whether restore puts f's offset back."""
        return False

    def same(self, live, want):
        """Restore: whether the live descriptor (captured without data) still is
        the checkpoint's, beyond kind, inode and access mode, which the caller
        compares (anon inodes are one for all eventfds, epolls...)."""
        return True

    def roll_back(self, pid, live, want):
        """Restore, for a descriptor kept in place (same() was true): bring its
        state back to the checkpoint's (want) from what it is now (live, captured
        without data), through rcore's own copy of it (pidfd_getfd of pid's
        want.fd) where need be.  Returns what it left as it is, in words."""
        return []

    def capture(self, ctx, f, fdinfo):
        """Dump side, while the process is frozen: fill f.kind_state (and the
        fields of its own) from fdinfo (the dict of /proc/PID/fdinfo/N, with
        "lines": its raw lines) and what only the process can show.  ctx
        (fds.Capture): pid; copy_fd(fd): rcore's duplicate of one of its fds;
        with_data: also what only the process holds
        (queued bytes, contents) for a restart; unlinked_limit; kind_data: a
        dict the kinds share over one walk of the table.  Runs for the lowest
        fd of each open file description only."""

    def decode(self, f):
        """Check the kind's own keys of a FileDescriptor read from a core;
        raise ValueError naming what is wrong."""

    def check(self, f, plan):
        """Whether a restart can rebuild f at all, from the entry alone (no
        file system: open() checks that): raise Unsupported naming the fd if not.
        plan: the FdPlan (files, pid, tids).  The default refuses: a kind
        that rebuilds overrides check() and open()."""
        raise Unsupported(f"fd {f.fd} ({f.path}): rcore cannot rebuild this kind of "
                          "descriptor yet")

    def skippable(self, f):
        """Whether --skip-unsupported may replace f by a disconnected descriptor."""
        return True

    def why_not_skippable(self, f):
        return ""

    def warnings(self, f):
        """What a restart loses of f although it rebuilds it, said at dump and
        restart (words, without the fd)."""
        return []

    def open(self, plan, f):
        """Restart: open the open file description in rcore, before the process
        exists; returns rcore's descriptor, which spawn installs at f.fd.  None:
        in_process() creates it.  Only called once check() passed."""
        raise NotImplementedError

    def order(self, f, plan):
        """Within its stage, kinds finished inside the process go by this."""
        return 0

    def in_process(self, inj, ws, plan, f):
        """Restart, stage > 0: finish f inside the new process (Injector inj,
        Workspace ws), once every descriptor and thread exists."""

    def describe(self, f):
        """rcore info: the kind's state in a few words."""
        return ""

    def action(self, f, plan):
        """rcore info: what restart does with it (plan: FdPlan, nothing opened)."""
        return "refused (not supported yet)"


def fdinfo_int(fdinfo, key, base=10):
    try:
        return int(fdinfo[key].split()[0], base)
    except (KeyError, IndexError, ValueError):
        raise ValueError(f"fdinfo has no number {key!r}") from None


# Status flags an open() can give (the rest belongs to the descriptor or to creation).
STATUS_FLAGS = (os.O_ACCMODE | os.O_APPEND | os.O_NONBLOCK | os.O_DIRECT | os.O_NOATIME
                | os.O_SYNC | os.O_DSYNC | os.O_LARGEFILE | os.O_PATH | os.O_DIRECTORY)


def open_path(plan, f, flags):
    """Reopen f by its path with the status flags `flags`, at its offset."""
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


class Rebuilt(Kind):
    """A kind a restart rebuilds: check() passes."""

    def check(self, f, plan):
        pass


def check_int(value, what, low=0, high=1 << 64):
    """value from a core, an int in [low, high): else ValueError naming what."""
    if type(value) is not int or not low <= value < high:
        raise ValueError(f"{what} {value!r}")
    return value


@contextlib.contextmanager
def copy_of(pid, fd):
    """rcore's own duplicate of fd of process pid (pidfd_getfd), closed after."""
    pidfd = libc.pidfd_open(pid)
    try:
        copy = libc.pidfd_getfd(pidfd, fd)
    finally:
        os.close(pidfd)
    try:
        yield copy
    finally:
        os.close(copy)
