"""The mappings of a process as they are at its freeze, without reading
/proc/PID/smaps while it is frozen.

smaps walks every page-table entry of the process (about 70 ns a page here:
2 ms for 100 MiB, 15 ms for 1 GiB); maps walks none.  A dump reads smaps
just before the freeze (`Early`, the process running), and while it is frozen
only maps (compared with the early one as bytes), plus a PAGEMAP_SCAN of the
few mappings whose Anonymous size decides what the core stores and may change
without a change of layout (private file mappings: dump.plan_mapping).  The
rest of smaps, the VmFlags, comes from the early read, and is checked once the process runs again (`check_flags`): against the fork
copy's smaps when there is a copy (the copy is the process at the freeze), else
against the process's smaps read again.  A flag that decides the core's bytes
(MADV_DONTFORK, MADV_WIPEONFORK, guard pages...) gained in between fails the
attempt (dump.dump takes it again with smaps read while frozen); any other
takes the copy's value.

smaps is read while frozen, as before, when the layout in maps is not the early
one, when the locked size in status does not add up to the early `lo` flags
(a fork drops VM_LOCKED, so the copy cannot tell), or when the kernel has no
PAGEMAP_SCAN (before Linux 6.7)."""

import bisect
import errno
import functools
import os

from .errors import RcoreError
from .linux import procfs
from .linux import uffd as U
from .memory import PAGE

# VmFlags a fork does not give the child (mm/mmap.c dup_mmap, userfaultfd's
# dup_userfaultfd without UFFD_FEATURE_EVENT_FORK): the copy cannot confirm them.
FORK_DROPS = frozenset({"lo", "um", "uw", "ui"})
# VmFlags that decide where a mapping's bytes come from or which they are: one
# changed between the early read and the freeze makes the dump's bytes wrong.
DATA_FLAGS = frozenset({"dc", "wf", "gu", "io", "pf", "ht"})


class FlagsChanged(RcoreError):
    """A mapping's VmFlags changed between the early smaps read and the freeze
    in a way that changes the core's bytes: the dump must be taken again."""


class Early:
    """smaps of a process read while it runs, just before its freeze: its
    entries, the maps text they make (compared as bytes at the freeze: parsing
    thousands of lines while frozen would cost milliseconds) and the runs of
    mappings that are scanned then."""

    def __init__(self, pid):
        self.pid = pid
        raw = []
        self.entries = procfs.parse_smaps(procfs.read_bytes(pid, "smaps"), raw)
        self.maps_text = b"".join(line + b"\n" for line, _, _ in raw)
        # start -> (maps line, VmFlags text): what check_flags compares as bytes
        self.raw = {m.start: (line, flags) for m, (line, flags, _) in zip(self.entries, raw)}
        self.scanned = [m for m in self.entries if scanned_at_freeze(m)]
        self.runs = _runs(self.entries)


def at_freeze(pid, early):
    """(mappings, exact) of frozen process pid: exact is True when smaps was
    read now, False when they are early's entries (VmFlags, and Anonymous but
    for the mappings scanned now) and must pass check_flags once the process
    runs again."""
    if early is None:
        return procfs.read_smaps(pid), True
    if (procfs.read_bytes(pid, "maps") != early.maps_text
            or not _locked_adds_up(pid, early.entries)):
        return procfs.read_smaps(pid), True
    try:
        anonymous = _anonymous_now(pid, early)
    except OSError as err:
        if err.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
            return procfs.read_smaps(pid), True
        raise
    for m in early.scanned:
        m.anonymous = anonymous[m.start]
    return early.entries, False


def _locked_adds_up(pid, entries):
    """VmLck of status (whole VM_LOCKED mappings, in KiB) against the early `lo`
    flags: an mlock of a whole mapping changes no layout."""
    field = procfs.read_status(pid).get("VmLck", "0 kB").split()[0]
    return int(field) * 1024 == sum(e.size for e in entries if "lo" in e.vmflags)


def scanned_at_freeze(m):
    """The mappings whose Anonymous bytes, which decide what the core stores
    (dump.plan_mapping), may change without a change of layout: private file
    mappings (a page written is copied; then the mapping is stored whole).  An
    unreadable private mapping (stored only if it holds pages) cannot gain a
    page but by an mprotect, which changes the layout, or by a debugger's
    write: check_flags compares it with the fork copy's."""
    return not m.shared and not m.special and m.file_backed


def _unreadable_private(m):
    return not m.shared and not m.special and m.perms[0] != "r" and not m.file_backed


def _anonymous_now(pid, early):
    """{start: Anonymous + Swap bytes} of early.scanned, by PAGEMAP_SCAN (one
    scan per run of adjacent such mappings)."""
    chosen = early.scanned
    out = {m.start: 0 for m in chosen}
    if not chosen:
        return out
    starts = [m.start for m in chosen]
    runs = early.runs
    if len(runs) > _MAX_SCANS:
        # one walk of the whole span costs less than hundreds of calls (the
        # pages of the mappings between are walked too, ~1 ms a GiB)
        runs = [(runs[0][0], runs[-1][1])]
    fd = procfs.open_pagemap(pid)
    try:
        for lo, hi in runs:
            for start, end, cats in U.pagemap_scan(
                    fd, lo, hi, anyof_mask=U.PAGE_IS_PRESENT | U.PAGE_IS_SWAPPED,
                    return_mask=_return_mask()):
                if _is_anonymous(cats):
                    _add(out, chosen, starts, start, end)
    finally:
        os.close(fd)
    return out


