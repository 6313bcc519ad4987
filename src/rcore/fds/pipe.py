"""Pipes and FIFOs, with the bytes queued in them."""

import os
import stat

from .. import arch
from ..errors import Incompatible, Unsupported
from ..linux import pipes
from . import ghost
from .kind import STATUS_FLAGS, Rebuilt, check_int, copy_of
from ..record import replace


class Pipe(Rebuilt):
    """Captured: which end, and on the lowest fd of each pipe the bytes queued
    in it (`queued`, peeked with tee(2) without taking them out) and its
    capacity (`pipe_size`).

    Restart: a pipe with both ends in the process becomes a new pipe holding
    the queued bytes; one end only (a standard stream piped to another
    program): rcore's own descriptor of that number.  A FIFO is reopened by
    path, with its queued bytes; a deleted one is made again in a private
    place, opened and removed (ghost.py).
    Restore: kept if still open; a pipe closed since cannot be reopened."""

    def capture(self, ctx, f, fdinfo):
        if f.kind == "fifo" and f.deleted:
            ghost.capture(ctx, f)
        seen = ctx.kind_data.setdefault("pipes", set())
        if ctx.with_data and (f.dev, f.inode) not in seen:
            seen.add((f.dev, f.inode))
            try:
                data, f.pipe_size = pipes.peek_pipe(ctx.pid, f.fd)
            except OSError as err:
                # Refused at restart only if the pipe is rebuilt (both ends inside).
                f.kind_state["queued_error"] = err.strerror or str(err)
                return
            f.queued = data.hex()

    def decode(self, f):
        bytes.fromhex(f.queued)
        other = f.kind_state.get("other_end", [])
        if not isinstance(other, list) or len(other) > 16 or not all(
                isinstance(h, dict) and isinstance(h.get("comm"), str) for h in other):
            raise ValueError("other_end")
        for h in other:
            check_int(h.get("pid"), "other_end pid", high=1 << 22)
        ghost.decode(f)
        check_int(f.pipe_size, "pipe_size", high=1 << 31)

    def open(self, plan, f):
        return _open_fifo(plan, f) if f.kind == "fifo" else _open_pipe(plan, f)

    def describe(self, f):
        end = "write end" if f.flags & os.O_ACCMODE == os.O_WRONLY else "read end"
        queued = len(f.queued) // 2
        return end + (f", {queued} bytes queued" if queued else "")

    def warnings(self, f):
        holders = f.kind_state.get("other_end")
        if f.kind != "pipe" or not holders:
            return []
        who = ", ".join(f"{h['pid']} ({h['comm']})" if h["pid"] else "a process rcore cannot "
                        "see" for h in holders)
        if f.fd < 3:
            return [f"its other end is held by process {who}, outside the checkpoint: restart "
                    f"gives it rcore's own {STDIO[f.fd]} instead"]
        return [f"its other end is held by process {who}, outside the checkpoint: restart "
                "refuses it"]

    def action(self, f, plan):
        if f.kind == "fifo":
            return "reopened by path, queued bytes put back"
        if _other_end_closed(plan, f):
            return "a new pipe with the bytes that were queued, its other end closed"
        if _outside(plan, f):
            return f"rcore's own {STDIO[f.fd]}" if f.fd < 3 else "refused"
        return "a new pipe with the bytes that were queued"

    def check(self, f, plan):
        if f.kind == "pipe" and f.fd >= 3 and _outside(plan, f) \
                and not _other_end_closed(plan, f):
            raise Unsupported(f"fd {f.fd} ({f.path}) is a pipe whose other end is outside "
                              "the process")


STDIO = ("stdin", "stdout", "stderr")


UNSEEN = {"pid": 0, "comm": "?"}      # an open other end whose holder is not named (yet)


def find_other_ends(tables):
    """For each pipe with one end only among the descriptor tables `tables`
    ({pid: [FileDescriptor]} of the frozen processes of a dump): is its other
    end still open?  poll on a copy of the end answers (POLLHUP: a reader whose
    writers are all gone; POLLERR: a writer without readers) in microseconds,
    while frozen.  kind_state["other_end"]: [] when every process closed it, so
    that restart makes a pipe whose other end is closed instead of giving the
    process rcore's own stream; else [UNSEEN] until name_other_ends()."""
    ends, lonely = {}, {}
    for files in tables.values():
        for f in files:
            if f.kind == "pipe":
                ends.setdefault(f.inode, set()).add(f.flags & os.O_ACCMODE == os.O_WRONLY)
    for pid, files in tables.items():
        for f in files:
            if f.kind == "pipe":
                f.kind_state.pop("other_end", None)
                if len(ends[f.inode]) == 1:
                    lonely.setdefault(f.inode, []).append((pid, f))
    for entries in lonely.values():
        pid, first = entries[0]
        with copy_of(pid, first.fd) as fd:
            held = pipes.other_end_open(fd, first.flags & os.O_ACCMODE == os.O_WRONLY)
        for _, f in entries:
            f.kind_state["other_end"] = [UNSEEN] if held else []


