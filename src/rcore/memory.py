"""Reading a live process's memory fast, and knowing which pages hold anything.

process_vm_readv with large iovecs reads at several GB/s; /proc/PID/pagemap tells
which pages are present or swapped and which are page-cache (file) pages."""

import array
import os

from . import arch
from .linux import libc, procfs

ARCH = arch.host()
PAGE = ARCH.PAGE_SIZE
ZERO_PAGE = bytes(PAGE)
CHUNK = 8 << 20


class LiveMemory:
    def __init__(self, pid):
        self.pid = pid
        self._pagemap = None

    def close(self):
        if self._pagemap is not None:
            os.close(self._pagemap)
            self._pagemap = None

    def readinto(self, buf, addr, length):
        """Fill buf[:length] from addr; returns bytes read (short at an unreadable page)."""
        return libc.process_vm_readv(self.pid, [(libc.buffer_address(buf), length)],
                                     [(addr, length)])

    def read(self, addr, length):
        return libc.read_memory(self.pid, addr, length)

    def pagemap(self, start, end):
        """The pagemap entries (u64 each) of the pages in [start, end)."""
        if self._pagemap is None:
            self._pagemap = procfs.open_pagemap(self.pid)
        count = (end - start) // PAGE
        data = os.pread(self._pagemap, count * 8, (start // PAGE) * 8)
        entries = array.array("Q")
        entries.frombytes(data)
        return entries

    def populated_runs(self, start, end, private_only=False):
        """[(addr, length)] of pages that hold data: present or swapped.  With
        private_only, pages still shared with the page cache (unmodified file
        pages) are left out."""
        runs = []
        entries = self.pagemap(start, end)
        run_start = None
        want = procfs.PM_PRESENT | procfs.PM_SWAP
        for i, e in enumerate(entries):
            hit = bool(e & want) and not (private_only and e & procfs.PM_FILE)
            if hit and run_start is None:
                run_start = i
            elif not hit and run_start is not None:
                runs.append((start + run_start * PAGE, (i - run_start) * PAGE))
                run_start = None
        if run_start is not None:
            runs.append((start + run_start * PAGE, (len(entries) - run_start) * PAGE))
        return runs


def nonzero_runs(buf, length):
    """[(offset, length)] of the parts of buf[:length] that are not whole zero pages.
    bytearray.find skips over data without zeros at memchr-like speed."""
    runs, pos, run_start = [], 0, 0
    while True:
        i = buf.find(ZERO_PAGE, pos, length)
        if i < 0:
            break
        p = -(-i // PAGE) * PAGE          # the first page boundary at or after i
        if p + PAGE > length:
            break
        if buf.startswith(ZERO_PAGE, p):
            if p > run_start:
                runs.append((run_start, p - run_start))
            run_start = p + PAGE
        pos = p + PAGE if buf.startswith(ZERO_PAGE, p) else p + 1
    if length > run_start:
        runs.append((run_start, length - run_start))
    return runs
