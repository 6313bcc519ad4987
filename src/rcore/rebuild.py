"""rebuild: make a stopped target's address space match a checkpoint.

Used by restore (rollback of a live process, whose layout drifted a little) and
by restart (a freshly exec'd process, whose layout is entirely different): the
algorithm assumes nothing about the starting layout.

    Workspace.create()      two private pages at an address free in both layouts:
                            `syscall; int3` (every later injected call runs from
                            there, so no step can unmap the running instruction)
                            and a scratch page for system-call arguments
    rebuild_address_space() unmap what the checkpoint lacks, move [vdso]/[vvar*],
                            put brk back, keep what is compatible and map the rest
                            again (anonymous, or from the same file and offset),
                            fix protections and madvise flags, then fill memory:
                            only pages that differ from the core are written
                            (or, with map_core, large anonymous regions are
                            mapped from the core file: map_from_core)
    fill_memory()           the filling alone, into mappings as they are (what
                            restore does with gdb's and the kernel's cores)

All changes are system calls injected through one Injector (linux/inject.py);
memory is written with process_vm_writev, or through /proc/PID/mem for pages the
target may not write (the kernel forces those, LINUX-NOTES)."""

import bisect
import errno
import os
import threading
from mmap import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_EXEC, PROT_READ, PROT_WRITE
from os import O_CLOEXEC, O_RDONLY, O_RDWR

from . import arch, shm
from .errors import Incompatible, RcoreError
from .linux import libc, procfs
from .linux.libc import (AT_FDCWD, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_GROWSDOWN,
                         MREMAP_FIXED, MREMAP_MAYMOVE)
from .memory import CHUNK, LiveMemory
from .ranges import merge_ranges, subtract_ranges
from .record import field, record
from .state import is_kernel_mapping
from .vdso import SPECIAL as SPECIAL_MOVABLE

ARCH = arch.host()
PAGE = ARCH.PAGE_SIZE
HELPER_CODE = ARCH.SYSCALL_INSN + b"\xcc"     # syscall; int3

# smaps VmFlags that mmap alone does not give, and the madvise advice that sets
# (and, where one exists, clears) each (include/uapi/asm-generic/mman-common.h).
MADVISE_SET = {"nh": 15, "hg": 14, "dd": 16, "wf": 18, "dc": 10}
MADVISE_CLEAR = {"dd": 17, "wf": 19, "dc": 11}

USER_SPACE_END = 0x7FFFFFFFF000


def prot_of(perms):
    return ((PROT_READ if perms[0] == "r" else 0) | (PROT_WRITE if perms[1] == "w" else 0)
            | (PROT_EXEC if perms[2] == "x" else 0))


def is_shared_anon(m):
    # MAP_SHARED|MAP_ANONYMOUS shows as a deleted /dev/zero (a shmem inode).
    return m.shared and m.deleted and m.path == "/dev/zero"


def is_file_mapping(m):
    return (m.file_backed or shm.is_sysv(m)) and not is_shared_anon(m)


def check_rebuild(pid, mappings):
    """What rebuild_address_space would fail on midway in stopped process pid,
    checked before anything changes (restore): [vdso]/[vvar*] of other sizes
    than the checkpoint's (another kernel), a file that must be mapped again
    and cannot be opened so (a shared writable mapping of a running executable:
    ETXTBSY; a read-only filesystem), and a mapping of a deleted file that would
    have to be mapped again.  Raises Incompatible."""
    live = procfs.read_maps(pid)
    deleted = [m for m in mappings if is_file_mapping(m) and m.deleted]
    for m in mappings:
        if m.path in SPECIAL_MOVABLE:
            cur = next((e for e in live if e.path == m.path), None)
            if cur is not None:
                _check_special_size(m, cur)
        elif is_file_mapping(m) and not m.deleted \
                and not compatible(m, pieces(live, m.start, m.end)):
            try:        # as _open_in_target will (rcore's identity, not the process's)
                os.close(os.open(m.path, _open_flags(m)))
            except OSError as err:
                raise Incompatible(f"{m.path} must be mapped again at {m.start:#x} and "
                                   f"cannot be opened so: {err.strerror}") from None
    if not deleted:
        return
    mem = LiveMemory(pid)
    try:
        for m in deleted:
            # mapped again unless the live range is compatible (map_missing) and,
            # for a mapping the core does not store, has no private pages
            # (revert_file_pages)
            if not compatible(m, pieces(live, m.start, m.end)) or (
                    not m.shared and m.stored != "all"
                    and mem.populated_runs(m.start, m.end, private_only=True)):
                raise Incompatible(f"the mapping {m.start:#x}-{m.end:#x} of the deleted file "
                                   f"{m.path} would have to be mapped again, and cannot be")
    finally:
        mem.close()


