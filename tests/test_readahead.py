"""An increment's pages read ahead of its freeze and at it (readahead.py): the
core holds the memory of the frozen instant, also for pages the program wrote
after the read-ahead, mappings made after tracking started, and when the dump
falls back to the fork copy or reads nothing ahead."""

import importlib
import os
import subprocess

import pytest

import rcore
from rcore import dirty, readahead
from rcore.diff import diff
from rcore.dump import ProcessDump
from rcore.linux import procfs
from rcore.linux.ptrace import FrozenProcess
from test_chain import region_segments
from test_diff import FRESH, PAGE, REGION, Changes
from test_dirty import state_dir  # noqa: F401  (autouse fixture)


@pytest.fixture
def prog(procs, build, tmp_path):
    prog = Changes(procs, build, tmp_path)
    # one CPU: the kernel rewrites the rseq area's cpu_id at every return to user
    # space, so two dumps of an idle program differ there if it changed CPUs
    os.sched_setaffinity(prog.pid, {min(os.sched_getaffinity(0))})
    return prog


def increment_with_writes_after_read_ahead(prog, tmp_path, monkeypatch, **options):
    """A (full, tracking armed); pages 1, 5, 7 written, FRESH mapped, then B
    incremental, with pages 5 (again) and 9 written between B's read-ahead and
    its freeze.  Returns (summary of B, B, a full core of the same instant)."""
    a, b, full = (str(tmp_path / f"{x}.core") for x in ("a", "b", "full"))
    rcore.dump(prog.pid, a, track=True)
    prog.ask("w 3 1 5 7")
    prog.ask("c")                       # pages 3 and 10; FRESH mapped since tracking began
    read_ahead = ProcessDump.read_ahead

    def then_write(self):
        read_ahead(self)
        assert sum(e - s for s, e in self.held.ahead) >= 5 * PAGE
        prog.ask("w 2 5 9")

    monkeypatch.setattr(ProcessDump, "read_ahead", then_write)
    s = rcore.dump(prog.pid, b, incremental=a, **options)
    monkeypatch.undo()
    rcore.dump(prog.pid, full)          # the program has not run since B
    return s, b, full


def assert_same_memory(b, full):
    d = diff(b, full)
    assert d["memory"] == [], d["memory"]
    assert all(not v for v in d["mappings"].values()), d["mappings"]


def test_pages_written_after_the_read_ahead_are_read_at_the_freeze(prog, tmp_path,
                                                                   monkeypatch):
    s, b, full = increment_with_writes_after_read_ahead(prog, tmp_path, monkeypatch)
    assert s.copy_method == "ahead"
    stored = [p + i for p, n, filesz in region_segments(b) if filesz for i in range(n)]
    assert stored == [1, 3, 5, 7, 9, 10]
    assert_same_memory(b, full)
    # the new mapping is stored whole, and tracked from now on
    from rcore.elf.reader import CoreFile
    with CoreFile(b, resolve=False) as core:
        fresh = next(m for m in core.state.mappings if m.start == FRESH)
        assert fresh.stored == "all"
    assert dirty.Written(prog.pid).split(FRESH, FRESH + 2 * PAGE) == \
        [(FRESH, FRESH + 2 * PAGE, True)]


def test_fork_when_reading_at_the_freeze_would_cost_more(prog, tmp_path, monkeypatch):
    monkeypatch.setattr(readahead, "frozen_read_cheaper", lambda ranges, resident: False)
    s, b, full = increment_with_writes_after_read_ahead(prog, tmp_path, monkeypatch)
    assert s.copy_method == "stream"
    assert_same_memory(b, full)


def test_no_fork_reads_the_increment_while_frozen(prog, tmp_path, monkeypatch):
    s, b, full = increment_with_writes_after_read_ahead(prog, tmp_path, monkeypatch,
                                                        fork=False)
    assert s.copy_method == "frozen"
    stored = [p + i for p, n, filesz in region_segments(b) if filesz for i in range(n)]
    assert stored == [1, 3, 5, 7, 9, 10]
    assert_same_memory(b, full)


def test_nothing_read_ahead_beyond_the_limit(prog, tmp_path, monkeypatch):
    monkeypatch.setattr(readahead, "AHEAD_LIMIT", 0)
    s, b, full = increment_with_writes_after_read_ahead(prog, tmp_path, monkeypatch)
    assert s.copy_method == "ahead"
    assert_same_memory(b, full)


