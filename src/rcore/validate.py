"""validate: the values of a checkpoint that restore and restart hand to the
kernel, checked before any process is touched.

A core file is untrusted input.  Its notes may parse well and still hold values
the kernel refuses (a robust list of length 999, a kernel segment selector, an
XSAVE image of another CPU) or that make the process fault as soon as it runs
(a signal handler outside its code).  Found midway, such a value leaves a
half-restored process that must be killed; found here, the core is refused with
one line and nothing has changed.

    check_checkpoint(core)     every check below that the core alone decides:
      check_layout             mappings page-aligned, inside user space, in
                               order without overlaps, valid perms, and the
                               memory the core says it stores is there
      check_mm                 brk and the other mm fields, as PR_SET_MM_MAP
                               checks them, the heap inside the layout
      check_threads            thread IDs, then per thread check_thread_state:
                               registers and XSAVE (arch), mask, robust list,
                               rseq, sigaltstack, clear_child_tid
      check_process_values     signal handlers, cwd, umask, descriptors
      check_restart_values     what only restart applies: rlimits, itimers,
                               personality, pending signals

Checks that need the live process (descriptor numbers under its RLIMIT_NOFILE,
the kernel mappings' sizes) are done by the caller's planning step (restore:
apply.plan_files, rebuild.check_rebuild).  What only the kernel can judge (a
dynamic XSAVE feature the process has no permission for, a file the process may
not open) is found when the call is made: a restore then kills the
half-restored process (README, restore)."""

import bisect
import os

from . import arch as arches
from .elf.notes import SIGINFO_SIZE
from .elf.rcore_notes import NAMES as NOTE_NAMES, NT_RCORE_FILES, NT_RCORE_MAPPINGS, \
    NT_RCORE_PROCESS, NT_RCORE_THREAD
from .errors import CoreFormatError
from .linux.libc import (MINSIGSTKSZ, NSIG, PATH_MAX, PID_MAX_LIMIT, RSEQ_MIN_SIZE, SA_FLAGS_KEPT, SIG_DFL, SIG_IGN, SS_AUTODISARM,
                         SS_DISABLE, SS_ONSTACK)
from .rebuild import is_file_mapping, writes_past_end_of_file
from .state import is_kernel_mapping

PROCESS, THREAD = NOTE_NAMES[NT_RCORE_PROCESS], NOTE_NAMES[NT_RCORE_THREAD]
MAPPINGS, FILES = NOTE_NAMES[NT_RCORE_MAPPINGS], NOTE_NAMES[NT_RCORE_FILES]
PRSTATUS, XSTATE = "NT_PRSTATUS", "NT_X86_XSTATE"

SIGKILL, SIGSTOP = 9, 19
STORED = ("all", "dirty", "header", "none", "incremental")
# Flags the kernel drops once a file is open (fs/open.c do_dentry_open): never
# in a live descriptor's flags, and a reopen with them would create or truncate.
O_DROPPED_AT_OPEN = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_TRUNC
U32, U64 = (1 << 32) - 1, (1 << 64) - 1


class InvalidValue(ValueError):
    """A checkpoint value the kernel would refuse: `note` names the note it is in."""

    def __init__(self, note, why):
        self.note = note
        super().__init__(why)


def check_checkpoint(core):
    """Raise CoreFormatError ("FILE: corrupt NOTE: why") unless every value that
    restore or restart would give the kernel is one it accepts.  For cores
    without rcore's notes (gdb, the kernel) only what restore applies from them
    is checked: registers and signal masks (their XSAVE images are tried, and
    a refusal only reported)."""
    try:
        _check(core)
    except InvalidValue as err:
        raise CoreFormatError(core.path, f"corrupt {err.note}: {err}") from None


def _check(core):
    proc, arch = core.state, core.arch
    layout = Layout(proc.mappings)
    full = core.has_rcore
    if full:
        check_layout(proc.mappings, core)
        check_mm(proc.mm, layout)
    check_threads(proc, layout, arch, full)
    if full:
        check_process_values(proc, layout)
        check_restart_values(proc)


# --- the address space ---------------------------------------------------------------

class Layout:
    """The checkpoint's mappings, to ask what memory an address is in."""

    def __init__(self, mappings):
        self.maps = sorted((m for m in mappings if _is_uint(m.start) and _is_uint(m.end)),
                           key=lambda m: m.start)
        self.starts = [m.start for m in self.maps]

    def holds(self, addr, size, perm):
        """Is all of [addr, addr+size) in mappings whose perms include `perm`
        ("r", "w" or "x")?"""
        end = addr + max(size, 1)
        i = bisect.bisect_right(self.starts, addr) - 1
        while addr < end:
            if i < 0 or i >= len(self.maps):
                return False
            m = self.maps[i]
            if not (m.start <= addr < m.end) or perm not in str(m.perms)[:3]:
                return False
            addr, i = m.end, i + 1
        return True

    def executable(self, addr):
        return self.holds(addr, 1, "x")