def _open_flags(m):
    """How a file is opened to map it again."""
    return (O_RDWR if m.shared and m.perms[1] == "w" else O_RDONLY) | O_CLOEXEC


def _check_special_size(m, cur):
    if cur.size != m.size:
        raise Incompatible(f"{m.path} is {cur.size} bytes here, {m.size} in the "
                           "checkpoint: it was taken on another kernel")


class Workspace:
    """Two private pages in the target: `syscall; int3` at `syscall_addr` and a
    read-write scratch page at `scratch` for structures and strings that
    injected calls take by pointer.  Placed where neither the live layout nor
    the checkpoint has anything, so it survives every step of a rebuild.

    Contract: create() needs an Injector on a stopped thread of `pid` whose
    syscall address is valid now (the vDSO's); it switches that injector to the
    workspace.  remove() must be the last injected call; the injector's thread is
    then at a syscall-exit stop and its registers must be set before it runs."""

    SIZE = 2 * PAGE

    def __init__(self, pid, addr):
        self.pid = pid
        self.addr = addr
        self.syscall_addr = addr
        self.scratch = addr + PAGE
        self.scratch_size = PAGE

    @classmethod
    def place(cls, pid, avoid=()):
        """Where the workspace goes: free in the live layout and in `avoid`
        (extra (start, end) ranges, e.g. the checkpoint's mappings).  Changes
        nothing."""
        taken = [(m.start, m.end) for m in procfs.read_maps(pid)] + list(avoid)
        return choose_free_address(taken, cls.SIZE)

    @classmethod
    def create(cls, inj, pid, avoid=(), addr=None):
        """Map the workspace at `addr` (default: place(pid, avoid)): the first
        change made to the process."""
        if addr is None:
            addr = cls.place(pid, avoid)
        got = inj.call("mmap", addr, cls.SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0)
        ws = cls(pid, got)
        try:
            libc.write_memory(pid, got, HELPER_CODE)
            inj.call("mprotect", got, PAGE, PROT_READ | PROT_EXEC)
        except BaseException:
            inj.call("munmap", got, cls.SIZE, check=False)
            raise
        inj.addr = ws.syscall_addr
        return ws

    def range(self):
        return (self.addr, self.addr + self.SIZE)

    def put(self, data, offset=0):
        """Copy bytes into the scratch page; returns their address in the target."""
        if offset + len(data) > self.scratch_size:
            raise RcoreError(f"{len(data)} bytes do not fit the injection scratch page")
        libc.write_memory(self.pid, self.scratch + offset, data)
        return self.scratch + offset

    def put_str(self, text, offset=0):
        return self.put(os.fsencode(text) + b"\0", offset)

    def get(self, length, offset=0):
        return libc.read_memory(self.pid, self.scratch + offset, length)

    def remove(self, inj):
        inj.call("munmap", self.addr, self.SIZE, check=False, stop_at_exit=True)