_MAX_SCANS = 32


def _runs(maps):
    """[start, end) of each run of adjacent mappings scanned_at_freeze."""
    runs = []
    for m in maps:
        if not scanned_at_freeze(m):
            continue
        if runs and runs[-1][1] == m.start:
            runs[-1][1] = m.end
        else:
            runs.append([m.start, m.end])
    return runs


def _is_anonymous(cats):
    # smaps Anonymous: anonymous pages mapped (not the zero page, not page-cache
    # pages); Swap: swap entries (anonymous pages swapped out or migrating), not
    # guard or file-page entries.
    if cats & U.PAGE_IS_FILE:
        return False
    if cats & U.PAGE_IS_PRESENT:
        return not cats & U.PAGE_IS_PFNZERO
    return not cats & U.PAGE_IS_GUARD


def _add(out, chosen, starts, start, end):
    """Add the bytes of [start, end) to the chosen mappings it overlaps (a
    region of the scan may span adjacent mappings)."""
    i = max(bisect.bisect_right(starts, start) - 1, 0)
    while i < len(chosen) and chosen[i].start < end:
        m = chosen[i]
        lo, hi = max(start, m.start), min(end, m.end)
        if lo < hi:
            out[m.start] += hi - lo
        i += 1


@functools.lru_cache(maxsize=None)
def _return_mask():
    """The categories to ask for: PAGE_IS_GUARD only where the kernel knows it
    (6.14+; an unknown category is EINVAL)."""
    base = U.PAGE_IS_PRESENT | U.PAGE_IS_SWAPPED | U.PAGE_IS_FILE | U.PAGE_IS_PFNZERO
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        U.pagemap_scan(fd, 0, PAGE, anyof_mask=U.PAGE_IS_PRESENT,
                       return_mask=base | U.PAGE_IS_GUARD)
        return base | U.PAGE_IS_GUARD
    except OSError as err:
        if err.errno == errno.EINVAL:
            return base
        raise
    finally:
        os.close(fd)


def check_flags(early, later, *, copy):
    """Once the process runs again: check the early VmFlags of its mappings
    (early.entries) against `later`, smaps text read since.

    copy: `later` is the fork copy's, the process at the freeze but for
    FORK_DROPS and its MADV_DONTFORK mappings, which it lacks.  The copy's
    flags are taken; one of DATA_FLAGS gained since the early read raises
    FlagsChanged: the copy's bytes, or the guard pages read, are not the
    freeze's.

    Without a copy every byte was read while frozen, from the process itself,
    and `later` is the process's own smaps, read after the release: a mapping
    still there as it was whose flags differ from early's raises FlagsChanged
    (they may have changed before the freeze, and a restart gives them back:
    MADV_WIPEONFORK, MADV_DONTDUMP...).  One the process has changed since
    keeps early's flags, which it had within milliseconds of the freeze.

    Entries are compared as bytes first (thousands of mappings: the common
    case costs a dictionary lookup each)."""
    pid = early.pid
    after = {}
    for line, flags, body in procfs.smaps_entries(later):
        after[int(line[:line.index(b"-")], 16)] = (line, flags, body)
    for m in early.entries:
        line, flags = early.raw[m.start]
        got = after.get(m.start)
        if got is not None and got[0] == line and got[1] == flags:
            # as it was, but an unreadable mapping may have had a page written
            if (copy and _unreadable_private(m) and not m.anonymous
                    and procfs.smaps_anonymous(got[2])):
                raise FlagsChanged(_changed(pid, m, "pages written"))
            continue
        if got is not None and procfs.parse_maps_line(got[0]).end < m.end:
            got = None                  # not the same mapping
        if not copy:
            # (userfaultfd flags change when the dump arms tracking; `lo` was
            # checked at the freeze, against VmLck)
            if (got is not None and got[0] == line and
                    _flag_set(got[1]) - FORK_DROPS != set(m.vmflags) - FORK_DROPS):
                raise FlagsChanged(_changed(pid, m, "its VmFlags"))
            continue
        if got is None:
            if "dc" in m.vmflags:
                continue            # a fork does not copy it: stored from the process
            raise FlagsChanged(_changed(pid, m, "MADV_DONTFORK"))
        now = _flag_set(got[1])
        gained = (now - FORK_DROPS - set(m.vmflags)) & DATA_FLAGS
        if gained:
            raise FlagsChanged(_changed(pid, m, "VmFlags " + ", ".join(sorted(gained))))
        if _unreadable_private(m) and not m.anonymous and procfs.smaps_anonymous(got[2]):
            raise FlagsChanged(_changed(pid, m, "pages written"))
        m.vmflags = [f.decode() for f in got[1].split() if f.decode() not in FORK_DROPS] + [
            f for f in m.vmflags if f in FORK_DROPS]


def _flag_set(flags):
    return {f.decode() for f in flags.split()}


def _changed(pid, m, what):
    return (f"process {pid}: mapping {m.start:#x}-{m.end:#x} {m.path or '(anonymous)'} "
            f"changed ({what}) between the early read of its smaps and the freeze")
