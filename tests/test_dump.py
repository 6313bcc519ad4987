"""rcore dump of a live two-thread C program, checked with the real readers:
gdb, eu-stack, eu-readelf, pyelftools, and against gdb's own gcore."""

import os
import re
import signal
import stat
import struct
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

import rcore
from conftest import children, proc_status, rcore_cmd, wait_for, wait_lines
from rcore.elf.reader import CoreFile


@pytest.fixture
def target(build, procs):
    exe = build("dump_threads")
    p = procs.start([exe])
    wait_lines(p.out_path, 1)
    p.exe = exe
    return p


@pytest.fixture
def core(target, tmp_path):
    path = tmp_path / "t.core"
    r = rcore_cmd("dump", target.pid, "-o", path)
    assert r.returncode == 0, r.stderr
    return str(path)


def gdb_batch(exe, core, *cmds):
    args = ["gdb", "-nx", "-batch", "-ex", "set pagination off"]
    for c in cmds:
        args += ["-ex", c]
    r = subprocess.run(args + [exe, core], capture_output=True, text=True, timeout=120)
    return r.stdout + r.stderr


def test_target_runs_on_untraced(target, core):
    st = proc_status(target.pid)
    assert st["TracerPid"] == "0"
    assert st["State"][0] in "SR"
    # no child left behind: the copy rcore read memory from was reaped
    assert children(target.pid) == []