def name_other_ends(tables):
    """Who holds the open other ends find_other_ends() found, for the warnings
    ([{pid, comm}], a few; pid 0: a process rcore cannot see, in another PID
    namespace).  It walks every process's descriptors, so a dump calls it once
    the processes run again: the holders are named as they are then."""
    wanted = {f.inode: [] for files in tables.values() for f in files
              if f.kind == "pipe" and f.kind_state.get("other_end") == [UNSEEN]}
    for files in tables.values():
        for f in files:
            if f.inode in wanted and f.kind == "pipe":
                wanted[f.inode].append(f)
    if not wanted:
        return
    # A dump's fork copies hold the process's descriptors too: never the program's.
    holders = pipes.holders({f"pipe:[{ino}]" for ino in wanted}, set(tables),
                            arch.host().COPY_NAME.decode())
    for ino, entries in wanted.items():
        found = holders.get(f"pipe:[{ino}]", [])[:4] or [UNSEEN]
        for f in entries:
            f.kind_state["other_end"] = found


def _other_end_closed(plan, f):
    return f.kind == "pipe" and f.kind_state.get("other_end") == [] and _outside(plan, f)


def _outside(plan, f):
    """Whether pipe f has only this end in the process."""
    ends = _ends(plan)[f.inode]
    return not (ends["r"] and ends["w"])


def _ends(plan):
    """pipe inode -> {"r": [entries], "w": [entries]}, computed once per plan."""
    ends = plan.kind_data.get("pipe ends")
    if ends is None:
        ends = plan.kind_data["pipe ends"] = {}
        for f in plan.all_files:
            if f.kind == "pipe":
                ends.setdefault(f.inode, {"r": [], "w": []})[
                    "w" if f.flags & os.O_ACCMODE == os.O_WRONLY else "r"].append(f)
    return ends


def _open_pipe(plan, f):
    ends = _ends(plan)[f.inode]
    closed = _other_end_closed(plan, f)
    if not (ends["r"] and ends["w"]) and not closed:
        # A standard stream piped to or from another program, which is not part
        # of the checkpoint (check() refuses the others): the restarted process
        # uses rcore's own.
        try:
            os.fstat(f.fd)
            return f.fd
        except OSError:
            raise Unsupported(f"fd {f.fd} ({f.path}) is a pipe to another program, and rcore "
                              f"has no {STDIO[f.fd]} to give it") from None
    built = plan.kind_data.setdefault("pipes", {})
    if f.inode not in built:
        built[f.inode] = _new_pipe(plan, f, ends, closed)
    r, w = built[f.inode]
    end = w if f.flags & os.O_ACCMODE == os.O_WRONLY else r
    if f.flags & os.O_NONBLOCK and not closed:
        # Status flags belong to the open file description, which dup()
        # shares: open the pipe end again for a description of its own.
        access = os.O_WRONLY if end == w else os.O_RDONLY
        end = plan.own(os.open(f"/proc/self/fd/{end}", access | os.O_NONBLOCK | os.O_CLOEXEC))
    return end


def _new_pipe(plan, f, ends, closed):
    """(read end, write end) of a new pipe holding the bytes queued at the
    checkpoint.  closed: every other end was closed then, so the end no process
    holds is closed here too (None): a reader gets the bytes, then end of file;
    a writer, EPIPE."""
    both = ends["r"] + ends["w"]
    lost = next((e.kind_state["queued_error"] for e in both if "queued_error" in e.kind_state),
                None)
    if lost:
        raise Unsupported(f"fd {f.fd} ({f.path}): the bytes queued in the pipe could "
                          f"not be read at the checkpoint ({lost})")
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pipes.fill_pipe(w, next((bytes.fromhex(e.queued) for e in both if e.queued), b""),
                        max((e.pipe_size for e in both), default=0))
    except BaseException:
        os.close(r)
        os.close(w)
        raise
    if closed:
        if ends["w"]:
            os.close(r)
            return None, plan.own(w)
        os.close(w)
        return plan.own(r), None
    return plan.own(r), plan.own(w)


def _open_fifo(plan, f):
    if f.deleted:
        # One ghost FIFO for every description of it (ghost.py).
        path, _ = ghost.make(plan, f.path, (f.dev, f.inode), lambda p: os.mkfifo(p, 0o600),
                             f.kind_state)
        f = replace(f, path=path)
    try:
        if not stat.S_ISFIFO(os.stat(f.path).st_mode):
            raise Incompatible(f"fd {f.fd}: {f.path} is no longer a FIFO")
        # An end opened for both directions keeps the open of the other end from
        # blocking and holds the queued bytes until the process has its ends.
        keeper = plan.keep(os.open(f.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC))
    except FileNotFoundError:
        raise Incompatible(f"fd {f.fd}: the FIFO {f.path} no longer exists") from None
    if f.queued and pipes.queued_bytes(keeper) == 0:
        pipes.fill_pipe(keeper, bytes.fromhex(f.queued), f.pipe_size)
    fd = plan.own(os.open(f.path, (f.flags & STATUS_FLAGS) | os.O_NONBLOCK | os.O_CLOEXEC))
    if not f.flags & os.O_NONBLOCK:
        os.set_blocking(fd, True)
    return fd


KIND = Pipe()