def check_layout(mappings, core):
    """rcore's mapping note: what rebuild.rebuild_address_space maps, unmaps
    around and fills."""
    page, top = core.arch.PAGE_SIZE, core.arch.task_size_max()
    prev = None
    for m in sorted(mappings, key=lambda m: m.start if _is_uint(m.start) else -1):
        where = f"mapping {_hex(m.start)}-{_hex(m.end)}"
        _uint(m.start, MAPPINGS, f"{where}: start")
        _uint(m.end, MAPPINGS, f"{where}: end")
        _uint(m.offset, MAPPINGS, f"{where}: offset")
        if m.start % page or m.end % page or m.offset % page:
            _bad(MAPPINGS, f"{where}: not page-aligned")
        if m.end <= m.start:
            _bad(MAPPINGS, f"{where}: ends before it starts")
        if m.end > top and (m.path != "[vsyscall]" or (m.start, m.end) != core.arch.VSYSCALL):
            _bad(MAPPINGS, f"{where}: beyond the end of user space ({top:#x})")
        if prev is not None and m.start < prev.end:
            _bad(MAPPINGS, f"{where} overlaps {prev.start:#x}-{prev.end:#x}")
        prev = m
        perms = m.perms
        if not (isinstance(perms, str) and len(perms) == 4 and perms[0] in "r-"
                and perms[1] in "w-" and perms[2] in "x-" and perms[3] in "ps"):
            _bad(MAPPINGS, f"{where}: permissions {perms!r} are not like 'rw-p'")
        if not isinstance(m.vmflags, list) or not all(isinstance(f, str) for f in m.vmflags):
            _bad(MAPPINGS, f"{where}: VmFlags are not a list of names")
        if m.stored not in STORED:
            _bad(MAPPINGS, f"{where}: stored {m.stored!r} is none of {', '.join(STORED)}")
        if not isinstance(m.path, str):
            _bad(MAPPINGS, f"{where}: the path is not a string")
        _uint(m.inode, MAPPINGS, f"{where}: inode")
        if is_file_mapping(m):
            # mapped again by path: a path whose identity the core records
            _path(m.path, MAPPINGS, f"{where}: path")
            ident = core.state.mapped_files.get(m.path)
            if not m.path.startswith("/") or ident is None:
                _bad(MAPPINGS, f"{where}: file {m.path!r} is not an absolute path whose "
                               "identity the core records")
            # (an identity without a device was not read: the size is unknown)
            if ident.dev and _is_uint(ident.size) \
                    and writes_past_end_of_file(core, m, ident.size):
                _bad(MAPPINGS, f"{where}: the core holds data for its pages past the end "
                               f"of {m.path} (offset {m.offset:#x}, {ident.size} bytes)")
        if m.stored != "all" and _always_stored(m):
            _bad(MAPPINGS, f"{where}: its memory is not in the core (stored "
                           f"{m.stored!r}), though rcore stores all such memory: restore "
                           "would leave the live bytes in place")
        if m.stored == "all" and not is_kernel_mapping(m):
            got = core.stored_range(m.start)
            if got is None or got[1] < m.size:
                _bad(MAPPINGS, f"{where}: its memory is missing from the core (truncated?)")


def _always_stored(m):
    # dump.plan_mapping stores every readable anonymous mapping and every mapping
    # of a deleted file (nothing else holds those bytes).
    return m.perms[0] == "r" and not is_kernel_mapping(m) \
        and not {"io", "pf"} & set(m.vmflags) and (not m.file_backed or m.deleted)


def check_mm(mm, layout):
    """The mm fields, as prctl(PR_SET_MM_MAP) checks them (kernel/sys.c
    validate_prctl_map_addr), and the heap [start_brk, brk) inside the layout."""
    low, top = _sysctl("vm/mmap_min_addr", 0), arches.host().task_size_max()
    names = ("start_code", "end_code", "start_data", "end_data", "start_brk", "brk",
             "start_stack", "arg_start", "arg_end", "env_start", "env_end")
    for name in names:
        value = getattr(mm, name)
        if not _is_uint(value) or not low <= value < top:
            _bad(PROCESS, f"mm {name} {_hex(value)} is outside user space")
    for lo, hi in (("start_data", "end_data"), ("start_brk", "brk"),
                   ("arg_start", "arg_end"), ("env_start", "env_end")):
        if getattr(mm, lo) > getattr(mm, hi):
            _bad(PROCESS, f"mm {lo} {getattr(mm, lo):#x} is above {hi} {getattr(mm, hi):#x}")
    if mm.brk > mm.start_brk and not layout.holds(mm.start_brk, mm.brk - mm.start_brk, "w"):
        _bad(PROCESS, f"the heap {mm.start_brk:#x}-{mm.brk:#x} (start_brk-brk) is not "
                      "writable memory of the checkpoint")


