"""Dirty tracking (dump --track, dirty.py): the kernel reports exactly the pages
written since the checkpoint, a restore compares only those and rolls back
bit-exact, and where tracking cannot be armed everything still works and says so."""

import os
import signal

import pytest

import rcore
from rcore import dirty
from rcore.elf.reader import CoreFile
from conftest import rcore_cmd, wait_lines
from test_diff import FRESH, PAGE, REGION, Changes

NPAGES = 64


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RCORE_STATE_DIR", str(tmp_path / "state"))


def written_pages(pid, start, npages):
    w = dirty.Written(pid)
    return sorted(p for s, e in w.written_in(start, start + npages * PAGE)
                  for p in range((s - start) // PAGE, (e - start) // PAGE))


def read_mem(pid, addr, n):
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        return os.pread(fd, n, addr)
    finally:
        os.close(fd)


def assert_memory_is_core(pid, core_path):
    """Every private anonymous mapping the core stores equals the core, byte for
    byte (the process is stopped), but the threads' rseq areas: the kernel
    rewrites their cpu numbers whenever a thread returns to user space, which
    the restore's injected calls make it do."""
    with CoreFile(core_path) as core:
        rseq = [(t.rseq["ptr"], t.rseq["size"]) for t in core.state.threads if t.rseq]
        checked = 0
        for m in core.state.mappings:
            if m.stored != "all" or not dirty.trackable(m):
                continue
            live, want = bytearray(read_mem(pid, m.start, m.size)), bytearray(core.read(m.start, m.size))
            for ptr, size in rseq:
                if m.start <= ptr < m.end:
                    live[ptr - m.start: ptr - m.start + size] = bytes(size)
                    want[ptr - m.start: ptr - m.start + size] = bytes(size)
            assert live == want, f"{m.start:#x}-{m.end:#x} {m.path} differs from the core"
            checked += 1
        assert checked >= 4


@pytest.fixture
def tracked(procs, build, tmp_path):
    prog = Changes(procs, build, tmp_path)
    core = tmp_path / "t.core"
    s = rcore.dump(prog.pid, str(core), track=True)
    assert s.tracking.startswith("dirty tracking armed"), s.tracking
    return prog, str(core)


def test_tracking_reports_exactly_the_written_pages(tracked):
    prog, core = tracked
    assert written_pages(prog.pid, REGION, NPAGES) == []
    prog.ask("w 4 1 5 7 63")
    assert written_pages(prog.pid, REGION, NPAGES) == [1, 5, 7, 63]
    prog.ask("z 20")              # MADV_DONTNEED: its contents changed (to zeros)
    assert written_pages(prog.pid, REGION, NPAGES) == [1, 5, 7, 20, 63]
    prog.ask("c")                 # pages 3 and 10, and FRESH mapped since
    assert written_pages(prog.pid, REGION, NPAGES) == [1, 3, 5, 7, 10, 20, 63]
    assert dirty.Written(prog.pid).split(FRESH, FRESH + 2 * PAGE) == \
        [(FRESH, FRESH + 2 * PAGE, False)]


def test_restore_with_tracking_is_bit_exact(tracked):
    prog, core = tracked
    want = prog.ask("s")
    prog.ask("w 4 1 5 7 63")
    prog.ask("z 20")
    s = rcore.restore(prog.pid, core, stop=True)
    try:
        assert s.tracking.startswith("only pages written since the checkpoint compared")
        assert "re-armed" in s.tracking
        # the 64-page region alone is 256 KiB: far less was compared
        assert s.bytes_compared < 32 * PAGE
        assert_memory_is_core(prog.pid, core)
    finally:
        os.kill(prog.pid, signal.SIGCONT)
    assert prog.ask("s") == want
    # re-armed: the rollback's own writes are not reported, the program's are
    prog.ask("w 2 30 31")
    assert written_pages(prog.pid, REGION, NPAGES) == [30, 31]
    s = rcore.restore(prog.pid, core, stop=True)
    try:
        assert s.tracking.startswith("only pages written")
        assert_memory_is_core(prog.pid, core)
    finally:
        os.kill(prog.pid, signal.SIGCONT)
    assert prog.ask("s") == want


def test_tracking_descriptor_is_rcores_own(tracked, tmp_path):
    prog, core = tracked
    (fd,) = dirty.own_fds(prog.pid)
    assert os.readlink(f"/proc/{prog.pid}/fd/{fd}") == "anon_inode:[userfaultfd]"
    later = tmp_path / "later.core"
    rcore.dump(prog.pid, str(later))
    with CoreFile(str(later)) as c:
        assert fd not in [f.fd for f in c.state.files]
    rcore.restore(prog.pid, core)
    assert os.readlink(f"/proc/{prog.pid}/fd/{fd}") == "anon_inode:[userfaultfd]"


def test_restore_of_another_core_compares_everything(tracked, tmp_path):
    prog, core = tracked
    want = prog.ask("s")
    other = tmp_path / "other.core"
    rcore.dump(prog.pid, str(other))          # not --track: the baseline stays `core`
    prog.ask("w 3 2 4 6")
    s = rcore.restore(prog.pid, str(other))
    assert "armed relative to another checkpoint" in s.tracking
    assert s.bytes_compared >= NPAGES * PAGE
    assert prog.ask("s") == want
    # that restore re-armed tracking relative to `other`
    prog.ask("w 1 9")
    s = rcore.restore(prog.pid, str(other))
    assert s.tracking.startswith("only pages written")
    assert prog.ask("s") == want


def test_tracking_unavailable_under_seccomp_falls_back(procs, build, tmp_path):
    p = procs.start([build("seccomp_deny"), "userfaultfd", "4"])
    _, addr, size = wait_lines(p.out_path, 1)[0].split()
    addr = int(addr, 16)
    core = tmp_path / "s.core"
    s = rcore.dump(p.pid, str(core), track=True)
    assert "seccomp" in s.tracking and "armed" not in s.tracking
    assert not dirty.own_fds(p.pid)
    fd = os.open(f"/proc/{p.pid}/mem", os.O_RDWR)
    try:
        before = os.pread(fd, 8 * PAGE, addr)
        os.pwrite(fd, b"\xff" * 3 * PAGE, addr + PAGE)
        s = rcore.restore(p.pid, str(core))
        assert s.tracking == "" and s.bytes_written >= 3 * PAGE
        assert os.pread(fd, 8 * PAGE, addr) == before
    finally:
        os.close(fd)


def test_cli_track_and_restore(procs, build, tmp_path):
    prog = Changes(procs, build, tmp_path)
    want = prog.ask("s")
    core = tmp_path / "c.core"
    r = rcore_cmd("dump", prog.pid, "-o", core, "--track")
    assert r.returncode == 0, r.stderr
    assert "dirty tracking armed (userfaultfd at fd" in r.stdout
    prog.ask("w 2 8 9")
    r = rcore_cmd("restore", prog.pid, core)
    assert r.returncode == 0, r.stderr
    assert "only pages written since the checkpoint compared (dirty tracking)" in r.stdout
    assert prog.ask("s") == want
