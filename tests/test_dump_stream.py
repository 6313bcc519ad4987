"""The fork copy streaming its own memory (stream.py): what happens when it cannot
or is disturbed.  The memory contents of streamed dumps are checked page by page
in test_dump_memory.py and against gdb's gcore in test_dump.py."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import SRC, children, proc_status, wait_lines
from rcore.dump import dump
from rcore.elf.reader import CoreFile
from rcore.linux import ptrace

PAGE = 4096


def _pattern(size):
    """What seccomp_deny.c writes: byte i of page p is (p * 13 + i) & 0xff, every
    seventh page zero."""
    pages = []
    for p in range(size // PAGE):
        if p % 7:
            pages.append(bytes((p * 13 + i) & 0xFF for i in range(PAGE)))
        else:
            pages.append(bytes(PAGE))
    return b"".join(pages)


def _assert_untouched(pid):
    st = proc_status(pid)
    assert st["TracerPid"] == "0" and st["State"][0] in "SR", st
    assert children(pid) == [], "the dump's copy was not reaped"


@pytest.mark.parametrize("suspended", [True, False], ids=["suspended", "filtered"])
@pytest.mark.parametrize("denied", ["vmsplice", "pipe2"],
                         ids=["stream-fails-so-dump-again", "setup-fails-so-read-the-copy"])
def test_a_seccomp_filter_that_forbids_streaming(build, procs, tmp_path, monkeypatch, denied,
                                                 suspended):
    # As root rcore suspends the filter (PTRACE_O_SUSPEND_SECCOMP) for the target
    # and the copy, which streams as usual.  Where the filter acts (here made so by
    # seizing without the option), the copy inherits it.  Without vmsplice the loop
    # fails once the target is already running again: the dump is taken a second
    # time, reading the copy.  Without pipe2 the set-up fails while the copy is
    # still stopped: rcore reads it at once.
    if not suspended:
        monkeypatch.setattr(sys.modules["rcore.dump"], "seize_options",
                            lambda pid: ptrace.PTRACE_O_TRACESYSGOOD)
    p = procs.start([build("seccomp_deny"), denied, "8"])
    _, addr, size = wait_lines(p.out_path, 1)[0].split()
    addr, size = int(addr, 16), int(size)
    path = tmp_path / "core"
    summary = dump(p.pid, str(path))
    assert summary.copy_method == ("stream" if suspended else "read")
    with CoreFile(str(path)) as core:
        assert core.read(addr, size) == _pattern(size)
        off, _ = core.stored_range(addr)
        assert os.lseek(core.fileno(), off, os.SEEK_HOLE) == off      # page 0 is zero
    assert sorted(os.listdir(tmp_path)) == ["core", "out.0"]
    _assert_untouched(p.pid)


def test_stopping_the_copy_does_not_stall_the_dump(build, procs, tmp_path):
    # A SIGSTOP sent to the process group (or to the copy itself) stops the copy
    # too: it cannot be blocked.  rcore resumes it.
    p = procs.start([build("ticker"), "1024"])
    wait_lines(p.out_path, 1, timeout=30)
    stopped, done = [], threading.Event()

    def streaming():
        tmps = [f for f in os.listdir(tmp_path) if f.startswith(".core.rcore-")]
        try:
            return tmps and os.stat(tmp_path / tmps[0]).st_blocks * 512 > (16 << 20)
        except FileNotFoundError:
            return False

    def stop_the_copy():
        while not done.is_set() and not stopped:
            kids = children(p.pid)
            if kids and streaming():
                os.kill(kids[0], signal.SIGSTOP)
                stopped.append(kids[0])
            time.sleep(0.0002)

    t = threading.Thread(target=stop_the_copy)
    t.start()
    try:
        summary = dump(p.pid, str(tmp_path / "core"))
    finally:
        done.set()
        t.join()
    assert stopped, "the copy was never seen streaming"
    assert summary.copy_method == "stream"
    assert summary.bytes_stored >= 1024 << 20
    _assert_untouched(p.pid)


def test_a_user_dumps_their_own_process_without_privileges(build, procs):
    # No root: the pipes, pidfd_getfd and the copy's priority all work for the
    # process's owner too.
    public = tempfile.mkdtemp(prefix="rcore-test-")
    try:
        os.chmod(public, 0o777)
        exe = shutil.copy(build("ticker"), public)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        p = procs.start(nobody + [exe, "64"])
        wait_lines(p.out_path, 1, timeout=30)
        core = os.path.join(public, "core")
        r = subprocess.run(nobody + [sys.executable, "-m", "rcore", "dump", str(p.pid), "-o", core,
                                     "--json"],
                           env=dict(os.environ, PYTHONPATH=SRC), capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        summary = json.loads(r.stdout)
        assert summary["copy_method"] == "stream"
        assert summary["bytes_stored"] >= 64 << 20
        st = os.stat(core)
        assert (st.st_uid, st.st_mode & 0o777) == (65534, 0o600)
        with CoreFile(core) as c:
            heap = max((m for m in c.state.mappings if m.stored == "all"), key=lambda m: m.size)
            # ticker.c writes (i >> 12) | 1 at byte i of its malloc'd block (which starts
            # past malloc's header): 1 on its first page, 5 on its sixth
            at = heap.start + c.read(heap.start, 256).index(b"\x01")
            assert c.read(at + (5 << 12), 1) == b"\x05"
        _assert_untouched(p.pid)
    finally:
        shutil.rmtree(public)


def _thp_mode():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return "never"


def test_memory_in_transparent_huge_pages(build, procs, tmp_path):
    # Huge pages are vmspliced page by page and dropped half a huge page at a time.
    p = procs.start([build("huge_pages"), "64"])
    _, addr, size = wait_lines(p.out_path, 1)[0].split()
    addr, size = int(addr, 16), int(size)
    if _thp_mode() != "never":
        with open(f"/proc/{p.pid}/smaps") as f:
            huge = sum(int(line.split()[1]) for line in f if line.startswith("AnonHugePages:"))
        assert huge > 0, "the target got no huge page although THP is enabled"
    summary = dump(p.pid, str(tmp_path / "core"))
    assert summary.copy_method == "stream"
    memfd = os.open(f"/proc/{p.pid}/mem", os.O_RDONLY)
    try:
        with CoreFile(str(tmp_path / "core")) as c:
            assert c.read(addr, size) == os.pread(memfd, size, addr)
    finally:
        os.close(memfd)
    _assert_untouched(p.pid)
