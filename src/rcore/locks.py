"""File locks and leases held through a process's descriptors.

    dump     the `lock:` lines of /proc/PID/fdinfo/N (the format of /proc/locks):
             flock (FLOCK) and OFD locks (OFDLCK) belong to the open file
             description; POSIX record locks (POSIX) to the process; leases
             (LEASE) to the description, their owner set by whoever took them.
             The kernel lists a lock on the descriptors of the file it was
             taken through, so the lowest fd of each description holds them.
    restart  taken again inside the new process, once every descriptor is in
             place and before it runs (fds.finish): flock(N, LOCK_SH|LOCK_EX
             |LOCK_NB), fcntl(N, F_OFD_SETLK / F_SETLK, range), fcntl(N,
             F_SETLEASE): a POSIX lock must be the process's own, and a lease
             taken there makes the process the one its break signals.  A lock
             someone else took meanwhile refuses the restart, naming the file.

Not carried: the signal of a lease set with F_SETSIG (a break sends SIGIO), a
lease being broken at the checkpoint (said at dump and restart)."""

import os
import struct

from .errors import Incompatible

LOCK_SH, LOCK_EX, LOCK_NB = 1, 2, 4
F_RDLCK, F_WRLCK = 0, 1
F_SETLK, F_SETLEASE, F_OFD_SETLK = 6, 1024, 37
SEEK_SET = 0
FLOCK = struct.Struct("<hh4xqqi4x")      # struct flock: type, whence, start, len, pid
TYPES = ("FLOCK", "POSIX", "OFDLCK", "LEASE")
MODES = {"READ": F_RDLCK, "WRITE": F_WRLCK}

assert FLOCK.size == 32


def parse_lock(line):
    """One `lock:` value: "1: POSIX  ADVISORY  WRITE 123 08:01:456 0 EOF" ->
    {type, mode, start, end (-1: to the end of the file), breaking}, or None
    for kinds rcore does not take again (DELEG, ACCESS)."""
    words = line.split(":", 1)[1].split()
    kind = words[0]
    if kind not in TYPES:
        return None
    state = words[1]                        # ADVISORY; for leases ACTIVE, BREAKING...
    mode = next(w for w in words[2:] if w in ("READ", "WRITE", "UNLCK"))
    start, end = words[-2], words[-1]
    return {"type": kind, "mode": mode, "start": int(start),
            "end": -1 if end == "EOF" else int(end), "breaking": state == "BREAKING"}


def capture(f, fdinfo):
    """f.locks from fdinfo's raw lines."""
    locks = []
    for line in fdinfo.get("lines", ()):
        if line.startswith("lock:"):
            lock = parse_lock(line[len("lock:"):].strip())
            if lock and lock["mode"] != "UNLCK":
                locks.append(lock)
    f.locks = locks


def check(f):
    """The core is untrusted: raise ValueError for a malformed entry."""
    for lock in f.locks:
        if lock.get("type") not in TYPES or lock.get("mode") not in MODES \
                or not isinstance(lock.get("start"), int) or not isinstance(lock.get("end"), int) \
                or lock["start"] < 0 or lock["end"] < -1:
            raise ValueError(f"fd {f.fd}: bad lock {lock!r:.100}")


def warnings(f):
    out = []
    for lock in f.locks:
        if lock["type"] == "LEASE":
            out.append(f"fd {f.fd}: its lease comes back signalling SIGIO (F_SETSIG is not "
                       "carried)" + ("; it was being broken" if lock["breaking"] else ""))
    return out


def take(inj, ws, f, fd=None):
    """Inside the new process: f's locks again, on descriptor fd (default f.fd)."""
    fd = f.fd if fd is None else fd
    for lock in f.locks:
        kind, mode = lock["type"], MODES[lock["mode"]]
        if kind == "FLOCK":
            res = inj.call("flock", fd, (LOCK_EX if mode == F_WRLCK else LOCK_SH) | LOCK_NB,
                           check=False)
        elif kind == "LEASE":
            res = inj.call("fcntl", fd, F_SETLEASE, mode, check=False)
        else:
            length = 0 if lock["end"] == -1 else lock["end"] - lock["start"] + 1
            addr = ws.put(FLOCK.pack(mode, SEEK_SET, lock["start"], length, 0))
            res = inj.call("fcntl", fd, F_OFD_SETLK if kind == "OFDLCK" else F_SETLK, addr,
                           check=False)
        if res < 0:
            raise Incompatible(f"fd {f.fd}: cannot take its {describe(lock)} on {f.path} "
                               f"again ({os.strerror(-res)}): another process holds a lock "
                               "on it now")


def describe(lock):
    kind = {"FLOCK": "flock", "POSIX": "POSIX lock", "OFDLCK": "OFD lock",
            "LEASE": "lease"}[lock["type"]]
    what = f"{lock['mode'].lower()} {kind}"
    if lock["type"] in ("POSIX", "OFDLCK"):
        end = "EOF" if lock["end"] == -1 else lock["end"]
        what += f" {lock['start']}-{end}"
    return what
