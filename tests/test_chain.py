"""Incremental checkpoints (dump --incremental, chain.py): the core stores only the
pages written since its parent, names the parent, and reads as a whole through
the chain for info, flatten, diff, restore and restart."""

import os
import signal
import subprocess
import time

import pytest

import rcore
from rcore.diff import diff
from rcore.elf.reader import CoreFile
from rcore.errors import CoreFormatError
from rcore.rebuild import CoreBytes
from conftest import rcore_cmd
from test_diff import PAGE, REGION, Changes
from test_dirty import assert_memory_is_core, state_dir  # noqa: F401  (autouse fixture)

NPAGES = 64


@pytest.fixture
def chain(procs, build, tmp_path):
    """A: full with tracking; B: pages 1, 5, 7 of REGION written since A; C: page 11
    written since B."""
    prog = Changes(procs, build, tmp_path)
    # On one CPU: the kernel rewrites the rseq area's cpu_id whenever the thread
    # comes back to user space (after each dump's injected calls too), so two
    # dumps of an idle program differ there if it moved between CPUs.
    os.sched_setaffinity(prog.pid, {min(os.sched_getaffinity(0))})
    a, b, c = (str(tmp_path / f"{x}.core") for x in "abc")
    rcore.dump(prog.pid, a, track=True)
    prog.ask("w 3 1 5 7")
    prog.sums = {"b": prog.ask("s")}
    sb = rcore.dump(prog.pid, b, incremental=a)
    prog.ask("w 1 11")
    prog.sums["c"] = prog.ask("s")
    sc = rcore.dump(prog.pid, c, incremental=b)
    prog.summaries = (sb, sc)
    return prog, a, b, c


