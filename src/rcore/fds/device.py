"""Character and block devices, terminals among them."""

import os

from ..errors import Unsupported
from .kind import Rebuilt, open_path

TTY_MAJORS = {4, 5, 136, 137, 138, 139, 140, 141, 142, 143}   # tty, /dev/tty+console, pts


class Device(Rebuilt):
    """Captured: path and device number; a terminal's settings (tty.py).
    Restart: reopened by path; a terminal becomes the terminal rcore runs on
    (its own fd of that number if it is a terminal, else its stdin/stdout/
    stderr), with the settings put back (tty.py).  Restore: kept, or reopened
    by path."""
    reopenable = True

    def seekable(self, f):
        return f.kind == "blk"

    def capture(self, ctx, f, fdinfo):
        if is_terminal(f):
            _tty().capture(ctx, f)

    def decode(self, f):
        if "tty" in f.kind_state:
            _tty().decode(f.kind_state["tty"])

    def open(self, plan, f):
        if is_terminal(f):
            fd = _terminal(f)
            _tty().put_back(plan, f, fd)
            return fd
        return open_path(plan, f, f.flags)

    def describe(self, f):
        if "tty" in f.kind_state:
            return _tty().describe(f.kind_state["tty"])
        return "terminal" if is_terminal(f) else f"device {os.major(f.rdev)}:{os.minor(f.rdev)}"

    def action(self, f, plan):
        if "tty" in f.kind_state:
            return "rcore's terminal, its settings put back, then SIGWINCH"
        return "rcore's terminal" if is_terminal(f) else "reopened by path"


def _tty():
    # terminals only: /dev/null and other devices need no termios (start-up)
    from . import tty
    return tty


def is_terminal(f):
    return f.kind == "chr" and os.major(f.rdev) in TTY_MAJORS


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


KIND = Device()