def test_core_file_mode_and_no_leftovers(core, tmp_path):
    assert stat.S_IMODE(os.stat(core).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["out.0", "t.core"]


def test_gdb_reads_globals_heap_threads_and_frames(target, core):
    out = gdb_batch(target.exe, core, "p g_counter", "p g_heap_str", "info threads",
                    "thread apply all bt", "thread 1", "frame function main", "p main_local")
    assert "= 4242" in out
    assert '"heap string for gdb"' in out
    assert len(re.findall(r"^\*?\s+\d+\s+Thread ", out, re.M)) == 2
    assert re.search(r" in worker \(", out), out
    assert re.search(r" in main \(", out), out
    assert "= 31337" in out
    assert "Cannot access memory" not in out


def test_eu_stack_unwinds_every_thread(target, core):
    r = subprocess.run(["eu-stack", "-e", target.exe, "--core", core], capture_output=True,
                       text=True, timeout=60)
    tids = sorted(int(t) for t in os.listdir(f"/proc/{target.pid}/task"))
    for tid in tids:
        assert f"TID {tid}:" in r.stdout
    assert re.search(r"\bworker\b", r.stdout) and re.search(r"\bmain\b", r.stdout), r.stdout


def test_eu_readelf_decodes_standard_notes(core):
    r = subprocess.run(["eu-readelf", "-n", core], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    kinds = re.findall(r"^\s+(CORE|LINUX|RCORE)\s+\d+\s+(\S+)", r.stdout, re.M)
    names = [k for _, k in kinds]
    assert names.count("PRSTATUS") == 2
    assert names.count("FPREGSET") == 2
    assert names.count("X86_XSTATE") == 2
    for n in ("PRPSINFO", "SIGINFO", "AUXV", "FILE"):
        assert names.count(n) == 1
    # the kernel's order: first thread's PRSTATUS, then the process notes
    assert names[:5] == ["PRSTATUS", "PRPSINFO", "SIGINFO", "AUXV", "FILE"]
    assert "invalid" not in r.stdout.lower() and not r.stderr


def test_pyelftools_iterates_notes_and_segments(core, target):
    with open(core, "rb") as f:
        elf = ELFFile(f)
        assert elf.header.e_type == "ET_CORE"
        loads = [s for s in elf.iter_segments() if s.header.p_type == "PT_LOAD"]
        notes = [n for s in elf.iter_segments() if s.header.p_type == "PT_NOTE"
                 for n in s.iter_notes()]
        assert all(s.header.p_offset % 4096 == 0 for s in loads if s.header.p_filesz)
        assert all(s.header.p_align == 4096 for s in loads)
        # big segments (the 8 MiB thread stack) start where their address would in a
        # 2 MiB-aligned file, so that the page cache takes them in large folios
        big = [s.header for s in loads if s.header.p_filesz >= 2 << 20]
        assert big and all(h.p_offset % (2 << 20) == h.p_vaddr % (2 << 20) for h in big)
        # the notes follow the data: they are encoded after the target is released
        note_seg = next(s.header for s in elf.iter_segments() if s.header.p_type == "PT_NOTE")
        assert all(note_seg.p_offset >= s.header.p_offset + s.header.p_filesz for s in loads)
        assert note_seg.p_offset + note_seg.p_filesz == os.path.getsize(core)
        prstatus = [n for n in notes if n.n_type == "NT_PRSTATUS"]
        # pyelftools leaves NT_PRSTATUS raw: pr_pid is at offset 32 (struct elf_prstatus)
        assert sorted(struct.unpack_from("<i", n.n_desc, 32)[0] for n in prstatus) == sorted(
            int(t) for t in os.listdir(f"/proc/{target.pid}/task"))
        assert any(n.n_name == "RCORE" for n in notes)
        files = [n for n in notes if n.n_type == "NT_FILE"][0]
        assert target.exe in [x.decode() if isinstance(x, bytes) else x
                              for x in files.n_desc.filename]


def test_core_is_sparse(core):
    st = os.stat(core)
    # the 8 MiB thread stack and the heap are mostly untouched: holes, not zeros
    assert st.st_blocks * 512 < st.st_size / 2


def test_rcore_notes_hold_kernel_state(core, target):
    with CoreFile(core) as c:
        s = c.state
        assert c.has_rcore
        assert s.pid == target.pid and s.exe.path == target.exe
        assert s.exe.build_id and len(s.exe.build_id) == 40
        assert s.mm.brk >= s.mm.start_brk > 0
        assert [t.tid for t in s.threads][0] == target.pid
        assert all(t.rseq.get("size") for t in s.threads)       # glibc 2.35+ registers rseq
        assert all(t.clear_child_tid for t in s.threads)
        assert {f.fd for f in s.files} >= {0, 1, 2}
        assert s.files[2].description == 1          # stdout and stderr: one description
        assert len(s.sigactions) == 62
        assert s.state in "SR"


def test_same_registers_and_memory_as_gdb_gcore(target, tmp_path):
    """Both dumps of the same stopped process: equal registers, and every region gcore
    writes is either stored by rcore with identical bytes or re-readable from its file."""
    os.kill(target.pid, signal.SIGSTOP)
    wait_for(lambda: proc_status(target.pid)["State"][0] == "T", what="stopped")
    gc = tmp_path / "g.core"
    subprocess.run(["gdb", "-nx", "-batch", "-p", str(target.pid), "-ex", f"gcore {gc}"],
                   capture_output=True, timeout=120, check=True)
    assert proc_status(target.pid)["State"][0] == "T"
    rc = tmp_path / "r.core"
    assert rcore_cmd("dump", target.pid, "-o", rc).returncode == 0
    assert proc_status(target.pid)["State"][0] == "T"     # a stopped process stays stopped
    with CoreFile(str(rc)) as r, CoreFile(str(gc)) as g:
        gregs = {t.tid: t.regs for t in g.state.threads}
        rregs = {t.tid: t.regs for t in r.state.threads}
        assert gregs.keys() == rregs.keys()
        for tid in gregs:
            assert rregs[tid] == gregs[tid], tid
        files = {m.start: m for m in r.state.mappings}
        checked = 0
        for seg in g.segments:
            if not seg.filesz or seg.vaddr >= 0xffffffffff600000:
                continue
            gdata = g.read(seg.vaddr, seg.filesz)
            m = files[seg.vaddr]
            if r.stored_range(seg.vaddr) and m.stored == "all":
                assert r.read(seg.vaddr, seg.filesz) == gdata, hex(seg.vaddr)
            elif m.perms[0] != "r":
                assert gdata == bytes(len(gdata))   # gcore writes zeros for a guard page
            else:
                assert m.file_backed, (m, seg.filesz)
                with open(m.path, "rb") as f:
                    f.seek(m.offset)
                    assert f.read(seg.filesz) == gdata, (hex(seg.vaddr), m.path)
            checked += 1
        assert checked >= 5
    os.kill(target.pid, signal.SIGCONT)


def test_stop_leaves_process_stopped_untraced(target, tmp_path):
    r = rcore_cmd("dump", "--stop", target.pid, "-o", tmp_path / "c")
    assert r.returncode == 0, r.stderr
    st = wait_for(lambda: (lambda s: s if s["State"][0] == "T" else None)(proc_status(target.pid)))
    assert st["TracerPid"] == "0"
    os.kill(target.pid, signal.SIGCONT)
    wait_for(lambda: proc_status(target.pid)["State"][0] in "SR", what="continued")


def test_kill_after_complete_dump(target, tmp_path):
    r = rcore_cmd("dump", "--kill", target.pid, "-o", tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert target.wait(timeout=10) == -signal.SIGKILL
    with CoreFile(str(tmp_path / "c")) as c:
        assert c.state.pid == target.pid


def test_info_text_and_json(core, target):
    r = rcore_cmd("info", core)
    assert r.returncode == 0
    assert f"pid:      {target.pid}" in r.stdout and target.exe in r.stdout
    assert "[heap]" in r.stdout
    import json
    d = json.loads(rcore_cmd("info", "--json", core).stdout)
    assert d["pid"] == target.pid and len(d["threads"]) == 2
    heap = [x for x in d["regions"] if x["path"] == "[heap]"][0]
    assert 0 < heap["stored"] <= heap["size"]


def test_info_reads_gdb_core(target, tmp_path):
    gc = tmp_path / "g.core"
    subprocess.run(["gdb", "-nx", "-batch", "-p", str(target.pid), "-ex", f"gcore {gc}"],
                   capture_output=True, timeout=120, check=True)
    r = rcore_cmd("info", gc)
    assert r.returncode == 0, r.stderr
    assert "kernel or gdb" in r.stdout and f"pid:      {target.pid}" in r.stdout


def test_default_output_name(target, tmp_path):
    r = rcore_cmd("dump", target.pid, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert os.path.exists(tmp_path / f"core.{target.pid}")


def test_full_stores_file_backed_memory_too(target, tmp_path):
    path = tmp_path / "full.core"
    assert rcore_cmd("dump", "--full", target.pid, "-o", path).returncode == 0
    with CoreFile(str(path)) as c:
        libc = [m for m in c.state.mappings if "libc.so" in m.path and m.perms.startswith("r-x")]
        assert libc and libc[0].stored == "all"
        m = libc[0]
        with open(m.path, "rb") as f:
            f.seek(m.offset)
            assert c.read(m.start, 65536) == f.read(65536)


def test_thousands_of_mappings(build, procs, tmp_path):
    n = 3000
    p = procs.start([build("many_maps"), str(tmp_path / "pages"), str(n)])
    wait_lines(p.out_path, 1, timeout=30)
    with open(f"/proc/{p.pid}/maps") as f:
        live = [line.split()[0] for line in f]
    summary = rcore.dump(p.pid, str(tmp_path / "core"))
    assert summary.regions == len(live) - live.count("ffffffffff600000-ffffffffff601000")
    memfd = os.open(f"/proc/{p.pid}/mem", os.O_RDONLY)
    try:
        with CoreFile(str(tmp_path / "core")) as c:
            files = [m for m in c.state.mappings if m.path == str(tmp_path / "pages")]
            assert len(files) == n
            # the written private file pages are stored (whole), the others are not
            assert sum(m.stored == "all" for m in files) == n // 2
            values = sorted(c.read(m.start, 1)[0] for m in files if m.stored == "all")
            assert values == sorted((i | 1) & 0xFF for i in range(1, n, 2))
            # every stored anonymous page is the live one
            anons = [m for m in c.state.mappings if not m.path and m.stored == "all"]
            assert len(anons) >= n
            for m in anons:
                assert c.read(m.start, 4096) == os.pread(memfd, 4096, m.start), hex(m.start)
    finally:
        os.close(memfd)


def test_memory_held_nowhere_else_is_stored(build, procs, tmp_path):
    p = procs.start([build("deleted_backing"), str(tmp_path / "gone")])
    shared, priv = (int(x, 16) for x in wait_lines(p.out_path, 1)[0].split())
    path = tmp_path / "d.core"
    assert rcore_cmd("dump", p.pid, "-o", path).returncode == 0
    with CoreFile(str(path)) as c:
        assert c.read(shared + 8192, 22) == b"shared anonymous bytes"
        assert c.read(priv, 25) == b"bytes of an unlinked file"
        assert c.state.mapping_at(priv).deleted


def test_unlinked_limit(build, procs, tmp_path):
    p = procs.start([build("unlinked_fd"), str(tmp_path / "gone")])
    wait_lines(p.out_path, 1)
    small, none = tmp_path / "small.core", tmp_path / "none.core"
    assert rcore_cmd("dump", p.pid, "-o", small).returncode == 0
    assert rcore_cmd("dump", "--unlinked-limit", "0", p.pid, "-o", none).returncode == 0
    with CoreFile(str(small)) as c:
        f = next(f for f in c.state.files if f.deleted)
        assert f.contents_stored and bytes.fromhex(f.contents) == b"only in the process now\n"
    with CoreFile(str(none)) as c:
        assert not next(f for f in c.state.files if f.deleted).contents_stored
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    r = rcore_cmd("restart", "--detach", none)
    assert r.returncode != 0 and "unlinked" in r.stderr and "fd 3" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_dump_keeps_the_handler_of_a_blocked_sigtrap(build, procs, tmp_path):
    # The int3 ending an injected call is a forced SIGTRAP; if the target blocks
    # SIGTRAP, the kernel resets its handler to SIG_DFL on delivery.
    p = procs.start([build("sigtrap_blocked")])
    wait_lines(p.out_path, 1)
    rcore.dump(p.pid, str(tmp_path / "core"))
    os.unlink(tmp_path / "core")
    os.kill(p.pid, signal.SIGUSR1)
    assert p.wait(timeout=10) == 0
    assert open(p.out_path).read().split() == ["ready", "traps", "1"]
