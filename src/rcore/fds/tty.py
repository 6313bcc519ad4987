"""Terminals: the settings a full-screen program put on its terminal.

A program in raw mode (vim, less, top) changed its terminal's termios and
relies on them; after a restart it runs on another terminal (the one rcore runs
on, fds/device.py), in cooked mode with a stale screen, unless they are put back.

    dump     on a copy of the target's descriptor (pidfd_getfd: the same open
             file, so /dev/tty means the target's terminal, not rcore's):
             tcgetattr, TIOCGWINSZ; from /proc/PID/stat, whether it is the
             process's controlling terminal and the process group in its
             foreground
    restart  before the process runs: the termios set on rcore's terminal
             (TCSANOW), the checkpointed window size only where that terminal
             has none (0x0: the real size belongs to the window it is shown in);
             after release, SIGWINCH to the process, so that it asks the size
             and repaints (in raw mode on a terminal of the checkpointed size,
             a size one row smaller for an instant instead: see apply())

Foreground and job control: the restarted process is in rcore's process group
(spawn.py), so when rcore runs in the foreground the process is in the
terminal's foreground group too, and a shell's job control acts on both:
Ctrl-Z stops both (the shell sees its job, rcore, stop), `fg` continues both
and gives the terminal back to the group.  rcore does not change its
terminal's foreground group.  When rcore runs in the background, it leaves the
terminal alone (setting it would stop rcore with SIGTTOU) and says so.
The program owns the settings afterwards: rcore does not put its own back when
it exits (a shell resets them if the program dies)."""

import fcntl
import os
import signal
import struct
import termios
import time

from ..errors import RcoreError
from ..linux import libc, procfs

WINSIZE = struct.Struct("HHHH")          # struct winsize: rows, cols, xpixel, ypixel
TERMIOS_KEYS = ("iflag", "oflag", "cflag", "lflag", "ispeed", "ospeed")


def capture(ctx, f):
    """f.kind_state["tty"] of a terminal descriptor of frozen process ctx.pid;
    nothing when it is not a terminal after all (tcgetattr fails: a pty master)
    or cannot be read: the restart then takes the terminal as it finds it."""
    try:
        fd = _their_fd(ctx.pid, f.fd)
    except OSError:
        return
    try:
        try:
            attrs = termios.tcgetattr(fd)
        except termios.error:
            return
        size = _winsize(fd)
        rdev = os.fstat(fd).st_rdev
    finally:
        os.close(fd)
    st = procfs.read_stat(ctx.pid)
    tty = dict(zip(TERMIOS_KEYS, attrs[:6]))
    tty["cc"] = [c if isinstance(c, int) else c[0] for c in attrs[6]]
    tty["winsize"] = size
    tty["controlling"] = st.tty_nr == rdev
    if tty["controlling"]:
        tty["foreground"] = st.tpgid == st.pgrp
    f.kind_state["tty"] = tty


def _their_fd(pid, fd):
    pidfd = libc.pidfd_open(pid)
    try:
        return libc.pidfd_getfd(pidfd, fd)
    finally:
        os.close(pidfd)


def decode(tty):
    for key in TERMIOS_KEYS:
        if not isinstance(tty[key], int) or tty[key] < 0:
            raise ValueError(f"tty {key} {tty[key]!r}")
    if not all(isinstance(c, int) and 0 <= c < 256 for c in tty["cc"]) \
            or len(tty["cc"]) != termios.NCCS:
        raise ValueError("tty cc")
    if len(tty["winsize"]) != 4 or not all(isinstance(n, int) and 0 <= n < 65536
                                           for n in tty["winsize"]):
        raise ValueError("tty winsize")


def put_back(plan, f, fd):
    """Restart: the terminal settings of f go on rcore's terminal fd, once for
    all the descriptors of that terminal (the lowest one's)."""
    tty = f.kind_state.get("tty")
    done = plan.kind_data.setdefault("tty", set())
    if not tty:
        return
    rdev = os.fstat(fd).st_rdev
    if rdev in done:
        return
    done.add(rdev)
    try:
        foreground = os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        foreground = False
    if not foreground:
        plan.warnings.append(f"fd {f.fd}: the terminal settings (raw mode, window size) are "
                             "not restored: rcore does not run in its terminal's foreground")
        return
    real = []

    def at_commit():
        try:
            real.extend(apply(fd, tty))
        except (termios.error, OSError) as err:
            plan.warnings.append(f"fd {f.fd}: the terminal settings could not be put back: "
                                 f"{err}")
    plan.at_commit.append(at_commit)
    plan.after_release.append(lambda pid: repaint(fd, pid, real))


def apply(fd, tty):
    """Just before the process runs: termios as checkpointed; the window size
    only where the terminal has none.  A program in raw mode on a terminal of
    the size it knows would not repaint on SIGWINCH (vim compares the size with
    its own and redraws only what it believes changed), so the terminal is then
    made one row smaller for now: the program sees a new size when it runs,
    clears and redraws everything, and repaint() gives the real size back.
    Returns that real size ([] when nothing is to give back)."""
    # tcsetattr takes every cc entry as a number as well as a one-byte string.
    termios.tcsetattr(fd, termios.TCSANOW, [tty[k] for k in TERMIOS_KEYS] + [list(tty["cc"])])
    size = _winsize(fd)
    if not size[0] and not size[1]:
        _set_winsize(fd, tty["winsize"])
    elif size[:2] == tty["winsize"][:2] and not tty["lflag"] & termios.ICANON and size[0] > 1:
        _set_winsize(fd, [size[0] - 1] + size[1:])
        return size
    return []


def repaint(fd, pid, real, settle=2.0):
    """Once the process runs: SIGWINCH, so that it asks the size and repaints.
    After a temporary size (apply), the real size comes back once the program
    has handled the first change (its SIGWINCH no longer pending and the
    program asleep again, at most `settle` seconds): setting it sends the
    second SIGWINCH."""
    if not real:
        os.kill(pid, signal.SIGWINCH)
        return
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline and not _settled(pid):
        time.sleep(0.01)
    _set_winsize(fd, real)


def _settled(pid):
    try:
        status = procfs.read_status(pid)
        state = procfs.read_stat(pid).state
    except RcoreError:
        return True
    winch = 1 << (signal.SIGWINCH - 1)
    pending = int(status.get("SigPnd", "0"), 16) | int(status.get("ShdPnd", "0"), 16)
    return not pending & winch and state in ("S", "T", "t", "Z")


def _winsize(fd):
    return list(WINSIZE.unpack(fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(WINSIZE.size))))


def _set_winsize(fd, size):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, WINSIZE.pack(*size))


def describe(tty):
    """rcore info: the mode and size in a few words."""
    mode = "cooked" if tty["lflag"] & termios.ICANON else "raw"
    echo = "echo" if tty["lflag"] & termios.ECHO else "no echo"
    rows, cols = tty["winsize"][:2]
    out = f"terminal, {mode}, {echo}, {cols}x{rows}"
    if tty.get("controlling"):
        out += ", in the foreground" if tty.get("foreground") else ", in the background"
    return out
