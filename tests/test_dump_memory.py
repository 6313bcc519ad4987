"""The memory part of a dump: which pages are holes, and the parallel copy path.

A dump must hold exactly the process's memory (compared with /proc/PID/mem), with
never-touched and all-zero pages left as holes in the sparse core."""

import errno
import os
import random
import threading
import time

import pytest

from conftest import wait_lines

from rcore import memory
from rcore.dump import DENSE, SPARSE, _Copier, dump
from rcore.elf.reader import CoreFile
from rcore.errors import ProcessExited
from rcore.memory import PAGE, LiveMemory, byte_runs, nonzero_runs


def _page_by_page(buf, length):
    """nonzero_runs, the obvious way."""
    runs, start = [], None
    for off in range(0, length, PAGE):
        zero = not any(buf[off:off + PAGE])
        if not zero and start is None:
            start = off
        elif zero and start is not None:
            runs.append((start, off - start))
            start = None
    if start is not None:
        runs.append((start, length - start))
    return runs


def _random_pages(rng, npages):
    """Pages of every kind nonzero_runs must tell apart."""
    buf = bytearray()
    for _ in range(npages):
        kind = rng.randrange(6)
        page = bytearray(PAGE)
        if kind == 1:
            page[:] = rng.randbytes(PAGE)
        elif kind == 2:                       # one byte anywhere
            page[rng.randrange(PAGE)] = rng.randrange(1, 256)
        elif kind == 3:                       # data, but zero first 8 bytes
            page[8:] = rng.randbytes(PAGE - 8)
            page[8] |= 1
        elif kind == 4:                       # zeros across a page boundary
            page[: PAGE // 2] = rng.randbytes(PAGE // 2)
            page[0] |= 1
        buf += page
    return buf


def test_nonzero_runs_finds_exactly_the_zero_pages():
    rng = random.Random(2)
    for _ in range(200):
        npages = rng.randrange(0, 30)
        buf = _random_pages(rng, npages) + rng.randbytes(PAGE)   # beyond length: ignored
        length = npages * PAGE
        assert nonzero_runs(buf, length) == _page_by_page(buf, length)


def test_nonzero_runs_edge_cases():
    assert nonzero_runs(bytearray(4 * PAGE), 4 * PAGE) == []
    assert nonzero_runs(bytearray(PAGE), 0) == []
    data = bytearray(os.urandom(4 * PAGE))
    data[0] |= 1
    assert nonzero_runs(data, 4 * PAGE) == [(0, 4 * PAGE)]
    data[PAGE:2 * PAGE] = bytes(PAGE)           # a zero page in the middle
    assert nonzero_runs(data, 4 * PAGE) == [(0, PAGE), (2 * PAGE, 2 * PAGE)]


def test_byte_runs():
    assert byte_runs(b"") == []
    assert byte_runs(b"\0\1\1\0\1") == [(1, 2), (4, 1)]
    assert byte_runs(b"\1\1") == [(0, 2)]
    assert byte_runs(b"\0\0") == []


class _FakeMemory:
    """A process memory made of `data` at `base`, for _Copier alone."""

    def __init__(self, base, data, unreadable_from=None):
        self.base, self.data = base, data
        self.unreadable_from = unreadable_from
        self.threads = set()

    def readinto(self, buf, addr, length):
        self.threads.add(threading.get_ident())
        time.sleep(0.002)             # as a read would, let the other workers in
        off = addr - self.base
        end = off + length
        if self.unreadable_from is not None:
            end = min(end, max(off, self.unreadable_from))
        buf[: end - off] = self.data[off:end]
        return end - off

    def iter_populated_runs(self, start, end):
        # As in a windowed pagemap read: one run cut where a window ends, off-chunk.
        cut = start + memory.CHUNK + 3 * PAGE
        if cut < end:
            yield start, cut - start
            start = cut
        yield start, end - start


class _FakeWriter:
    def __init__(self, size, fail_at=None):
        self.out = bytearray(size)
        self.written = bytearray(size // PAGE)        # 1 per page written
        self.fail_at = fail_at

    def data_offset(self, mapping, addr):
        return addr - mapping.start

    def pwrite(self, data, offset):
        if self.fail_at is not None and offset <= self.fail_at < offset + len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        self.out[offset:offset + len(data)] = data
        for page in range(offset // PAGE, (offset + len(data)) // PAGE):
            self.written[page] = 1


class _Mapping:
    def __init__(self, start, size, anonymous=0):
        self.start, self.end, self.size = start, start + size, size
        self.anonymous = anonymous          # smaps Anonymous: 0, so pagemap is asked


@pytest.mark.parametrize("how", [DENSE, SPARSE])
def test_copier_writes_every_nonzero_page_once_and_no_zero_page(how):
    rng = random.Random(7)
    npages = 3 * (memory.CHUNK // PAGE) + 5       # several chunks, a partial one last
    data = _random_pages(rng, npages)
    base = 0x7F0000000000
    mem = _FakeMemory(base, data)
    writer = _FakeWriter(len(data))
    copier = _Copier(writer, workers=3)
    copier.copy(mem, [(_Mapping(base, len(data)), how)])
    assert writer.out == data
    for page in range(npages):
        chunk = data[page * PAGE:(page + 1) * PAGE]
        assert writer.written[page] == (1 if any(chunk) else 0), page
    assert copier.stored == sum(writer.written) * PAGE
    assert copier.done == len(data)
    assert len(mem.threads) > 1                   # the work was shared


def test_copier_zero_fills_from_an_unreadable_page():
    base, npages = 0x10000, 8
    data = bytearray(b"\x11" * npages * PAGE)
    mem = _FakeMemory(base, data, unreadable_from=3 * PAGE)
    writer = _FakeWriter(len(data))
    _Copier(writer, workers=2).copy(mem, [(_Mapping(base, len(data)), DENSE)])
    assert writer.out[:3 * PAGE] == data[:3 * PAGE]
    assert not any(writer.out[3 * PAGE:]) and not any(writer.written[3:])


def test_copier_reports_a_write_error():
    base = 0x10000
    data = bytearray(b"\x22" * 4 * memory.CHUNK)
    writer = _FakeWriter(len(data), fail_at=2 * memory.CHUNK + PAGE)
    with pytest.raises(OSError) as err:
        _Copier(writer, workers=2).copy(_FakeMemory(base, data),
                                        [(_Mapping(base, len(data)), DENSE)])
    assert err.value.errno == errno.ENOSPC


def test_copier_reports_a_read_error():
    class Gone(_FakeMemory):
        def readinto(self, buf, addr, length):
            if addr - self.base >= memory.CHUNK:
                raise ProcessExited(1)
            return super().readinto(buf, addr, length)
    base = 0x10000
    data = bytearray(b"\x33" * 4 * memory.CHUNK)
    with pytest.raises(ProcessExited):
        _Copier(_FakeWriter(len(data)), workers=2).copy(
            Gone(base, data), [(_Mapping(base, len(data)), DENSE)])


# --- against a live process -----------------------------------------------------------

def _start_pattern(build, procs, tmp_path):
    p = procs.start([build("mem_pattern"), str(tmp_path / "mapped")])
    lines = wait_lines(p.out_path, 6)
    addrs = {}
    for line in lines[:5]:
        name, addr, *rest = line.split()
        addrs[name] = (int(addr, 16), int(rest[0]) if rest else None)
    return p, addrs


def _live_page(memfd, addr):
    """The page at addr read through /proc/PID/mem, None where it cannot be read."""
    try:
        return os.pread(memfd, PAGE, addr)
    except OSError:
        return None


def _masked(page, addr, skip):
    """page with the bytes of the (address, size) ranges in skip zeroed."""
    page = bytearray(page)
    for start, size in skip:
        lo, hi = max(start, addr), min(start + size, addr + PAGE)
        if lo < hi:
            page[lo - addr:hi - addr] = bytes(hi - lo)
    return bytes(page)


def _is_hole(fd, offset):
    return os.lseek(fd, offset, os.SEEK_HOLE) == offset


@pytest.mark.parametrize("fork,stream,method", [
    (True, True, "stream"), (True, False, "read"), (False, True, "frozen")],
    ids=["copy-streams", "copy-read", "no-fork"])
def test_dump_holds_the_process_memory_with_zero_pages_as_holes(build, procs, tmp_path, fork,
                                                                 stream, method):
    p, addrs = _start_pattern(build, procs, tmp_path)
    path = str(tmp_path / "core")
    summary = dump(p.pid, path, fork=fork, stream=stream)
    assert p.poll() is None
    assert summary.copy_method == method
    memfd = os.open(f"/proc/{p.pid}/mem", os.O_RDONLY)
    with CoreFile(path) as core:
        stored = [m for m in core.state.mappings if m.stored == "all"]
        # Every stored page equals the live page (unreadable ones are zero), but for
        # the rseq areas: the kernel updates them whenever the thread runs.
        rseq = [(t.rseq["ptr"], t.rseq["size"]) for t in core.state.threads if t.rseq]
        for m in stored:
            for addr in range(m.start, m.end, PAGE):
                live = _live_page(memfd, addr)
                live = bytes(PAGE) if live is None else live
                assert _masked(core.read(addr, PAGE), addr, rseq) == _masked(live, addr, rseq), \
                    f"{m.path or 'anon'} page {addr:#x}"
        # The anonymous region: exactly the untouched, zeroed and read-only pages are holes.
        anon, npages = addrs["anon"]
        assert any(m.start <= anon < m.end for m in stored)
        for i in range(npages):
            off, _ = core.stored_range(anon + i * PAGE)
            assert _is_hole(core.fileno(), off) == (i % 6 in (0, 2, 3)), f"anon page {i}"
        # The region with every page present is taken whole (no pagemap); its
        # zeroed pages are holes all the same.
        full, fullpages = addrs["full"]
        m = next(m for m in stored if m.start <= full < m.end)
        assert (m.start, m.anonymous) == (full, m.size) == (full, fullpages * PAGE)
        for i in range(fullpages):
            off, _ = core.stored_range(full + i * PAGE)
            assert _is_hole(core.fileno(), off) == (i % 5 == 0), f"full page {i}"
        # What a fork copy lacks or has zeroed was read from the target itself.
        dontfork, _ = addrs["dontfork"]
        assert core.read(dontfork, 4 * PAGE) == bytes((i * 7 + 3) & 0xFF for i in range(4 * PAGE))
        wipeonfork, _ = addrs["wipeonfork"]
        assert core.read(wipeonfork, 4 * PAGE) == bytes((i * 5 + 1) & 0xFF
                                                        for i in range(4 * PAGE))
        # The private file mapping: the written page stored, the pages past the end
        # of the file (which cannot be read) stored as holes.
        file_addr, _ = addrs["file"]
        assert core.read(file_addr, 29) == b"written-to private file page\0"
        for i in (1, 2):
            assert _live_page(memfd, file_addr + i * PAGE) is None
            off, _ = core.stored_range(file_addr + i * PAGE)
            assert _is_hole(core.fileno(), off)
    os.close(memfd)
    written = sum(1 for i in range(npages) if i % 6 in (1, 4, 5)) * PAGE
    assert summary.bytes_stored >= written
    assert os.stat(path).st_blocks * 512 < summary.file_size


def test_live_memory_reads_short_at_an_unreadable_page_and_fails_once_the_process_is_gone(
        build, procs, tmp_path):
    p, addrs = _start_pattern(build, procs, tmp_path)
    file_addr, _ = addrs["file"]
    mem = LiveMemory(p.pid)
    try:
        buf = bytearray(3 * PAGE)
        assert mem.readinto(buf, file_addr, 3 * PAGE) == PAGE      # pages 2, 3: past EOF
        assert buf[:29] == b"written-to private file page\0"
        assert mem.readinto(buf, file_addr + PAGE, PAGE) == 0
        p.kill()
        p.wait()
        with pytest.raises(ProcessExited):
            mem.readinto(buf, file_addr, PAGE)
    finally:
        mem.close()


def test_populated_runs_follow_the_pagemap(build, procs, tmp_path):
    p, addrs = _start_pattern(build, procs, tmp_path)
    anon, npages = addrs["anon"]
    mem = LiveMemory(p.pid)
    try:
        runs = mem.populated_runs(anon, anon + npages * PAGE)
        windowed = list(mem.iter_populated_runs(anon, anon + npages * PAGE, window=7 * PAGE))
    finally:
        mem.close()
    # The windowed form has the same pages, its runs cut at window ends.
    assert sorted(_pages(windowed)) == sorted(_pages(runs))
    assert all((addr - anon) // (7 * PAGE) == (addr + length - 1 - anon) // (7 * PAGE)
               for addr, length in windowed)
    present = set()
    for addr, length in runs:
        assert addr % PAGE == 0 and length % PAGE == 0 and length > 0
        present.update(range((addr - anon) // PAGE, (addr - anon + length) // PAGE))
    # Untouched pages are not present.  The read-only ones map the zero page, which
    # pagemap shows to root (page frame numbers): those hold nothing either.
    kinds = (1, 2, 4, 5) if memory.zero_page_entry() is not None else (1, 2, 3, 4, 5)
    assert present == {i for i in range(npages) if i % 6 in kinds}
    assert all(b[0] + b[1] < a[0] for a, b in zip(runs[1:], runs))     # runs are maximal


def _pages(runs):
    return [a for addr, length in runs for a in range(addr, addr + length, PAGE)]


def test_zero_page_entries_are_not_populated(monkeypatch):
    zero = (1 << 63) | 0x3B34
    monkeypatch.setattr(memory, "zero_page_entry", lambda: zero)
    present = 1 << 63
    values = [zero, present | 0x3B35, zero | (1 << 55), 0, zero, present | (0x3B34 << 8), zero]
    entries = b"".join(v.to_bytes(8, "little") for v in values)
    hits = entries[7::8].translate(memory._POPULATED)
    assert hits == b"\1\1\1\0\1\1\1"
    # Only exact zero-page entries go (one with another flag set is kept: harmless).
    assert memory._zero_page_hits(entries, hits) == b"\0\1\1\0\0\1\0"
    monkeypatch.setattr(memory, "zero_page_entry", lambda: None)
    assert memory._zero_page_hits(entries, hits) == hits