# --- threads -----------------------------------------------------------------------------

def check_threads(proc, layout, arch, full):
    """The thread set (IDs positive, unique, the leader first), then each thread."""
    threads = proc.threads
    if not threads:
        _bad(PRSTATUS, "no threads")
    most = _sysctl("kernel/threads-max", PID_MAX_LIMIT)
    if len(threads) > most:
        _bad(PRSTATUS, f"{len(threads)} threads, more than this kernel allows ({most})")
    seen = set()
    for ts in threads:
        if not _is_uint(ts.tid) or not 0 < ts.tid <= PID_MAX_LIMIT:
            _bad(PRSTATUS, f"thread ID {ts.tid!r} is not a valid ID")
        if ts.tid in seen:
            _bad(PRSTATUS, f"thread {ts.tid} appears twice")
        seen.add(ts.tid)
    if full and threads[0].tid != proc.pid:
        _bad(PRSTATUS, f"the first thread is {threads[0].tid}, not the leader {proc.pid}")
    for ts in threads:
        check_thread_state(ts, layout, arch, full)


def check_thread_state(ts, layout, arch=None, full=True):
    """One ThreadState: what apply.apply_thread_state gives the kernel.  Without
    `full` (gdb's and the kernel's cores), registers and mask only."""
    arch = arch or arches.host()
    who = f"thread {ts.tid}"
    try:
        arch.check_user_regs(ts.regs, layout.executable)
    except ValueError as err:
        _bad(PRSTATUS, f"{who}: {err}")
    # A thread in a system call resumes at the call again (apply.resume_regs).
    pc = arch.restart_interrupted_syscall(ts.user_regs(arch), True).pc
    if not layout.executable(pc):
        _bad(PRSTATUS, f"{who}: it would resume at {pc:#x} (rerunning its system call), "
                       "not in executable memory of the checkpoint")
    _uint(ts.sigmask, PRSTATUS, f"{who}: signal mask", U64)
    if not full:
        return
    if not isinstance(ts.xstate, bytes) or not ts.xstate:
        _bad(XSTATE, f"{who}: no XSAVE image")
    try:
        arch.check_xstate(ts.xstate)
    except ValueError as err:
        _bad(XSTATE, f"{who}: {err}")
    _check_robust_list(ts, layout, who, arch)
    _check_rseq(ts, layout, who)
    _check_sigaltstack(ts, who)
    ctid = _uint(ts.clear_child_tid, THREAD, f"{who}: clear_child_tid", U64)
    if ctid and not layout.holds(ctid, 4, "w"):
        _bad(THREAD, f"{who}: clear_child_tid {ctid:#x} is not in writable memory")
    if not isinstance(ts.comm, str):
        _bad(THREAD, f"{who}: comm is not a string")


def _check_robust_list(ts, layout, who, arch):
    # set_robust_list(2) takes only len == sizeof(struct robust_list_head); the
    # kernel walks the list at thread exit, so the head is in the thread's memory.
    rl = ts.robust_list
    if not isinstance(rl, list) or len(rl) != 2:
        _bad(THREAD, f"{who}: robust_list is not [head, len]")
    head = _uint(rl[0], THREAD, f"{who}: robust list head", U64)
    length = _uint(rl[1], THREAD, f"{who}: robust list length", U64)
    if length not in (0, arch.ROBUST_LIST_HEAD_SIZE):
        _bad(THREAD, f"{who}: robust list length {length}: the kernel takes only "
                     f"{arch.ROBUST_LIST_HEAD_SIZE} (sizeof struct robust_list_head)")
    if head and not layout.holds(head, arch.ROBUST_LIST_HEAD_SIZE, "w"):
        _bad(THREAD, f"{who}: robust list head {head:#x} is not in writable memory")


