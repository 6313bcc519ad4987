"""A dump reads smaps before the freeze and only maps while frozen
(frozenmaps.py): a mapping whose flags or pages change in between, without a
change of layout, must still be in the core as it was at the freeze."""

import os
import subprocess

import pytest

from conftest import read_lines, wait_for, wait_lines

from rcore import frozenmaps
from rcore.dump import dump
from rcore.elf.reader import CoreFile

PAGE = 4096


def _start(build, procs, tmp_path):
    p = procs.start([build("flags_race"), str(tmp_path / "mapped")], stdin=subprocess.PIPE)
    lines = wait_lines(p.out_path, 5)
    return p, {name: int(addr, 16) for name, addr in (line.split() for line in lines[:4])}


def _command(p, letter):
    """Have flags_race make one change, and wait until it has."""
    done = read_lines(p.out_path).count("done")
    p.stdin.write(f"{letter}\n".encode())
    p.stdin.flush()
    wait_for(lambda: read_lines(p.out_path).count("done") > done, 10, what="done")


def _between_early_read_and_freeze(monkeypatch, p, letter):
    """Make the change right after the dump's early smaps read; returns the
    list of FlagsChanged the dump's check raised."""
    real_init, real_check = frozenmaps.Early.__init__, frozenmaps.check_flags
    raised = []

    def early(self, pid):
        real_init(self, pid)
        if raised or not letter:
            return
        if callable(letter):
            letter()
        else:
            _command(p, letter)

    def check(*args, **kwargs):
        try:
            return real_check(*args, **kwargs)
        except frozenmaps.FlagsChanged as err:
            raised.append(err)
            raise
    monkeypatch.setattr(frozenmaps.Early, "__init__", early)
    monkeypatch.setattr(frozenmaps, "check_flags", check)
    return raised


def _mapping(core, addr):
    return next(m for m in core.state.mappings if m.start <= addr < m.end)


@pytest.mark.parametrize("letter,region,flag,pattern", [
    ("w", "wipe", "wf", lambda i: (i * 5 + 1) & 0xFF),
    ("d", "dontfork", "dc", lambda i: (i * 7 + 3) & 0xFF)], ids=["wipeonfork", "dontfork"])
def test_a_fork_flag_set_before_the_freeze_is_caught_and_the_dump_taken_again(
        build, procs, tmp_path, monkeypatch, letter, region, flag, pattern):
    # The early read says the region is copied by a fork; at the freeze it is
    # not (zeroed, or absent, in the copy): the copy's smaps shows it, the dump
    # is taken again with smaps read while frozen, and the bytes come from the
    # process itself.
    p, addrs = _start(build, procs, tmp_path)
    raised = _between_early_read_and_freeze(monkeypatch, p, letter)
    path = str(tmp_path / "core")
    dump(p.pid, path)
    assert len(raised) == 1 and region != "" and "between the early read" in str(raised[0])
    with CoreFile(path) as core:
        m = _mapping(core, addrs[region])
        assert flag in m.vmflags
        assert core.read(addrs[region], 4 * PAGE) == bytes(pattern(i) for i in range(4 * PAGE))
    assert p.poll() is None


def test_without_a_copy_a_changed_flag_is_caught_too(build, procs, tmp_path, monkeypatch):
    # fork=False: every byte is read from the process while frozen, so the
    # bytes are right; the flag a restart gives back must be too.
    p, addrs = _start(build, procs, tmp_path)
    raised = _between_early_read_and_freeze(monkeypatch, p, "w")
    path = str(tmp_path / "core")
    dump(p.pid, path, fork=False)
    assert len(raised) == 1
    with CoreFile(path) as core:
        assert "wf" in _mapping(core, addrs["wipe"]).vmflags
        assert core.read(addrs["wipe"], PAGE) == bytes((i * 5 + 1) & 0xFF for i in range(PAGE))


def test_a_page_written_before_the_freeze_makes_a_file_mapping_stored(
        build, procs, tmp_path, monkeypatch):
    # smaps read early shows no anonymous page in the private file mapping (it
    # would be left to the file); the page written just before the freeze is
    # counted while frozen (PAGEMAP_SCAN), so the mapping is stored whole.
    p, addrs = _start(build, procs, tmp_path)
    raised = _between_early_read_and_freeze(monkeypatch, p, "c")
    path = str(tmp_path / "core")
    dump(p.pid, path)
    assert raised == []
    with CoreFile(path) as core:
        m = _mapping(core, addrs["file"])
        assert m.stored == "all" and m.anonymous == PAGE
        assert core.read(addrs["file"], 2 * PAGE) == b"\x22" * PAGE + b"\x11" * PAGE


def test_a_page_written_into_an_unreadable_mapping_before_the_freeze(
        build, procs, tmp_path, monkeypatch):
    # A PROT_NONE mapping the early read saw empty is not stored; a debugger
    # writes a page into it (through /proc/PID/mem) just before the freeze: the
    # fork copy shows the page, and the dump is taken again with it.
    p, addrs = _start(build, procs, tmp_path)

    def poke():
        fd = os.open(f"/proc/{p.pid}/mem", os.O_RDWR)
        try:
            os.pwrite(fd, b"\x5a" * PAGE, addrs["none"] + PAGE)
        finally:
            os.close(fd)
    raised = _between_early_read_and_freeze(monkeypatch, p, poke)
    path = str(tmp_path / "core")
    dump(p.pid, path)
    assert len(raised) == 1 and "pages written" in str(raised[0])
    with CoreFile(path) as core:
        m = _mapping(core, addrs["none"])
        assert m.stored == "all" and m.anonymous == PAGE
        assert core.read(addrs["none"] + PAGE, PAGE) == b"\x5a" * PAGE


def test_unchanged_mappings_take_no_second_dump(build, procs, tmp_path, monkeypatch):
    p, addrs = _start(build, procs, tmp_path)
    raised = _between_early_read_and_freeze(monkeypatch, p, None)
    path = str(tmp_path / "core")
    dump(p.pid, path)
    assert raised == []
    with CoreFile(path) as core:
        m = _mapping(core, addrs["file"])
        assert m.stored != "all" and m.anonymous == 0
        assert core.read(addrs["wipe"], PAGE) == bytes((i * 5 + 1) & 0xFF for i in range(PAGE))
