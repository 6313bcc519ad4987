"""The process-state model: what dump captures, the core writer serialises, the
core reader rebuilds, and restore/restart apply.  Memory contents are not held
here: they come from a MemorySource (a live process or a core file).

Every class converts to and from plain dicts (to_dict/from_dict) for rcore's notes;
fields added later must get defaults so that older cores still load."""

from . import arch
from .record import asdict, field, fields, record


def _from_dict(cls, data):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


class _Record:
    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        return _from_dict(cls, data)


@record
class FileIdentity(_Record):
    """What identifies a file a checkpoint names (its executable, a mapped file),
    to refuse it at restore/restart once it is another file or was rewritten
    (identity.py compares it).  ctime: no user can set it back (utime sets mtime
    only), so an in-place rewrite that keeps size and mtime still shows.  Cores
    written before ctime_ns and build_id were recorded load with 0 and ""."""
    path: str
    dev: int = 0
    inode: int = 0
    size: int = 0
    mtime_ns: int = 0
    build_id: str = ""          # hex GNU build-id of an ELF file ("" = none)
    ctime_ns: int = 0


@record
class ExeIdentity(FileIdentity):
    """The executable's identity, to refuse a checkpoint of another program."""


@record
class Mapping(_Record):
    """One memory mapping, as /proc/PID/maps and smaps show it."""
    start: int
    end: int
    perms: str                  # as in /proc/PID/maps: "r-xp"
    offset: int = 0             # file offset in bytes
    dev: str = "00:00"          # as in maps ("fe:00")
    inode: int = 0
    path: str = ""              # file path, "[heap]", "[stack]", "[vdso]", or ""
    deleted: bool = False       # the file was unlinked
    vmflags: list = field(default_factory=list)   # smaps VmFlags: "gd", "nh", "dd"...
    anonymous: int = 0          # bytes of private anonymous pages (smaps Anonymous + Swap)
    stored: str = "none"        # what the core holds: "all", "dirty", "header", "none"

    @property
    def size(self):
        return self.end - self.start

    @property
    def shared(self):
        return self.perms[3] == "s"

    @property
    def file_backed(self):
        return self.inode != 0 and not self.path.startswith("[")

    @property
    def growsdown(self):
        return "gd" in self.vmflags

    @property
    def special(self):
        return self.path.startswith("[") and self.path not in ("[heap]", "[stack]")


@record
class MmFields(_Record):
    """mm_struct fields that PR_SET_MM_MAP sets (include/uapi/linux/prctl.h)."""
    start_code: int = 0
    end_code: int = 0
    start_data: int = 0
    end_data: int = 0
    start_brk: int = 0
    brk: int = 0
    start_stack: int = 0
    arg_start: int = 0
    arg_end: int = 0
    env_start: int = 0
    env_end: int = 0


@record
class SigAction(_Record):
    """struct kernel_sigaction as rt_sigaction(2) returns it."""
    signo: int
    handler: int = 0            # 0 = SIG_DFL, 1 = SIG_IGN
    flags: int = 0
    restorer: int = 0
    mask: int = 0


@record
class FileDescriptor(_Record):
    """One open descriptor of the process."""
    fd: int
    kind: str                   # file, dir, pipe, fifo, chr, blk, socket, memfd, eventfd,
                                # timerfd, signalfd, epoll, inotify, pidfd, anon (others)
    path: str                   # readlink of /proc/PID/fd/N ("pipe:[123]" for pipes)
    flags: int = 0              # open flags (O_ACCMODE, O_APPEND, O_NONBLOCK...)
    pos: int = 0
    cloexec: bool = False
    description: int = 0        # lowest fd sharing this open file description
    inode: int = 0
    dev: int = 0
    rdev: int = 0
    size: int = 0
    mtime_ns: int = 0
    deleted: bool = False
    ctime_ns: int = 0           # 0 in cores written before it was recorded
    # Added for restart (older cores load with the defaults):
    queued: str = ""            # pipe/FIFO: bytes queued in it at the checkpoint (hex),
                                # on the lowest fd of each pipe
    pipe_size: int = 0          # pipe/FIFO capacity (F_GETPIPE_SZ); 0 = not recorded
    contents: str = ""          # unlinked regular file: its whole contents (hex)
    contents_stored: bool = False   # contents holds the file (it may be empty)
    kind_state: dict = field(default_factory=dict)  # what its kind captured (fds/KIND.py);
                                # {"error": why} when that failed
    locks: list = field(default_factory=list)   # file locks and leases held through it,
                                # on the lowest fd of its description (locks.py)
    shared: list = None         # [pid, fd]: the same open file description as that
                                # entry of an earlier process of the tree (tree.py)