def choose_free_address(taken, size):
    """Middle of the largest gap in user space among `taken` (start, end) ranges:
    far from the heap's growth and from where mmap places new mappings."""
    spans = sorted((s, e) for s, e in taken if s < USER_SPACE_END)
    best, prev = (0, 0), 1 << 20
    for s, e in spans + [(USER_SPACE_END, USER_SPACE_END)]:
        if s - prev > best[1] - best[0]:
            best = (prev, s)
        prev = max(prev, e)
    lo, hi = best
    if hi - lo < size + 2 * PAGE:
        raise RcoreError("no free address range for rcore's injection workspace")
    return (lo + (hi - lo) // 2) & ~(PAGE - 1)


# --- interval helpers -------------------------------------------------------------

def pieces(live, start, end):
    """Live maps entries overlapping [start, end), in order (live: maps entries,
    sorted and not overlapping, as /proc shows them)."""
    i = bisect.bisect_right(live, start, key=lambda e: e.start)
    if i and live[i - 1].end > start:
        i -= 1
    out = []
    while i < len(live) and live[i].start < end:
        out.append(live[i])
        i += 1
    return out


def compatible(target, live_pieces):
    """Can the live memory in target's range stay (then only filled), or must it be
    mapped again?  It can when it covers the range without a gap and every piece
    has the same backing: the same file at the same offset, or anonymous memory
    of the same sharing (and the same shmem object when shared)."""
    cur = target.start
    for p in live_pieces:
        if p.start > cur:
            return False
        cur = p.end
        if p.shared != target.shared or ("gd" in p.vmflags) != target.growsdown:
            return False
        if is_file_mapping(target) or is_shared_anon(target):
            if p.inode != target.inode or p.dev != target.dev:
                return False
            # the same file page at every address
            if is_file_mapping(target) and p.offset - p.start != target.offset - target.start:
                return False
        elif p.inode != 0 and not is_shared_anon(p):
            return False
    return cur >= target.end


@record
class RebuildSummary:
    """What rebuilding the memory of a process changed."""
    unmapped: int = 0           # ranges unmapped (created since the checkpoint)
    created: int = 0            # mappings mapped again
    protected: int = 0          # mprotect calls
    compared: int = 0           # bytes compared with the live memory
    written: int = 0            # bytes written into the target
    mapped_from_core: int = 0   # bytes mapped from the core file (map_core)
    skipped: list = field(default_factory=list)   # what could not be restored, in words


class CoreBytes:
    """The core file's data: copied into buffers with pread (no page faults on a
    mapping of it, and the GIL is released while the kernel copies).  For an
    incremental core resolved through its chain, its chain's (chain.ChainData),
    unless chain=False (the core's own file)."""

    def __init__(self, core, chain=True):
        self.core = core
        self.fd = core.fileno()
        self.chain = getattr(core, "chain_data", None) if chain else None

    def readinto(self, buf, offset, length):
        if self.chain is not None:
            return self.chain.readinto(memoryview(buf)[:length], offset, length)
        view = memoryview(buf)[:length]
        got = os.preadv(self.fd, [view], offset)
        if got != length:
            raise RcoreError(f"{self.core.path}: short read at offset {offset}: truncated?")

    def extents(self, offset, length, sparse):
        """(offset, length, has_data) pieces of [offset, offset+length) of the core
        file: holes were zero pages at the checkpoint (the writer skips them)."""
        if self.chain is not None:
            yield from self.chain.extents(offset, length, sparse)
            return
        end = offset + length
        if not sparse:
            yield offset, length, True
            return
        pos = offset
        while pos < end:
            try:
                data = os.lseek(self.fd, pos, os.SEEK_DATA)
            except OSError as err:
                if err.errno != errno.ENXIO:
                    raise
                data = end
            data = min(data, end)
            if data > pos:
                yield pos, data - pos, False
            if data >= end:
                return
            hole = min(os.lseek(self.fd, data, os.SEEK_HOLE), end)
            yield data, hole - data, True
            pos = hole


class AddressSpaceBuilder:
    """One rebuild; see rebuild_address_space() for the contract."""

    def __init__(self, pid, inj, ws, mappings, core, mm=None, progress=None, written=None):
        self.pid, self.inj, self.ws = pid, inj, ws
        self.written = written
        self.targets = [m for m in mappings if not is_kernel_mapping(m)]
        self.specials = [m for m in mappings if m.path in SPECIAL_MOVABLE]
        self.core = core
        self.mm = mm
        self.progress = progress
        self.summary = RebuildSummary()
        self.fresh = set()          # starts of mappings mapped anew (zero-filled if anon)
        self.from_core = set()      # starts of mappings to be mapped from the core

    # --- layout ---------------------------------------------------------------------
    def live(self, flags=False):
        """The live mappings but the workspace; with VmFlags (smaps walks page
        tables, a cost proportional to the memory) only when asked for."""
        lo, hi = self.ws.range()
        entries = procfs.read_smaps(self.pid) if flags else procfs.read_maps(self.pid)
        return [e for e in entries if e.end <= lo or e.start >= hi]

    def unmap_extra(self, live):
        """munmap every live range that no checkpoint mapping covers."""
        own = [(e.start, e.end) for e in live if not is_kernel_mapping(e)]
        keep = [(m.start, m.end) for m in self.targets]
        grow = self._brk_growth(live)
        extra = merge_ranges(subtract_ranges(own, keep) + grow)
        for s, e in extra:
            self.inj.call("munmap", s, e - s)
        self.summary.unmapped += len(extra)

    def _brk_growth(self, live):
        # Where the heap must grow back to, anything live is in the way of brk().
        if not self.mm or not self.mm.brk:
            return []
        start_brk = procfs.read_stat(self.pid).start_brk
        if start_brk != self.mm.start_brk:
            return []
        top = _page_up(self.mm.brk)
        heap_end = max([e.end for e in live if e.path == "[heap]"] + [_page_up(start_brk)])
        return [(heap_end, top)] if top > heap_end else []

    def set_brk(self, final=True):
        """Put the program break back when the heap starts where it did (the same
        process); a fresh process sets its mm fields with PR_SET_MM_MAP instead.
        Called before unmapping (brk() only shrinks a heap whose mapping is still
        there) and after (growing needs the room cleared)."""
        if not self.mm or not self.mm.brk:
            return
        if procfs.read_stat(self.pid).start_brk != self.mm.start_brk:
            return
        got = self.inj.call("brk", self.mm.brk)
        if got != self.mm.brk and final:
            self.summary.skipped.append(f"brk could not be set back to {self.mm.brk:#x}")

    def move_specials(self, live):
        """[vdso] and [vvar*] to their checkpointed addresses (same kernel only):
        glibc keeps pointers into the vDSO."""
        moves = []
        for m in self.specials:
            cur = next((e for e in live if e.path == m.path), None)
            if cur is None or cur.start == m.start:
                continue
            _check_special_size(m, cur)
            moves.append((cur, m))
        if not moves:
            return
        # Through a temporary place when old and new ranges overlap.
        taken = [(e.start, e.end) for e in live] + [(m.start, m.end) for m in self.targets]
        span = sum(c.size for c, _ in moves)
        tmp = choose_free_address(taken + [self.ws.range()], span + PAGE)
        staged = []
        for cur, m in moves:
            self.inj.call("mremap", cur.start, cur.size, cur.size,
                          MREMAP_MAYMOVE | MREMAP_FIXED, tmp)
            staged.append((tmp, m))
            tmp += cur.size
        for at, m in staged:
            self.inj.call("mremap", at, m.size, m.size, MREMAP_MAYMOVE | MREMAP_FIXED, m.start)

    def map_missing(self, live):
        """Map again every checkpoint mapping whose live range is not compatible."""
        for m in self.targets:
            if m.start in self.from_core or compatible(m, pieces(live, m.start, m.end)):
                continue
            self._map(m, m.start, m.size, m.offset)
            self.fresh.add(m.start)
            self.summary.created += 1

    def _map(self, m, addr, size, offset):
        prot = prot_of(m.perms)
        if shm.is_sysv(m):
            shm.attach(self.inj, m)
        elif is_file_mapping(m):
            fd = self._open_in_target(m)
            try:
                self.inj.call("mmap", addr, size, prot,
                              (MAP_SHARED if m.shared else MAP_PRIVATE) | MAP_FIXED, fd, offset)
            finally:
                self.inj.call("close", fd, check=False)
        else:
            flags = (MAP_SHARED if m.shared else MAP_PRIVATE) | MAP_ANONYMOUS | MAP_FIXED
            if m.growsdown:
                flags |= MAP_GROWSDOWN
            self.inj.call("mmap", addr, size, prot, flags, -1, 0)
        for flag, advice in MADVISE_SET.items():
            if flag in m.vmflags:
                self.inj.call("madvise", addr, size, advice, check=False)

    def _open_in_target(self, m):
        if m.deleted:
            raise Incompatible(f"mapping {m.start:#x}-{m.end:#x} of deleted file {m.path} "
                               "is gone and cannot be mapped again")
        return self.inj.call("openat", AT_FDCWD, self.ws.put_str(m.path), _open_flags(m), 0)

    def fix_protections(self, live):
        for m in self.targets:
            got = pieces(live, m.start, m.end)
            if any(p.perms[:3] != m.perms[:3] for p in got):
                self.inj.call("mprotect", m.start, m.size, prot_of(m.perms))
                self.summary.protected += 1
            if m.start in self.fresh:
                continue
            have = set().union(*[p.vmflags for p in got]) if got else set()
            for flag, advice in MADVISE_SET.items():
                if flag in m.vmflags and flag not in have:
                    self.inj.call("madvise", m.start, m.size, advice, check=False)
            for flag, advice in MADVISE_CLEAR.items():
                if flag in have and flag not in m.vmflags:
                    self.inj.call("madvise", m.start, m.size, advice, check=False)

    def revert_file_pages(self):
        """Private file mappings the core does not store are the file's pages: drop
        copies written since (mapping the range from the file again)."""
        mem = LiveMemory(self.pid)
        try:
            for m in self.targets:
                if m.start in self.fresh or m.shared or not is_file_mapping(m) \
                        or m.stored == "all":
                    continue
                if mem.populated_runs(m.start, m.end, private_only=True):
                    self._map(m, m.start, m.size, m.offset)
                    self.summary.created += 1
        finally:
            mem.close()

    # --- memory ---------------------------------------------------------------------
    def fill(self):
        fill_memory(self.pid, [m for m in self.targets if m.start not in self.from_core],
                    self.core, fresh=self.fresh, summary=self.summary,
                    progress=self.progress, written=self.written)


MAP_CORE_MIN = 1 << 20       # smaller regions are cheaper to write than to map


def core_mappable(core, mappings, min_size=MAP_CORE_MIN):
    """The private anonymous mappings of at least min_size whose bytes the core
    holds whole at a page-aligned offset, so that they can be mapped from it
    (map_from_core).  [heap] and [stack] are left out: they keep their names in
    /proc/PID/maps and brk() and stack growth their usual neighbours."""
    out = []
    if core.resolved:
        return out      # an incremental core's data are in a temporary file (chain.py)
    for m in mappings:
        if m.stored != "all" or m.shared or m.file_backed or m.growsdown \
                or m.path in ("[heap]", "[stack]") or is_kernel_mapping(m) \
                or m.size < min_size:
            continue
        where = core.stored_range(m.start)
        if where and where[1] >= m.size and where[0] % PAGE == 0:
            out.append(m)
    return out


def open_core_in_target(inj, ws, core):
    """The core file opened (read-only, close-on-exec) by the target itself, as
    its own user: its fd there, or -errno (e.g. -EACCES) when it may not, or
    -ESTALE when the path names another file than the one rcore read (renamed
    over since: its bytes would be mapped unchecked, whoever wrote them)."""
    fd = inj.call("openat", AT_FDCWD, ws.put_str(os.path.abspath(core.path)),
                  O_RDONLY | O_CLOEXEC, 0, check=False)
    if fd >= 0:
        st, mine = os.stat(procfs.path(inj.thread.tgid, "fd", str(fd))), os.fstat(core.fileno())
        if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
            inj.call("close", fd, check=False)
            return -errno.ESTALE
    return fd


def map_from_core(inj, core, mappings, fd):
    """mmap(MAP_PRIVATE|MAP_FIXED) the core's data over each of `mappings`
    (from core_mappable) through `fd` (open_core_in_target): milliseconds for
    any size; pages are read from the core when first touched and copied when
    first written.  What changes for the program: /proc/PID/maps names the core
    file for those regions; MADV_DONTNEED refills them from the core instead of
    zeroing them (allocators that count on zeroed pages after it may see old
    bytes); truncating or rewriting the core in place while the process runs
    gives it SIGBUS or other data (rcore writes new cores under a new name, and
    deleting or renaming the file is safe); a checkpoint of the process stores
    only the pages it wrote since.  Returns the bytes mapped."""
    total = 0
    for m in mappings:
        offset, _ = core.stored_range(m.start)
        inj.call("mmap", m.start, m.size, prot_of(m.perms), MAP_PRIVATE | MAP_FIXED, fd, offset)
        for flag, advice in MADVISE_SET.items():
            if flag in m.vmflags:
                inj.call("madvise", m.start, m.size, advice, check=False)
        total += m.size
    return total


def fillable(m, core):
    """Does the core hold bytes that mapping m must be brought back to?  Shared
    file mappings are the file itself: rolling them back would write the file."""
    return m.stored == "all" and not (m.shared and is_file_mapping(m)) \
        and core.stored_range(m.start) is not None


def writes_past_end_of_file(core, m, file_size):
    """Would filling file mapping m write into pages past the end of its file
    (file_size bytes)?  Those pages fault (SIGBUS) and cannot be written; the
    core holds only zeros (holes) there when it is the process's."""
    in_file = max(0, _page_up(file_size) - m.offset)
    if in_file >= m.size or not fillable(m, core):
        return False
    where = core.stored_range(m.start + in_file)
    if where is None:
        return False
    off, avail = where
    return any(has_data for _, _, has_data in
               CoreBytes(core).extents(off, min(avail, m.size - in_file), sparse=True))


def fill_memory(pid, mappings, core, fresh=(), summary=None, progress=None, written=None):
    """Bring the memory of `mappings` (already mapped in stopped process pid) to
    the bytes the core holds for them, writing only pages that differ.

    fresh: starts of mappings just created (anonymous ones are known to be zero,
    so only the core's data extents are written, without reading anything).
    Mappings the core stores nothing for, and shared file mappings, are left as
    they are.  Works for any core the reader opens (rcore's sparse cores, gdb's
    dense ones).  written: a dirty.Written (tracking armed relative to this
    core): in the ranges it tracks, only pages written since are compared.
    Returns the RebuildSummary (counts of compared/written bytes)."""
    summary = summary or RebuildSummary()
    todo = [m for m in mappings if not is_kernel_mapping(m) and fillable(m, core)]
    data = CoreBytes(core)
    filler = _Filler(pid, data, summary, progress, written)
    try:
        filler.total = sum(m.size for m in todo)
        for m in todo:
            filler.add_mapping(m, fresh_zero=(m.start in fresh and not is_file_mapping(m)),
                               sparse=core.has_rcore)
        filler.run()
    finally:
        filler.close()
    return summary


def _page_up(n):
    return (n + PAGE - 1) & ~(PAGE - 1)


BLOCK = 16 * PAGE          # first compare level inside a chunk that differs
SCATTER_RUNS = 512         # runs per process_vm_writev (IOV_MAX is 1024)
_ZEROS = bytes(CHUNK)


class _Filler:
    """Brings memory to the core's bytes, writing only pages that differ.

    Work is cut into chunks (memory.CHUNK) taken by one worker thread per CPU:
    reading the live memory (/proc/PID/mem) and the core (pread) releases the
    GIL, so the workers overlap the two copies; comparing is memcmp, by chunk,
    then by 64 KiB block, then by page only inside blocks that differ."""

    def __init__(self, pid, data, summary, progress=None, written=None):
        self.pid = pid
        self.written = written      # dirty.Written, or None: compare everything
        self.data = data
        self.summary = summary
        self.progress = progress
        self.total = 0
        self.done = 0
        self.live = LiveMemory(pid)
        self.memfd = os.open(procfs.path(pid, "mem"), os.O_RDWR | os.O_CLOEXEC)
        self.tasks = []
        self.scattered = []         # (addr, core offset or -1, length, direct): written blind
        self.lock = threading.Lock()

    def close(self):
        self.live.close()
        os.close(self.memfd)

    def add_mapping(self, m, fresh_zero, sparse):
        """Queue the work that brings mapping m to the core's bytes."""
        off, avail = self.data.core.stored_range(m.start)
        length = min(avail, m.size)
        direct = m.perms[1] == "w"
        for eoff, elen, has_data in self.data.extents(off, length, sparse):
            addr = m.start + (eoff - off)
            if fresh_zero:
                if has_data:
                    self._queue("write", addr, eoff, elen, direct)
                continue
            for s, e, tracked in (self.written.split(addr, addr + elen) if self.written
                                  else [(addr, addr + elen, False)]):
                if tracked:
                    # Dirty tracking: only pages written since the checkpoint can
                    # differ from it (dirty.py); they are written back without
                    # comparing (reading them would cost as much as writing).
                    for ws, we in self.written.written_in(s, e):
                        for p in range(ws, we, CHUNK):
                            self.scattered.append((p, eoff + (p - addr) if has_data else -1,
                                                   min(CHUNK, we - p), direct))
                    continue
                if has_data:
                    runs = [(s, e - s)]
                elif is_file_mapping(m):
                    runs = [(s, e - s)]     # pages never touched read the file's bytes
                else:
                    # A hole was zero at the checkpoint: in anonymous memory only
                    # populated pages can differ.
                    runs = self.live.populated_runs(s, e)
                for raddr, rlen in runs:
                    self._queue("compare" if has_data else "zero", raddr,
                                eoff + (raddr - addr), rlen, direct)
            if not has_data:
                self.done += elen

    def _queue(self, kind, addr, off, length, direct):
        for p in range(0, length, CHUNK):
            self.tasks.append((kind, addr + p, off + p, min(CHUNK, length - p), direct))

    def _queue_scattered(self):
        """Batches of the scattered runs: up to CHUNK bytes and SCATTER_RUNS runs
        each, written by one process_vm_writev."""
        batch, size = [], 0
        for run in self.scattered + [None]:
            if run is None or len(batch) == SCATTER_RUNS or size + run[2] > CHUNK:
                if batch:
                    self.tasks.append(("scatter", 0, batch, size, None))
                batch, size = [], 0
            if run is not None:
                batch.append(run)
                size += run[2]

    def run(self):
        self._queue_scattered()
        self.tasks.reverse()                 # pop() from the end, in address order
        workers = min(os.cpu_count() or 1, 8, max(1, len(self.tasks)))
        errors = []
        threads = [threading.Thread(target=self._worker, args=(errors,))
                   for _ in range(workers - 1)]
        for t in threads:
            t.start()
        self._worker(errors)
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def _worker(self, errors):
        live, core = bytearray(CHUNK), bytearray(CHUNK)
        compared = written = 0
        try:
            while not errors:
                with self.lock:
                    if not self.tasks:
                        break
                    kind, addr, off, n, direct = self.tasks.pop()
                if kind == "scatter":
                    written += self._write_scattered(core, off)
                elif kind == "write":
                    self.data.readinto(core, off, n)
                    written += self._write(addr, memoryview(core)[:n], direct)
                else:
                    got = self.live.readinto(live, addr, n)
                    compared += n
                    if kind == "zero":
                        core[:n] = bytes(n)
                    else:
                        self.data.readinto(core, off, n)
                    for p, q in _differing_runs(live, core, n, got):
                        written += self._write(addr + p, memoryview(core)[p:q], direct)
                if self.progress:
                    with self.lock:
                        self.done += n
                        self.progress(self.done, self.total)
        except BaseException as err:
            errors.append(err)
        finally:
            with self.lock:
                self.summary.compared += compared
                self.summary.written += written

    def _write_scattered(self, buf, runs):
        """Write each (addr, core offset or -1 for zeros, length, direct) of runs
        from the core: the core's bytes gathered into buf, then one
        process_vm_writev for all (the pages the process may not write, or
        after a short write, one by one).  Returns the bytes written."""
        view = memoryview(buf)
        local, remote, pos = [], [], 0
        base = libc.buffer_address(buf)
        for addr, off, n, _ in runs:
            if off < 0:
                view[pos:pos + n] = _ZEROS[:n]
            else:
                self.data.readinto(view[pos:], off, n)
            local.append((base + pos, n))
            remote.append((addr, n))
            pos += n
        direct = [k for k, r in enumerate(runs) if r[3]]
        done = 0
        if direct:
            done = libc.process_vm_writev(self.pid, [local[k] for k in direct],
                                          [remote[k] for k in direct])
        total = 0
        for k, (addr, _, n, is_direct) in enumerate(runs):
            at = local[k][0] - base
            if is_direct and done >= n:
                done -= n
            else:                       # not writable, or past a short write
                skip = done if is_direct else 0
                done = 0
                self._write(addr + skip, view[at + skip:at + n], False)
            total += n
        return total

    def _write(self, addr, data, direct):
        """Write data at addr; returns the bytes written."""
        view, total = memoryview(data), len(data)
        if direct:
            got = libc.process_vm_writev(self.pid, [(libc.buffer_address(view), len(view))],
                                         [(addr, len(view))])
            view, addr = view[got:], addr + got
        # /proc/PID/mem forces writes into pages the target may only read.
        while view:
            n = os.pwrite(self.memfd, view, addr)
            if n <= 0:
                raise RcoreError(f"cannot write memory at {addr:#x} in process {self.pid}")
            view, addr = view[n:], addr + n
        return total


def _differing_runs(live, core, n, got):
    """(start, end) offsets of the page runs where live[:n] and core[:n] differ.
    Pages past `got` are unreadable in the process (a file mapping past the end
    of its file): they differ only if the core holds something there."""
    if got == n and (live == core if n == len(live) else live[:n] == core[:n]):
        return []
    if got < n:
        readable = got - got % PAGE
        if core[readable:n] == bytes(n - readable):
            n = readable
    runs = []
    start = None
    for b in range(0, n, BLOCK):
        e = min(b + BLOCK, n)
        if e <= got and live[b:e] == core[b:e]:
            if start is not None:
                runs.append((start, b))
                start = None
            continue
        for p in range(b, e, PAGE):
            same = p + PAGE <= got and live[p:p + PAGE] == core[p:p + PAGE]
            if not same and start is None:
                start = p
            elif same and start is not None:
                runs.append((start, p))
                start = None
    if start is not None:
        runs.append((start, n))
    return runs


def rebuild_address_space(pid, inj, ws, mappings, core, mm=None, progress=None,
                          map_core=False, written=None):
    """Make the address space of stopped process `pid` match `mappings`, with the
    bytes held in `core`.

    pid       the target; every thread must be stopped (ptrace) and no other
              thread may be in the middle of an injected call.
    inj       an Injector on one stopped thread of pid, already running from
              `ws` (Workspace.create); its registers are borrowed.
    ws        the Workspace; it is left mapped (callers remove it last).
    mappings  the checkpoint's Mapping list (state.ProcessState.mappings); kernel
              mappings ([vdso], [vvar*]) are moved when they are elsewhere, never
              written; [vsyscall] is left alone.
    core      an open elf.reader.CoreFile serving the memory.
    mm        MmFields; when the live heap starts at mm.start_brk (the same
              process) the program break is set to mm.brk.  A fresh process must
              set start_brk/brk itself (PR_SET_MM_MAP) before or after.
    progress  called as progress(done_bytes, total_bytes) while filling.
    map_core  map large private anonymous regions from the core instead of
              writing them (core_mappable, map_from_core: see there what that
              changes for the program).  If the process cannot open the core,
              they are written, and summary.skipped says so.
    written   a dirty.Written when dirty tracking is armed relative to this core:
              only pages written since are compared where it tracks.

    Any starting layout works: live ranges the checkpoint lacks are unmapped,
    compatible ranges (same backing) are kept and only their differing pages are
    written, everything else is mapped again with MAP_FIXED.  Files must be
    checked beforehand (restore/restart compare identities before calling).
    Returns a RebuildSummary.  Raises InjectedSyscallError/Incompatible midway:
    the target is then half-rebuilt and must not run on."""
    b = AddressSpaceBuilder(pid, inj, ws, mappings, core, mm, progress, written)
    core_fd = None
    if map_core and core.resolved:
        b.summary.skipped.append("map_core: an incremental core is read through its chain "
                                 "of parents: its memory was written")
    elif map_core:
        lazy = core_mappable(core, b.targets)
        if lazy:
            # Opened first, before anything changes, as the process's own user.
            ret = open_core_in_target(inj, ws, core)
            if ret < 0:
                why = ("its path names another file now" if ret == -errno.ESTALE
                       else os.strerror(-ret))
                b.summary.skipped.append(f"map_core: the process cannot open the core "
                                         f"({why}): its memory was written")
            else:
                core_fd = ret
                b.from_core = {m.start for m in lazy}
    try:
        _rebuild(b)
        if core_fd is not None:
            b.summary.mapped_from_core = map_from_core(
                inj, core, [m for m in b.targets if m.start in b.from_core], core_fd)
    finally:
        if core_fd is not None:
            inj.call("close", core_fd, check=False)
    return b.summary


def _rebuild(b):
    b.set_brk(final=False)
    b.unmap_extra(b.live())
    b.move_specials(b.live())
    b.set_brk()
    live = b.live(flags=True)           # smaps walks page tables: read it once if it can
    created = b.summary.created
    b.map_missing(live)
    b.fix_protections(live if b.summary.created == created else b.live(flags=True))
    b.revert_file_pages()
    b.fill()
