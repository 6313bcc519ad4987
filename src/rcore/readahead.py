"""An incremental checkpoint's pages read ahead of its freeze, held in rcore's
memory until they are written into the core.

A dump keeps the memory of its frozen instant by having the target fork a copy
of itself.  The fork copies the page tables of the whole address space (17-25 ms
for 1 GiB here) however few pages an increment stores.  An increment instead:

    read_ahead(pid)   while the process runs: lists the pages written since the
                      parent and write-protects them again in the same walk
                      (dirty.take_written), then reads them (about 2 us a page)
    at the freeze     Written(protect=True) lists the pages written since the
                      read-ahead; those the increment stores are read again now
                      (HeldPages.read_frozen), with the mappings it stores that
                      are not inherited from the parent -- unless reading all of
                      that costs more than the fork would (frozen_read_cheaper):
                      then the fork copy takes everything, as for a full dump
    after the release the core is written from the held bytes (HeldPages has the
                      readinto / iter_populated_runs of memory.LiveMemory)

Why the held bytes are those of the frozen instant: a page the read-ahead read
and the program did not write since keeps those bytes.  Any write after the
read-ahead's walk, also one racing the read itself, hits the write-protection
and is listed at the freeze; so is a page dropped (MADV_DONTNEED) since.  A
mapping unmapped, moved or replaced since loses its registration and is no
longer inherited: it is stored whole, read at the freeze.  The pages read at
the freeze take precedence over those read ahead."""

import bisect
import errno
import mmap

from . import dirty
from .chain import INHERITED
from .errors import ProcessExited, RcoreError
from .linux import libc
from .memory import PAGE, LiveMemory
from .ranges import merge_ranges

# Measured here (Linux 6.18, 2 CPUs; docs/KERNEL-NOTES.md): reading another
# process's pages into a fresh buffer costs ~3 us a range (process_vm_readv)
# plus ~1.9 us a page (2,560 scattered pages 11-13 ms, 64 MiB 31 ms), most of
# it the first touch of rcore's buffer; the dump's fork ~17 ms per GiB of
# resident memory (its page tables) plus ~1 ms (16 MiB: 1.2-1.7 ms, 2 GiB 26-28).
RANGE_US, PAGE_US = 3.0, 1.9
FORK_US_PER_PAGE, FORK_US = 0.065, 1000.0
# The read-ahead holds at most this much in rcore's memory; beyond it the
# pages are left to the fork copy, as before.
AHEAD_LIMIT = 256 << 20


IOV_MAX = 1024


def _readv(pid, local, remote):
    try:
        return libc.process_vm_readv(pid, local, remote)
    except OSError as err:
        if err.errno == errno.ESRCH:
            raise ProcessExited(pid) from None
        if err.errno == errno.EFAULT:       # the first range is not readable
            return 0
        raise


def frozen_read_cheaper(ranges, resident_pages):
    """Whether reading (start, end) ranges while frozen is estimated to take
    less time than the fork of a process with resident_pages resident pages."""
    pages = sum(e - s for s, e in ranges) // PAGE
    return len(ranges) * RANGE_US + pages * PAGE_US < FORK_US + resident_pages * FORK_US_PER_PAGE


def resident_pages(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1])


class _Layer:
    """Bytes of (start, end) page ranges, sorted and not overlapping."""

    def __init__(self):
        self.starts, self.pieces = [], []      # (start, end, memoryview)

    def add(self, pieces):
        self.pieces = sorted(self.pieces + pieces, key=lambda p: p[0])
        self.starts = [p[0] for p in self.pieces]

    def within(self, start, end):
        """The pieces overlapping [start, end), in order."""
        i = max(0, bisect.bisect_right(self.starts, start) - 1)
        while i < len(self.pieces) and self.pieces[i][0] < end:
            if self.pieces[i][1] > start:
                yield self.pieces[i]
            i += 1


