"""Reading /proc/PID.  Files are read as bytes; a process can vanish between two
reads, which surfaces as NoSuchProcess.  The /proc root is a parameter so that
tests can point it elsewhere."""

import functools
import os
import stat as stat_mod

from ..errors import AccessDenied, NoSuchProcess
from ..record import record
from ..state import Mapping

PROC = "/proc"


def _wrap(func):
    """Map OS errors to rcore's process errors, naming the pid."""
    @functools.wraps(func)
    def wrapper(pid, *args, **kwargs):
        try:
            return func(pid, *args, **kwargs)
        except FileNotFoundError as err:
            raise NoSuchProcess(pid) from err
        except ProcessLookupError as err:
            raise NoSuchProcess(pid) from err
        except PermissionError as err:
            raise AccessDenied(pid, f"not permitted to read /proc/{pid}") from err
    return wrapper


def path(pid, *parts, proc=PROC):
    # joined by hand: os.path.join costs more, a few per thread of a dump
    return "/".join((proc, str(pid)) + parts)


def _read(pid, name, proc=PROC):
    return read_at(None, path(pid, name, proc=proc))


def read_at(dir_fd, name):
    """The bytes of file `name` (relative to the open directory dir_fd, if not
    None).  os.open and os.read: a dump reads a few small files per thread, and
    a buffered file object costs several times more to set up than they take;
    a directory descriptor saves resolving /proc/PID/task again for each."""
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        chunks = []
        while True:
            data = os.read(fd, 65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)
    finally:
        os.close(fd)


def parse_maps_line(line):
    """One line of /proc/PID/maps as a Mapping (VmFlags come from smaps)."""
    parts = line.split(None, 5)
    lo, hi = parts[0].split(b"-")
    name = parts[5].rstrip(b"\n").decode("utf-8", "surrogateescape") if len(parts) > 5 else ""
    deleted = name.endswith(" (deleted)")
    if deleted:
        name = name[: -len(" (deleted)")]
    return Mapping(int(lo, 16), int(hi, 16), parts[1].decode(), int(parts[2], 16),
                   parts[3].decode(), int(parts[4]), name, deleted)


@_wrap
def read_maps(pid, proc=PROC):
    return [parse_maps_line(line) for line in _read(pid, "maps", proc).splitlines() if line]


@_wrap
def find_mapping(pid, name, proc=PROC):
    """The first mapping named `name` ("[vdso]"), None if there is none; without
    parsing every line of a long maps file."""
    data = _read(pid, "maps", proc)
    key = b" " + name.encode() + b"\n"
    at = data.find(key)
    while at >= 0:
        m = parse_maps_line(data[data.rfind(b"\n", 0, at) + 1: at + len(key)])
        if m.path == name:              # not a file whose name merely ends so
            return m
        at = data.find(key, at + 1)
    return None


@_wrap
def read_smaps(pid, proc=PROC):
    """maps entries with their VmFlags and Anonymous bytes (smaps walks page
    tables: read it once)."""
    return parse_smaps(_read(pid, "smaps", proc))


def parse_smaps(data, raw=None):
    """Each entry of smaps is its maps line, "Key: value" lines, and "VmFlags:"
    last.  Cut at the VmFlags lines and look up the few fields needed, rather than
    going through every line: a process with 9000 mappings has 225 000 of them.
    (A newline in a path is shown escaped, so a path cannot fake a line.)
    raw: a list that gets (maps line, VmFlags text, the entry's text) of each
    entry, as bytes."""
    entries = []
    for line, flags, body in smaps_entries(data):
        if raw is not None:
            raw.append((line, flags, body))
        m = parse_maps_line(line)
        m.vmflags = [f.decode() for f in flags.split()]
        m.anonymous = smaps_anonymous(body)
        entries.append(m)
    return entries


def smaps_entries(data):
    """(maps line, VmFlags text, the entry's text) of each entry of smaps text,
    without going through its lines."""
    parts = data.split(b"\nVmFlags:")
    body = parts[0]
    for part in parts[1:]:
        flags, _, following = part.partition(b"\n")
        yield body.partition(b"\n")[0], flags, body
        body = following


