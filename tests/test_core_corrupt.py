"""A corrupt or incomplete core is refused with one line naming the note, and
nothing is started or changed from it (the cases the fuzzer first found)."""

import json
import os
import struct

import pytest

import corefuzz
from conftest import rcore_cmd, read_lines, wait_lines
from test_fuzz import exe_pids, write_sparse

NT_RCORE_THREAD, NT_RCORE_FILES = 0x52430002, 0x52430004


@pytest.fixture
def dumped(build, procs, tmp_path):
    """(core bytes, Popen) of a running selfcheck target."""
    work = tmp_path / "w"
    work.mkdir()
    p = procs.start([build("selfcheck"), str(work), "5"])
    wait_lines(p.out_path, 1)
    assert rcore_cmd("dump", p.pid, "-o", tmp_path / "base").returncode == 0
    data = (tmp_path / "base").read_bytes()
    os.unlink(tmp_path / "base")
    return data, p


def _edit_notes(data, edit):
    lay = corefuzz.Layout(data)
    return corefuzz.with_notes(data, edit(list(lay.notes)))


def _json_edit(ntype, change):
    """An edit of the JSON of the first note of type ntype."""
    def edit(notes):
        i, n = next((i, n) for i, n in enumerate(notes)
                    if n.owner == "RCORE" and n.ntype == ntype)
        doc = json.loads(n.desc[4:])
        change(doc)
        notes[i] = corefuzz.Note(0, n.name_bytes, n.ntype, n.desc[:4] + json.dumps(doc).encode())
        return notes
    return edit


def _info_refuses(tmp_path, data, message):
    write_sparse(tmp_path / "bad", data)
    r = rcore_cmd("info", tmp_path / "bad")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr == f"rcore: {tmp_path / 'bad'}: {message}\n"


def test_nt_file_count_is_checked_against_the_note_size(dumped, tmp_path):
    data, _ = dumped
    n = next(n for n in corefuzz.Layout(data).notes if n.ntype == corefuzz.NT_FILE)
    bad = bytearray(data)
    struct.pack_into("<Q", bad, n.desc_at, 1 << 62)
    _info_refuses(tmp_path, bytes(bad),
                  f"corrupt NT_FILE: {1 << 62} files do not fit in {len(n.desc)} bytes")


def test_nt_file_count_in_a_kernel_core(build, tmp_path):
    pattern = open("/proc/sys/kernel/core_pattern").read().strip()
    if pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"core_pattern {pattern!r} does not write a core into the cwd")
    import subprocess
    subprocess.run(["sh", "-c", f"ulimit -c unlimited; exec {build('crasher')}"], cwd=tmp_path)
    core = next(f for f in os.listdir(tmp_path) if f.startswith("core"))
    data = (tmp_path / core).read_bytes()
    os.unlink(tmp_path / core)
    n = next(n for n in corefuzz.Layout(data).notes if n.ntype == corefuzz.NT_FILE)
    (count,) = struct.unpack_from("<Q", n.desc)
    bad = bytearray(data)
    struct.pack_into("<Q", bad, n.desc_at, count + 1)
    _info_refuses(tmp_path, bytes(bad), f"corrupt NT_FILE: {count + 1} files but {count} names")


def test_a_value_of_the_wrong_type_names_note_and_field(dumped, tmp_path):
    data, _ = dumped
    bad = _edit_notes(data, _json_edit(NT_RCORE_FILES,
                                       lambda d: d["fds"][1].update(fd="1")))
    _info_refuses(tmp_path, bad, "corrupt RCORE_FILES: fds[1].fd: expected an integer, "
                                 "got a string")
    bad = _edit_notes(data, _json_edit(NT_RCORE_THREAD,
                                       lambda d: d.update(robust_list=[d["robust_list"][0], 999])))
    _info_refuses(tmp_path, bad, "corrupt RCORE_THREAD: robust_list length 999, the kernel "
                                 "takes only 24")


def test_overlapping_segments(dumped, tmp_path):
    data, _ = dumped
    lay = corefuzz.Layout(data)
    loads = [p for p in lay.phdrs if p[1] == corefuzz.PT_LOAD]
    bad = bytearray(data)
    # the second segment moved onto the first one's address
    vaddr = struct.unpack_from("<Q", data, loads[0][0] + 16)[0]
    struct.pack_into("<Q", bad, loads[1][0] + 16, vaddr)
    write_sparse(tmp_path / "bad", bytes(bad))
    r = rcore_cmd("info", tmp_path / "bad")
    assert r.returncode == 1 and "corrupt program headers: segments" in r.stderr, r.stderr


def _drop(ntype):
    return lambda notes: [n for n in notes if not (n.owner == "RCORE" and n.ntype == ntype)]


def _retype(ntype, new):
    return lambda notes: [corefuzz.Note(0, n.name_bytes, new, n.desc)
                          if n.owner == "RCORE" and n.ntype == ntype else n for n in notes]


@pytest.mark.parametrize("edit, message", [
    (_drop(NT_RCORE_FILES), "no RCORE_FILES note: the core is incomplete"),
    (_retype(NT_RCORE_THREAD, 0x52430099), "corrupt RCORE_THREAD: thread {pid} has no "
                                           "RCORE_THREAD note"),
    (_json_edit(NT_RCORE_THREAD, lambda d: d.update(tid=4000000)),
     "corrupt RCORE_THREAD: thread 4000000 has no NT_PRSTATUS note"),
], ids=["no-files-note", "thread-note-retyped", "thread-note-of-another-tid"])
def test_restart_and_restore_refuse_an_incomplete_core(dumped, tmp_path, edit, message):
    data, p = dumped
    bad = tmp_path / "bad"
    write_sparse(bad, _edit_notes(data, edit))
    message = message.format(pid=p.pid)
    lines = len(read_lines(p.out_path))
    r = rcore_cmd("restore", p.pid, bad)
    assert r.returncode == 1 and r.stderr == f"rcore: {bad}: {message}\n", r.stderr
    wait_lines(p.out_path, lines + 3)
    assert p.poll() is None and not any(x.startswith("FAIL") for x in read_lines(p.out_path))
    p.kill()
    p.wait()
    r = rcore_cmd("restart", bad, "--stdout", tmp_path / "r.out")
    assert r.returncode == 1 and r.stderr == f"rcore: {bad}: {message}\n", r.stderr
    assert not exe_pids(p.args[0]) and not os.path.exists(tmp_path / "r.out")


def test_segment_count_beyond_65534_read_from_section_header(dumped, tmp_path):
    """PN_XNUM: what the kernel writes for a process with more than 65534 mappings."""
    from rcore.elf.reader import CoreFile
    data, _ = dumped
    lay = corefuzz.Layout(data)
    shdr = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, lay.phnum, 0, 0)
    at = len(data) + (-len(data) % 8)
    big = bytearray(data.ljust(at, b"\0") + shdr)
    struct.pack_into("<Q", big, 40, at)                         # e_shoff
    struct.pack_into("<HHHH", big, 56, 0xFFFF, 64, 1, 0)        # e_phnum, e_shentsize...
    write_sparse(tmp_path / "x", bytes(big))
    write_sparse(tmp_path / "base", data)
    with CoreFile(str(tmp_path / "x")) as x, CoreFile(str(tmp_path / "base")) as base:
        assert len(x.segments) == len(base.segments) > 20
        assert x.state.mappings == base.state.mappings


def test_a_fifo_named_as_core_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    r = rcore_cmd("info", tmp_path / "fifo", timeout=30)
    assert r.returncode == 1 and r.stderr == f"rcore: {tmp_path / 'fifo'}: is not a regular file\n"