def region_segments(path):
    with CoreFile(path, resolve=False) as core:
        return [((s.vaddr - REGION) // PAGE, s.memsz // PAGE, s.filesz // PAGE)
                for s in core.segments if REGION <= s.vaddr < REGION + NPAGES * PAGE]


def test_increment_stores_only_written_pages_and_names_its_parent(chain):
    prog, a, b, c = chain
    assert "dirty tracking armed" in prog.summaries[0].tracking
    # REGION in B: only its written pages, each run a PT_LOAD of its own
    assert region_segments(b) == [(1, 1, 1), (5, 1, 1), (7, 1, 1)]
    assert region_segments(c) == [(11, 1, 1)]
    with CoreFile(b, resolve=False) as core:
        assert core.parent["path"] == a
        region = next(m for m in core.state.mappings if m.start == REGION)
        assert region.stored == "incremental"
    assert os.stat(b).st_blocks * 512 < os.stat(a).st_blocks * 512 / 2


def test_info_shows_the_chain(chain):
    prog, a, b, c = chain
    r = rcore_cmd("info", c)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    i = lines.index("parent:   incremental checkpoint: memory not stored here comes from")
    assert lines[i + 1:i + 3] == [f"  {b} (incremental)", f"  {a} (full)"]


def test_flatten_equals_a_full_dump_of_the_same_instant(chain, tmp_path):
    prog, a, b, c = chain
    flat, full = str(tmp_path / "flat.core"), str(tmp_path / "full.core")
    r = rcore_cmd("flatten", c, "-o", flat)
    assert r.returncode == 0, r.stderr
    rcore.dump(prog.pid, full)          # the program has not run since C
    with CoreFile(flat) as core:
        assert core.parent is None
    d = diff(flat, full)
    assert d["memory"] == [] and all(not v for v in d["mappings"].values())
    # and reading C through its chain gives the same
    assert diff(c, full)["memory"] == []


def test_gdb_reads_unchanged_memory_of_an_increment_as_unavailable(chain, build):
    prog, a, b, c = chain
    r = subprocess.run(["gdb", "-batch", "-nx", "-ex", f"x/1xb {REGION:#x}",
                        "-ex", f"x/1xb {REGION + 11 * PAGE:#x}", build("changes"), c],
                       capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert f"Cannot access memory at address {REGION:#x}" in out
    assert f"{REGION + 11 * PAGE:#x}:\t0x" in out


def test_restore_and_restart_read_through_the_chain(chain, procs, tmp_path):
    prog, a, b, c = chain
    prog.ask("w 3 2 3 4")
    s = rcore.restore(prog.pid, b, stop=True)
    try:
        assert_memory_is_core(prog.pid, b)
    finally:
        os.kill(prog.pid, signal.SIGCONT)
    assert prog.ask("s") == prog.sums["b"]
    # C's tracking baseline was replaced by the restore of B: C is compared whole
    s = rcore.restore(prog.pid, c)
    assert "another checkpoint" in s.tracking
    assert prog.ask("s") == prog.sums["c"]
    # restart from the newest increment: memory as at C
    rcore.dump(prog.pid, str(tmp_path / "unused.core"), kill=True)
    prog.p.wait(timeout=10)
    cmds = tmp_path / "cmds"
    cmds.write_bytes(b"s\n")
    out = tmp_path / "restarted.out"
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{prog.pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    h = rcore.restart(c, stdin=str(cmds), stdout=str(out), any_pid=True)
    procs.adopt(h.pid)
    assert h.wait() == 0
    assert out.read_text().split() == [prog.sums["c"]]


def _open_deleted_files(directory):
    """Files under directory this process holds open though they were unlinked."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith(" (deleted)") and target.startswith(str(directory)):
            out.append(target)
    return out


def test_chain_read_in_place_without_a_flattened_copy(chain, tmp_path):
    """Opening an increment reads its pages from the cores of its chain: no
    standalone copy is written (it was an unlinked temporary file), and the
    memory read equals that of `rcore flatten`'s core."""
    prog, a, b, c = chain
    flat = str(tmp_path / "flat.core")
    with CoreFile(c, resolve=False) as core:
        from rcore.chain import flatten
        flatten(core, flat)
    before = sorted(os.listdir(tmp_path))
    with CoreFile(c) as core, CoreFile(flat) as whole:
        assert core.resolved and _open_deleted_files(tmp_path) == []
        assert sorted(os.listdir(tmp_path)) == before
        assert [(s.vaddr, s.memsz, s.filesz) for s in core.segments] == \
            [(s.vaddr, s.memsz, s.filesz) for s in whole.segments]
        for seg in whole.segments:
            if seg.filesz:
                assert core.read(seg.vaddr, seg.filesz) == whole.read(seg.vaddr, seg.filesz)
    # a mapping the increment stores itself reads as in its own file, extent by
    # extent (its holes, e.g. pages past the end of a file, stay holes)
    with CoreFile(c) as core, CoreFile(c, resolve=False) as own:
        for seg in own.segments:
            m = next(m for m in own.state.mappings if m.start <= seg.vaddr < m.end)
            if seg.filesz and m.stored != "incremental":
                via = core.stored_range(seg.vaddr)[0]
                chained = [(off - via, n, has) for off, n, has in
                           CoreBytes(core).extents(via, seg.filesz, True)]
                direct = [(off - seg.offset, n, has) for off, n, has in
                          CoreBytes(own).extents(seg.offset, seg.filesz, True)]
                assert chained == direct


def test_replaced_parent_is_refused(chain, tmp_path):
    prog, a, b, c = chain
    rcore.dump(prog.pid, a)            # another checkpoint under the parent's name
    with pytest.raises(CoreFormatError, match="replaced"):
        CoreFile(c)
    r = rcore_cmd("info", c)
    assert "was replaced" in r.stdout


def test_incremental_without_tracking_writes_a_full_core(procs, build, tmp_path):
    prog = Changes(procs, build, tmp_path)
    a, b = str(tmp_path / "a.core"), str(tmp_path / "b.core")
    rcore.dump(prog.pid, a)
    s = rcore.dump(prog.pid, b, incremental=a)
    assert s.tracking.startswith(f"full dump: dirty tracking is not armed relative to {a}")
    with CoreFile(b) as core:
        assert core.parent is None