def smaps_anonymous(body):
    """Anonymous + Swap bytes of one smaps entry's text."""
    return _smaps_kib(body, b"\nAnonymous:") + _smaps_kib(body, b"\nSwap:")


def _smaps_kib(body, key):
    at = body.find(key)
    if at < 0:
        return 0
    return int(body[at + len(key): body.index(b"kB", at)]) * 1024


@record
class Stat:
    """Fields of /proc/PID/stat that rcore uses (proc(5) numbering in comments)."""
    pid: int
    comm: str
    state: str
    ppid: int
    pgrp: int
    session: int
    utime: int
    stime: int
    cutime: int
    cstime: int
    nice: int
    num_threads: int
    start_code: int     # 26
    end_code: int       # 27
    start_stack: int    # 28
    start_data: int     # 45
    end_data: int       # 46
    start_brk: int      # 47
    arg_start: int      # 48
    arg_end: int        # 49
    env_start: int      # 50
    env_end: int        # 51
    tty_nr: int = 0     # 7: the controlling terminal's device number (0: none)
    tpgid: int = -1     # 8: that terminal's foreground process group
    start_time: int = 0  # 22: clock ticks after boot; with the boot ID, tells a process
                         # from a later one that got its PID
    exit_signal: int = 0    # 38: sent to the parent at exit (0: none, as rcore's copy)
    exit_code: int = 0      # 52: a zombie's wait status, as waitpid reports it


def parse_stat(data):
    # The command name may hold spaces and parentheses: split at the last ')'.
    lpar, rpar = data.index(b"("), data.rindex(b")")
    comm = data[lpar + 1: rpar].decode("utf-8", "surrogateescape")
    f = data[rpar + 2:].split()
    n = lambda i: int(f[i - 3])   # proc(5) field i; f[0] is field 3
    return Stat(int(data[:lpar]), comm, f[0].decode(), n(4), n(5), n(6), n(14), n(15),
                n(16), n(17), n(19), n(20), n(26), n(27), n(28), n(45), n(46), n(47),
                n(48), n(49), n(50), n(51), n(7), n(8), n(22), n(38), n(52))


@_wrap
def read_stat(pid, proc=PROC, tid=None):
    name = f"task/{tid}/stat" if tid else "stat"
    return parse_stat(_read(pid, name, proc))


def parse_status(data):
    out = {}
    for line in data.decode("utf-8", "surrogateescape").splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def read_forks(proc=PROC):
    """How many tasks (processes and threads) the kernel has created since boot:
    /proc/stat's `processes` line, which every clone counts, whatever namespace
    or set_tid (the ns_last_pid of /proc/sys/kernel misses clones given their PID)."""
    data = read_at(None, f"{proc}/stat")
    at = data.index(b"\nprocesses ") + 11
    return int(data[at:data.index(b"\n", at)])


def read_boot_id(proc=PROC):
    """This boot's random ID (a UUID string): start times count from the boot."""
    with open(os.path.join(proc, "sys/kernel/random/boot_id")) as f:
        return f.read().strip()


@_wrap
def read_status(pid, proc=PROC, tid=None):
    return parse_status(_read(pid, f"task/{tid}/status" if tid else "status", proc))


@_wrap
def read_bytes(pid, name, proc=PROC):
    return _read(pid, name, proc)


@_wrap
def read_link(pid, name, proc=PROC):
    return os.readlink(path(pid, name, proc=proc))


@_wrap
def read_comm(pid, tid=None, proc=PROC):
    name = f"task/{tid}/comm" if tid else "comm"
    return _read(pid, name, proc).rstrip(b"\n").decode("utf-8", "surrogateescape")


def parse_dev(text):
    """st_dev of the "fe:01" maps shows (major:minor in hex)."""
    major, minor = text.split(":")
    return os.makedev(int(major, 16), int(minor, 16))


@_wrap
def stat_exe(pid, proc=PROC):
    return os.stat(path(pid, "exe", proc=proc))


@record
class FdInfo:
    """One descriptor of a process: /proc/PID/fd/N, its fdinfo and the stat of its file."""
    fd: int
    target: str         # readlink of /proc/PID/fd/N
    pos: int
    flags: int          # octal in fdinfo; includes O_CLOEXEC
    mnt_id: int
    ino: int
    st_mode: int        # of the open file (through /proc/PID/fd/N)
    st_dev: int
    st_rdev: int
    st_size: int
    st_mtime_ns: int
    st_ctime_ns: int
    text: bytes = b""   # the whole fdinfo: kinds read their own lines from it