def test_a_mappings_first_page_tells_whether_it_is_tracked(prog, tmp_path, monkeypatch):
    """Registration is per VMA: the one-page walk of Written.tracks_whole agrees
    with the walk of the whole address space for every mapping."""
    rcore.dump(prog.pid, str(tmp_path / "a.core"), track=True)
    prog.ask("c")                       # FRESH: mapped since, not tracked
    with FrozenProcess(prog.pid):
        maps = [m for m in procfs.read_maps(prog.pid) if m.end <= dirty.USER_SPACE_END]
        whole = dirty.Written(prog.pid)
        want = [whole.split(m.start, m.end) == [(m.start, m.end, True)] for m in maps]
        assert dirty.Written(prog.pid).tracks_whole(maps) == want
        monkeypatch.setattr(dirty, "PROBES", 1)      # many mappings: one whole walk
        assert dirty.Written(prog.pid).tracks_whole(maps) == want
    tracked = {m.start for m, t in zip(maps, want) if t}
    assert REGION in tracked and FRESH not in tracked


def test_frozen_read_estimate():
    # a few pages cost less than forking 1 GiB; as many as the process holds do not
    gib = (1 << 30) // PAGE
    assert readahead.frozen_read_cheaper([(REGION, REGION + 100 * PAGE)], gib)
    assert not readahead.frozen_read_cheaper(
        [(REGION + 2 * i * PAGE, REGION + (2 * i + 1) * PAGE) for i in range(gib // 4)], gib)


def test_pages_process_vm_readv_refuses_are_read_through_proc_mem(procs, build):
    """PROT_NONE pages (written, then protected) fail process_vm_readv; the held
    pages read them through /proc/PID/mem, and an unmapped range is either
    zeros (at the freeze, as the copier stores it) or left unread (ahead)."""
    p = procs.start([build("prot_none"), "30"], stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    maps = procfs.read_maps(p.pid)
    none = next(m for m in maps if m.perms == "---p" and m.size == 3 * PAGE and not m.inode)
    stack = next(m for m in maps if m.path == "[stack]")
    hole = none.end + 64 * PAGE
    assert not any(m.start < hole + PAGE and m.end > hole for m in maps)
    ranges = [(none.start, none.end), (stack.end - PAGE, stack.end)]
    with FrozenProcess(p.pid):
        held = readahead.HeldPages(p.pid, ranges + [(hole, hole + PAGE)])
        held.read_ahead()
        assert held.unread == [(hole, hole + PAGE)]
        frozen = readahead.HeldPages(p.pid)
        frozen.read_frozen(sorted(ranges + [(hole, hole + PAGE)]))
        with open(f"/proc/{p.pid}/mem", "rb", buffering=0) as mem:
            for start, end in ranges:
                want = os.pread(mem.fileno(), end - start, start)
                for h in (held, frozen):
                    buf = bytearray(end - start)
                    h.readinto(buf, start, end - start)
                    assert buf == want
        assert want and want != bytes(len(want))
        buf = bytearray(PAGE)
        frozen.readinto(buf, hole, PAGE)
        assert buf == bytes(PAGE)
        data = bytearray(2 * PAGE)
        held.readinto(data, none.start, 2 * PAGE)
        assert data == bytes((i * 7 + 3) & 0xff for i in range(2 * PAGE))


def test_fork_refused_reads_at_the_freeze(prog, tmp_path, monkeypatch):
    """A process that may not map the fork's code (dump._fork_copy gives None)
    is read while frozen, by a full dump and by an increment that would fork."""
    dump_module = importlib.import_module("rcore.dump")
    monkeypatch.setattr(dump_module, "_fork_copy", lambda frozen, addr, safe: None)
    monkeypatch.setattr(readahead, "frozen_read_cheaper", lambda ranges, resident: False)
    s = rcore.dump(prog.pid, str(tmp_path / "first.core"))
    assert s.copy_method == "frozen"
    s, b, full = increment_with_writes_after_read_ahead(prog, tmp_path, monkeypatch)
    assert s.copy_method == "frozen"
    assert_same_memory(b, full)