@record
class ThreadState(_Record):
    """One thread: registers, signal mask and pending signals, and the per-thread kernel state."""
    tid: int
    regs: dict = field(default_factory=dict)    # general registers by name
    xstate: bytes = field(default=b"", repr=False)   # full XSAVE area (NT_X86_XSTATE)
    sigmask: int = 0
    pending: list = field(default_factory=list)  # siginfo (128 bytes) of queued signals
    sigaltstack: dict = field(default_factory=dict)  # ss_sp, ss_flags, ss_size
    clear_child_tid: int = 0
    robust_list: list = field(default_factory=lambda: [0, 0])  # head, len
    rseq: dict = field(default_factory=dict)    # ptr, size, signature ({} = none)
    comm: str = ""

    def user_regs(self, arch_mod=None):
        return (arch_mod or arch.host()).UserRegs.from_dict(self.regs)

    # xstate and regs travel in the standard notes, not in rcore's thread note.
    def to_dict(self):
        d = asdict(self)
        del d["xstate"], d["regs"]
        d["pending"] = [p.hex() for p in self.pending]
        return d

    @classmethod
    def from_dict(cls, data):
        t = _from_dict(cls, data)
        t.pending = [bytes.fromhex(p) for p in t.pending]
        return t


@record
class ProcessState:
    """The whole checkpointed state of one process (memory contents aside)."""
    pid: int
    arch: str = "x86_64"
    ppid: int = 0
    pgrp: int = 0
    sid: int = 0
    state: str = "R"
    comm: str = ""
    cmdline: list = field(default_factory=list)
    exe: ExeIdentity = None
    mm: MmFields = field(default_factory=MmFields)
    threads: list = field(default_factory=list)          # ThreadState, interrupted first
    mappings: list = field(default_factory=list)         # Mapping, by address
    mapped_files: dict = field(default_factory=dict)     # path -> FileIdentity
    files: list = field(default_factory=list)            # FileDescriptor by number
    auxv: bytes = b""
    cwd: str = "/"
    root: str = "/"
    umask: int = 0o022
    rlimits: dict = field(default_factory=dict)          # name -> [soft, hard]
    sigactions: list = field(default_factory=list)       # SigAction for 1..64
    shared_pending: list = field(default_factory=list)   # siginfo bytes
    itimers: dict = field(default_factory=dict)          # ITIMERS name -> [interval, value] in us
    personality: int = 0
    creds: dict = field(default_factory=dict)            # uid/gid/groups lists
    dumpable: int = 1
    no_new_privs: int = 0
    nice: int = 0
    times: dict = field(default_factory=dict)            # utime, stime, cutime, cstime (ticks)
    clocks: dict = field(default_factory=dict)           # monotonic, boottime (ns) at the freeze
    timers: list = field(default_factory=list)           # POSIX timers (timers.py)
    settings: dict = field(default_factory=dict)         # prctls, oom_score_adj, guards (settings.py)
    children: list = field(default_factory=list)         # PIDs of its children: not in the checkpoint
    sysvipc: dict = field(default_factory=dict)          # SysV objects (sysvipc.py): RCORE_SYSVIPC
    start_time: int = 0         # /proc/PID/stat field 22 (ticks after boot); 0: not recorded
    boot_id: str = ""           # the boot it counts from; "": not recorded
    extra: dict = field(default_factory=dict)            # forward-compatible leftovers

    def thread(self, tid):
        for t in self.threads:
            if t.tid == tid:
                return t
        raise KeyError(tid)

    def mapping_at(self, addr):
        for m in self.mappings:
            if m.start <= addr < m.end:
                return m
        return None


# ProcessState.itimers' keys: ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF (0, 1, 2).
ITIMERS = ("real", "virtual", "prof")


def is_kernel_mapping(m):
    """[vdso], [vvar], [vsyscall], [uprobes]...: not user memory."""
    return m.path.startswith("[") and m.path not in ("[heap]", "[stack]") \
        and not m.path.startswith("[anon")


def is_sysv(m):
    """A SysV segment shows as "/SYSV" and its key in 8 hex digits, deleted,
    with its id as inode: 0 for the first segment, so that Mapping.file_backed
    does not tell it."""
    return m.shared and m.deleted and len(m.path) == 13 and m.path.startswith("/SYSV") \
        and all(c in "0123456789abcdef" for c in m.path[5:])