class HeldPages:
    """Pages of process pid read into rcore's memory: ahead of the freeze
    (`ahead`: what the read-ahead listed, `unread`: those of them it could not
    read) and at the freeze, which take precedence."""

    def __init__(self, pid, ahead=()):
        self.pid = pid
        self.ahead = ahead
        self.unread = []
        self._ahead, self._frozen = _Layer(), _Layer()

    def _read(self, ranges, layer, whole):
        """Read the ranges into layer; returns the parts not readable (from an
        unreadable page to the range's end).  whole: those parts are held as
        zeros, as the dump's copier stores them (a page beyond a mapped
        file's end); else they are not held."""
        if not ranges:
            return []
        # populated in one call: touching fresh memory page by page (as a
        # bytearray's first write does) cost half as much again here
        buf = mmap.mmap(-1, sum(e - s for s, e in ranges),
                        flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
        view, base = memoryview(buf), libc.buffer_address(buf)
        mem = LiveMemory(self.pid)
        pieces, failed, at, i = [], [], 0, 0
        try:
            while i < len(ranges):
                # process_vm_readv: one copy, IOV_MAX ranges a call; it stops at the
                # first range it cannot read wholly (PROT_NONE, past a file's end)
                batch = ranges[i:i + IOV_MAX]
                remote = [(s, e - s) for s, e in batch]
                local, off = [], at
                for _, n in remote:
                    local.append((base + off, n))
                    off += n
                got = _readv(self.pid, local, remote)
                for s, e in batch:
                    if got < e - s:
                        break
                    pieces.append((s, e, view[at:e - s + at]))
                    got -= e - s
                    at += e - s
                    i += 1
                else:
                    continue
                # that range through /proc/PID/mem, which also reads PROT_NONE pages
                s, e = ranges[i]
                n = e - s
                got = n if whole else mem.readinto(view[at:at + n], s, n) // PAGE * PAGE
                if whole:
                    mem.readinto(view[at:at + n], s, n)     # the rest stays zeros
                if got:
                    pieces.append((s, s + got, view[at:at + got]))
                if got < n:
                    failed.append((s + got, e))
                at += n
                i += 1
        finally:
            mem.close()
        layer.add(pieces)
        return failed

    def read_ahead(self):
        self.unread = self._read(self.ahead, self._ahead, whole=False)

    def read_frozen(self, ranges):
        """Read the ranges at the freeze (they take precedence)."""
        self._read(ranges, self._frozen, whole=True)

    def readinto(self, buf, addr, length):
        """Fill buf[:length] with the held bytes of [addr, addr + length), which
        must all be held.  Returns length."""
        view = memoryview(buf)
        todo = [(addr, addr + length)]
        for layer in (self._frozen, self._ahead):
            rest = []
            for s, e in todo:
                at = s
                for ps, pe, data in layer.within(s, e):
                    a, b = max(ps, at), min(pe, e)
                    if a > at:
                        rest.append((at, a))
                    view[a - addr:b - addr] = data[a - ps:b - ps]
                    at = b
                if at < e:
                    rest.append((at, e))
            todo = rest
            if not todo:
                return length
        raise RcoreError(f"process {self.pid}: the dump holds no bytes of {todo[0][0]:#x} "
                         "(an increment's page missed at its freeze)")

    def iter_populated_runs(self, start, end):
        """(address, length) of what the freeze read within [start, end): a
        mapping the increment stores whole was read as its populated runs."""
        for ps, pe, _ in self._frozen.within(start, end):
            yield max(ps, start), min(pe, end) - max(ps, start)

    def close(self):
        self._ahead, self._frozen = _Layer(), _Layer()


def read_ahead(tracking):
    """HeldPages of the pages written since tracking's baseline, listed (and
    write-protected again) now and read while the process runs: the start of
    an incremental dump.  Beyond AHEAD_LIMIT bytes they are listed but not read."""
    held = HeldPages(tracking.pid, dirty.take_written(tracking))
    if sum(e - s for s, e in held.ahead) <= AHEAD_LIMIT:
        held.read_ahead()
    else:
        held.unread = list(held.ahead)
    return held


def to_read_frozen(held, plan, written, runs, forced=()):
    """The merged (start, end) ranges an increment must read at its freeze:
    of plan's (mapping, how) items, the runs of inherited mappings (chain.py)
    where written since the read-ahead (written.since), not read by it, or
    forced (the rseq pages); every other item as the copier reads it
    (runs(mapping, how): its (address, length) runs)."""
    stale = merge_ranges(list(written.since) + held.unread + list(forced))
    starts = [s for s, _ in stale]
    out = []
    for m, how in plan:
        if m.stored == INHERITED:
            i = max(0, bisect.bisect_right(starts, m.start) - 1)
            while i < len(stale) and stale[i][0] < m.end:
                s, e = max(stale[i][0], m.start), min(stale[i][1], m.end)
                if s < e:
                    out.append((s, e))
                i += 1
        else:
            out += [(a, a + n) for a, n in runs(m, how)]
    return merge_ranges(out)