@_wrap
def read_fds(pid, proc=PROC):
    fds = []
    base = path(pid, "fd", proc=proc)
    for name in sorted(os.listdir(base), key=int):
        fd = int(name)
        try:
            target = os.readlink(os.path.join(base, name))
            text = _read(pid, f"fdinfo/{fd}", proc)
            info = parse_status(text)
            st = os.stat(os.path.join(base, name))
        except FileNotFoundError:
            continue          # closed meanwhile
        fds.append(FdInfo(fd, target, int(info.get("pos", "0")), int(info.get("flags", "0"), 8),
                          int(info.get("mnt_id", "0")), int(info.get("ino", "0")),
                          st.st_mode, st.st_dev, st.st_rdev, st.st_size, st.st_mtime_ns,
                          st.st_ctime_ns, text))
    return fds


def fd_kind(info):
    """file, dir, pipe, fifo, chr, blk, socket or anon (anon_inode: eventfd, epoll...)."""
    if info.target.startswith("pipe:"):
        return "pipe"
    if info.target.startswith("socket:"):
        return "socket"
    if info.target.startswith("anon_inode:"):
        return "anon"
    mode = info.st_mode
    if stat_mod.S_ISDIR(mode):
        return "dir"
    if stat_mod.S_ISFIFO(mode):
        return "fifo"
    if stat_mod.S_ISCHR(mode):
        return "chr"
    if stat_mod.S_ISBLK(mode):
        return "blk"
    if info.target.startswith("/memfd:"):
        return "memfd"
    return "file"


# RLIMIT_* numbers (include/uapi/asm-generic/resource.h); Python's resource module
# lacks some (RLIMIT_LOCKS).
RLIMIT_NAMES = dict(enumerate((
    "cpu", "fsize", "data", "stack", "core", "rss", "nproc", "nofile", "memlock", "as",
    "locks", "sigpending", "msgqueue", "nice", "rtprio", "rttime")))

# Row names of /proc/PID/limits (fs/proc/base.c lnames) -> RLIMIT_* names.
_LIMIT_ROWS = {
    "Max cpu time": "cpu", "Max file size": "fsize", "Max data size": "data",
    "Max stack size": "stack", "Max core file size": "core", "Max resident set": "rss",
    "Max processes": "nproc", "Max open files": "nofile", "Max locked memory": "memlock",
    "Max address space": "as", "Max file locks": "locks", "Max pending signals": "sigpending",
    "Max msgqueue size": "msgqueue", "Max nice priority": "nice",
    "Max realtime priority": "rtprio", "Max realtime timeout": "rttime",
}


def parse_limits(data):
    """/proc/PID/limits as {name: [soft, hard]}, -1 for unlimited (as prlimit)."""
    out = {}
    for line in data.decode().splitlines()[1:]:
        name = line[:26].strip()
        if name in _LIMIT_ROWS:
            soft, hard = line[26:].split()[:2]
            out[_LIMIT_ROWS[name]] = [-1 if v == "unlimited" else int(v) for v in (soft, hard)]
    return out


@_wrap
def read_rlimits(pid, proc=PROC):
    """Read from /proc rather than with prlimit(2), which needs CAP_SYS_RESOURCE
    over a process of another user even as root."""
    return parse_limits(_read(pid, "limits", proc))


PM_PRESENT = 1 << 63
PM_SWAP = 1 << 62
PM_FILE = 1 << 61


def open_pagemap(pid, proc=PROC):
    try:
        return os.open(path(pid, "pagemap", proc=proc), os.O_RDONLY)
    except FileNotFoundError as err:
        raise NoSuchProcess(pid) from err


def process_identity(pid=None):
    """(pid, start time): names a process for as long as it lives, unlike a PID
    alone, which the kernel reuses.  Default: this process."""
    pid = pid or os.getpid()
    return pid, read_stat(pid).start_time


def identity_alive(pid, starttime):
    try:
        return read_stat(pid).start_time == starttime
    except NoSuchProcess:
        return False