def _check_rseq(ts, layout, who):
    # rseq(2): at least ORIG_RSEQ_SIZE, aligned to 32, in memory the kernel writes.
    if not isinstance(ts.rseq, dict):
        _bad(THREAD, f"{who}: rseq is not an object")
    if not ts.rseq:
        return
    ptr = _uint(ts.rseq.get("ptr"), THREAD, f"{who}: rseq ptr", U64)
    size = _uint(ts.rseq.get("size"), THREAD, f"{who}: rseq size", U32)
    _uint(ts.rseq.get("signature"), THREAD, f"{who}: rseq signature", U32)
    if size < RSEQ_MIN_SIZE or ptr % RSEQ_MIN_SIZE or size > arches.host().PAGE_SIZE:
        _bad(THREAD, f"{who}: rseq area {ptr:#x} of {size} bytes: the kernel takes "
                     f"{RSEQ_MIN_SIZE} bytes or more at a {RSEQ_MIN_SIZE}-byte boundary")
    if not layout.holds(ptr, size, "w"):
        _bad(THREAD, f"{who}: rseq area {ptr:#x} is not in writable memory")


def _check_sigaltstack(ts, who):
    # sigaltstack(2): mode 0, SS_ONSTACK or SS_DISABLE, plus SS_AUTODISARM; a
    # stack of at least MINSIGSTKSZ unless disabled.  ss_flags is an int.
    ss = ts.sigaltstack
    if not isinstance(ss, dict):
        _bad(THREAD, f"{who}: sigaltstack is not an object")
    if not ss:
        return
    flags = ss.get("ss_flags")
    if type(flags) is not int or not -(1 << 31) <= flags <= U32:
        _bad(THREAD, f"{who}: sigaltstack ss_flags {flags!r} is not a 32-bit value")
    mode = flags & U32 & ~SS_AUTODISARM
    if mode not in (0, SS_ONSTACK, SS_DISABLE):
        _bad(THREAD, f"{who}: sigaltstack ss_flags {flags & U32:#x} are not 0, SS_ONSTACK "
                     "or SS_DISABLE (with SS_AUTODISARM)")
    _uint(ss.get("ss_sp"), THREAD, f"{who}: sigaltstack ss_sp", U64)
    size = _uint(ss.get("ss_size"), THREAD, f"{who}: sigaltstack ss_size", U64)
    if mode != SS_DISABLE and size < MINSIGSTKSZ:
        _bad(THREAD, f"{who}: sigaltstack of {size} bytes, less than MINSIGSTKSZ "
                     f"({MINSIGSTKSZ})")


# --- process-wide -----------------------------------------------------------------------

def check_process_values(proc, layout):
    """Signal handlers, cwd, umask and descriptors, as apply.apply_process_state
    gives them to the kernel."""
    _check_sigactions(proc.sigactions, layout)
    if not isinstance(proc.cwd, str) or not proc.cwd.startswith("/"):
        _bad(PROCESS, f"cwd {proc.cwd!r} is not an absolute path")
    _path(proc.cwd, PROCESS, "cwd")
    if type(proc.umask) is not int or not 0 <= proc.umask <= 0o777:
        _bad(PROCESS, f"umask {proc.umask!r} is not between 0 and 0777")
    _check_files(proc.files)


def _check_sigactions(sigactions, layout):
    if not isinstance(sigactions, list):
        _bad(PROCESS, "sigactions is not a list")
    seen = set()
    for sa in sigactions:
        signo = sa.signo
        if type(signo) is not int or not 1 <= signo <= NSIG or signo in (SIGKILL, SIGSTOP):
            _bad(PROCESS, f"signal {signo!r} cannot have an action (1-{NSIG}, not "
                          "SIGKILL or SIGSTOP)")
        if signo in seen:
            _bad(PROCESS, f"signal {signo} has two actions")
        seen.add(signo)
        handler = _uint(sa.handler, PROCESS, f"signal {signo}: handler", U64)
        flags = _uint(sa.flags, PROCESS, f"signal {signo}: flags", U64)
        restorer = _uint(sa.restorer, PROCESS, f"signal {signo}: restorer", U64)
        _uint(sa.mask, PROCESS, f"signal {signo}: mask", U64)
        if flags & ~SA_FLAGS_KEPT:
            _bad(PROCESS, f"signal {signo}: flags {flags:#x} hold bits the kernel does not "
                          f"keep ({flags & ~SA_FLAGS_KEPT:#x})")
        if handler not in (SIG_DFL, SIG_IGN) and not layout.executable(handler):
            _bad(PROCESS, f"signal {signo}: handler {handler:#x} is not in executable "
                          "memory of the checkpoint")
        if restorer and not layout.executable(restorer):
            _bad(PROCESS, f"signal {signo}: restorer {restorer:#x} is not in executable "
                          "memory of the checkpoint")


