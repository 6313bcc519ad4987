"""Pipes: reading the bytes queued in a frozen process's pipe without taking
them out, and building a pipe that holds given bytes.

Peeking uses tee(2), which duplicates pipe data into another pipe without
consuming it.  rcore opens the target's pipe through /proc/PID/fd/N (for a pipe
or FIFO that opens the same pipe, as a FIFO open does), tees everything queued
into a pipe of its own made as large, and reads that.  Nothing is injected into
the target and its queue is never touched, so an error midway loses nothing
(the alternative, reading the queue from inside the target and writing it back,
would leave the pipe drained if rcore died in between)."""

import ctypes
import errno
import fcntl
import os
import select

from . import libc

SPLICE_F_NONBLOCK = 2
FIONREAD = 0x541B

_tee = libc._libc.tee
_tee.restype = ctypes.c_ssize_t
_tee.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]


def queued_bytes(fd):
    n = ctypes.c_int()
    fcntl.ioctl(fd, FIONREAD, n)
    return n.value


def peek_pipe(pid, fd):
    """(bytes queued, pipe capacity) of pipe or FIFO descriptor fd of process pid."""
    src = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        capacity = fcntl.fcntl(src, fcntl.F_GETPIPE_SZ)
        queued = queued_bytes(src)
        if not queued:
            return b"", capacity
        r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, max(capacity, queued))
            got = _tee(src, w, queued, SPLICE_F_NONBLOCK)
            if got < 0:
                err = ctypes.get_errno() or errno.EIO
                raise OSError(err, f"tee of fd {fd} in {pid}: {os.strerror(err)}")
            return _read_all(r, got), capacity
        finally:
            os.close(r)
            os.close(w)
    finally:
        os.close(src)


def _read_all(fd, n):
    out = bytearray()
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def fill_pipe(wfd, data, capacity=0):
    """Size pipe wfd to `capacity` (at least what data needs) and queue data in it."""
    want = max(capacity, len(data))
    if want and want != fcntl.fcntl(wfd, fcntl.F_GETPIPE_SZ):
        try:
            fcntl.fcntl(wfd, fcntl.F_SETPIPE_SZ, want)
        except PermissionError:
            pass    # above /proc/sys/fs/pipe-max-size for an unprivileged user
    view = memoryview(data)
    while view:
        view = view[os.write(wfd, view):]


def holders(targets, exclude, ignore_comm=None):
    """{"pipe:[INODE]": [{"pid", "comm"}]}: which processes, other than those in
    `exclude` and those named ignore_comm, hold a descriptor whose link is one
    of `targets`.  Reads every process's /proc/PID/fd: only called for pipes
    with one end in the dump."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in exclude:
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        hit = set()
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{name}/fd/{fd}")
            except OSError:
                continue
            if link in targets:
                hit.add(link)
        if hit:
            try:
                with open(f"/proc/{name}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                comm = "?"
            if comm == ignore_comm:
                continue
            for link in hit:
                found.setdefault(link, []).append({"pid": int(name), "comm": comm})
    return found


def other_end_open(fd, write_end):
    """Whether the pipe of end fd (rcore's pidfd_getfd copy of a process's end:
    the same open file description, so it adds no reader or writer) still has
    its other end open somewhere: poll gives POLLHUP to a reader whose writers
    are all gone, POLLERR to a writer whose readers are."""
    p = select.poll()
    p.register(fd, select.POLLOUT if write_end else select.POLLIN)
    events = dict(p.poll(0)).get(fd, 0)
    return not events & (select.POLLERR if write_end else select.POLLHUP)
