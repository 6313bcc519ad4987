"""rcore diff: known changes between two checkpoints (and a live process) are
reported exactly, as text and as JSON."""

import json
import os
import subprocess

import pytest

import rcore
from conftest import rcore_cmd, wait_for

REGION, RO, GONE, FRESH = 0x110000000000, 0x120000000000, 0x130000000000, 0x140000000000
PAGE = 4096


class Changes:
    """tests/progs/changes.c, driven through its stdin."""

    def __init__(self, procs, build, tmp_path):
        self.data = tmp_path / "data"
        self.data.write_bytes(b"x" * 1000)
        self.dir = tmp_path / "later"
        self.dir.mkdir()
        self.p = procs.start([build("changes"), str(self.data), str(self.dir)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(tmp_path))
        _, pid, handler = self.p.stdout.readline().split()
        self.pid, self.handler = int(pid), int(handler, 16)
        wait_for(self._in_read, what="the program to wait in read()")

    def ask(self, line):
        """Send a command; returns the reply once the program waits for the next
        one (blocked in read(2): a checkpoint then catches it idle)."""
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()
        reply = self.p.stdout.readline().decode().strip()
        wait_for(self._in_read, what="the program to wait in read()")
        return reply

    def _in_read(self):
        with open(f"/proc/{self.pid}/syscall") as f:
            return f.read().split()[0] == "0"


@pytest.fixture
def changed(procs, build, tmp_path):
    """Checkpoint a, the known changes, checkpoint b."""
    prog = Changes(procs, build, tmp_path)
    a, b = tmp_path / "a.core", tmp_path / "b.core"
    rcore.dump(prog.pid, str(a))
    reply = prog.ask("c")
    prog.nfd = int(reply.split()[1])
    rcore.dump(prog.pid, str(b))
    return prog, str(a), str(b)


def expected_lines(prog, tmp_path):
    return [
        f"mapping added       {FRESH:#x}-{FRESH + 2 * PAGE:#x} rw-p",
        f"mapping removed     {GONE:#x}-{GONE + 2 * PAGE:#x} rw-p",
        f"mapping reprotected {RO:#x}-{RO + 4 * PAGE:#x} rw-p -> r--p",
        f"memory  {REGION:#x}-{REGION + 64 * PAGE:#x} 2 pages, 101 bytes changed",
        f"fd {prog.nfd} opened chr /dev/null",
        f"fd 3 offset 0 -> 123 {prog.data}",
        f"signal  SIGUSR1 handler SIG_DFL flags 0x0 mask - -> {prog.handler:#x} "
        f"flags 0x14000000 mask -",
        f"signal  thread {prog.pid} mask - -> SIGUSR2",
        "limit   nofile 512/{h} -> 256/{h}",
        f"cwd     {tmp_path} -> {prog.dir}",
    ]


def check_text(out, prog, tmp_path):
    lines = out.splitlines()
    hard = _hard_nofile(prog.pid)
    for want in expected_lines(prog, tmp_path):
        want = want.replace("{h}", hard)
        assert want in lines, f"{want!r} not in:\n{out}"
    # Nothing else changed in the layout
    assert [ln for ln in lines if ln.startswith("mapping")] == \
        [w for w in expected_lines(prog, tmp_path) if w.startswith("mapping")]
    assert not any(ln.startswith("thread") and ("started" in ln or "ended" in ln)
                   for ln in lines)


def _hard_nofile(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                h = line.split()[4]
                return "unlimited" if h == "unlimited" else h
    raise AssertionError("no nofile limit")


def test_diff_text_reports_known_changes(changed, tmp_path):
    prog, a, b = changed
    r = rcore_cmd("diff", a, b)
    assert r.returncode == 0, r.stderr
    check_text(r.stdout, prog, tmp_path)


def test_diff_json_reports_known_changes(changed, tmp_path):
    prog, a, b = changed
    r = rcore_cmd("diff", a, b, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["mappings"]["added"] == [{"start": FRESH, "end": FRESH + 2 * PAGE,
                                       "perms": "rw-p", "path": ""}]
    assert d["mappings"]["removed"] == [{"start": GONE, "end": GONE + 2 * PAGE,
                                         "perms": "rw-p", "path": ""}]
    assert d["mappings"]["reprotected"] == [{"start": RO, "end": RO + 4 * PAGE, "path": "",
                                             "a": "rw-p", "b": "r--p"}]
    assert d["mappings"]["replaced"] == []
    region = [r for r in d["memory"] if r["start"] == REGION]
    assert region == [{"start": REGION, "end": REGION + 64 * PAGE, "path": "",
                       "pages": 2, "bytes": 101}]
    # RO was written before a; FRESH is new: no memory entry for either
    assert not [r for r in d["memory"] if r["start"] in (RO, FRESH)]
    f = d["files"]
    assert f["opened"] == [{"fd": prog.nfd, "kind": "chr", "path": "/dev/null", "pos": 0}]
    assert f["closed"] == [] and f["reopened"] == []
    assert f["moved"] == [{"fd": 3, "path": str(prog.data), "a": 0, "b": 123}]
    s = d["signals"]
    usr1 = [h for h in s["handlers"] if h["name"] == "SIGUSR1"]
    assert len(s["handlers"]) == 1 and usr1[0]["a"]["handler"] == 0
    assert usr1[0]["b"]["handler"] == prog.handler
    assert usr1[0]["b"]["flags"] == 0x14000000       # SA_RESTART | SA_RESTORER
    assert s["masks"] == [{"tid": prog.pid, "a": 0, "b": 1 << 11}]
    assert [lim["name"] for lim in d["limits"]] == ["nofile"]
    assert d["limits"][0]["a"][0] == 512 and d["limits"][0]["b"][0] == 256
    assert d["process"]["cwd"] == {"a": str(tmp_path), "b": str(prog.dir)}
    assert d["threads"]["added"] == [] and d["threads"]["removed"] == []


def test_diff_against_live_process(changed, tmp_path):
    prog, a, b = changed
    r = rcore_cmd("diff", a, prog.pid)
    assert r.returncode == 0, r.stderr
    check_text(r.stdout, prog, tmp_path)
    # the process ran on after the brief freeze
    assert prog.ask("s").isdigit()
    # and a live process against the checkpoint of the same instant: no change
    r = rcore_cmd("diff", b, prog.pid, "--json")
    d = json.loads(r.stdout)
    assert not [m for m in d["memory"] if m["start"] == REGION]
    assert all(not v for v in d["mappings"].values())
    assert d["files"]["opened"] == [] and d["signals"]["handlers"] == []


def test_diff_same_core_is_empty(changed):
    prog, a, b = changed
    from rcore.diff import diff
    d = diff(b, b)
    assert d["memory"] == [] and d["memory_total"] == {"pages": 0, "bytes": 0}
    assert all(not v for v in d["mappings"].values())
    assert d["threads"]["changed"] == [] and d["limits"] == [] and d["process"] == {}