def _check_files(files):
    if not isinstance(files, list):
        _bad(FILES, "fds is not a list")
    nr_open = _sysctl("fs/nr_open", 1 << 20)
    table = {}
    for f in files:
        if type(f.fd) is not int or not 0 <= f.fd < nr_open:
            _bad(FILES, f"fd {f.fd!r} is not a descriptor number (0 to fs.nr_open "
                        f"{nr_open})")
        if f.fd in table:
            _bad(FILES, f"fd {f.fd} appears twice")
        table[f.fd] = f
    for f in files:
        who = f"fd {f.fd}"
        # The kind itself: the reader's schema checks its form, and fds.kind_of
        # refuses at restart any kind rcore does not rebuild, naming the fd.
        if not isinstance(f.path, str):
            _bad(FILES, f"{who}: the path is not a string")
        _path(f.path, FILES, f"{who}: path")
        flags = _uint(f.flags, FILES, f"{who}: flags", U32)
        # (Only for what is opened by path: a pidfd's PIDFD_THREAD is O_EXCL.)
        if f.kind in ("file", "dir", "chr", "blk", "fifo") and flags & O_DROPPED_AT_OPEN:
            _bad(FILES, f"{who}: flags {flags:#o} hold O_CREAT, O_EXCL, O_NOCTTY or "
                        "O_TRUNC, which no open descriptor has")
        _uint(f.pos, FILES, f"{who}: offset", (1 << 63) - 1)
        main = table.get(f.description)
        if main is None or main.description != f.description or f.description > f.fd:
            _bad(FILES, f"{who}: shares the description of fd {f.description!r}, which "
                        "is not the lowest descriptor of one")


def check_restart_values(proc):
    """What restart alone gives the kernel (attrs.py): rlimits (prlimit64: soft
    not above hard, -1 unlimited), itimers, personality, and pending signals
    queued again (siginfo of a valid signal)."""
    if not isinstance(proc.rlimits, dict):
        _bad(PROCESS, "rlimits is not an object")
    for name, pair in proc.rlimits.items():
        if not (isinstance(pair, list) and len(pair) == 2
                and all(type(v) is int and -1 <= v < 1 << 63 for v in pair)):
            _bad(PROCESS, f"rlimit {name} is not [soft, hard] (-1: unlimited)")
        soft, hard = (U64 if v == -1 else v for v in pair)
        if soft > hard:
            _bad(PROCESS, f"rlimit {name}: soft limit {pair[0]} above hard limit {pair[1]}")
    if not isinstance(proc.itimers, dict):
        _bad(PROCESS, "itimers is not an object")
    for name, pair in proc.itimers.items():
        if not (isinstance(pair, list) and len(pair) == 2
                and all(type(v) is int and 0 <= v < 1 << 62 for v in pair)):
            _bad(PROCESS, f"itimer {name} is not [interval_us, value_us]")
    _uint(proc.personality, PROCESS, "personality", U32 - 1)
    _check_siginfos(proc.shared_pending, PROCESS, "shared pending signal")
    for ts in proc.threads:
        _check_siginfos(ts.pending, THREAD, f"thread {ts.tid}: pending signal")


def _check_siginfos(infos, note, what):
    if not isinstance(infos, list):
        _bad(note, f"{what}s are not a list")
    for info in infos:
        if not isinstance(info, bytes) or len(info) != SIGINFO_SIZE \
                or not 1 <= int.from_bytes(info[:4], "little", signed=True) <= NSIG:
            _bad(note, f"{what}: not a {SIGINFO_SIZE}-byte siginfo of a signal 1-{NSIG}")


def _sysctl(name, default):
    try:
        with open(f"/proc/sys/{name}") as f:
            return int(f.read())
    except (OSError, ValueError):
        return default


# --- helpers ----------------------------------------------------------------------------

def _is_uint(value, top=U64):
    return type(value) is int and 0 <= value <= top


def _uint(value, note, what, top=U64):
    if not _is_uint(value, top):
        _bad(note, f"{what} {value!r} is not an integer from 0 to {top:#x}")
    return value


def _path(path, note, what):
    # Paths reach the kernel NUL-terminated through the one scratch page.
    if "\0" in path or len(os.fsencode(path)) >= PATH_MAX:
        _bad(note, f"{what} is not a path (a NUL byte, or longer than PATH_MAX)")


def _hex(value):
    return f"{value:#x}" if _is_uint(value) else repr(value)


def _bad(note, why):
    raise InvalidValue(note, why)
