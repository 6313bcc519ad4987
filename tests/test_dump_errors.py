"""Bad input and bad luck: one line on stderr, a non-zero exit, the target left
running untraced, and no core (temporary or final) left behind."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

import rcore
from conftest import SRC, children, dump_as_nobody, proc_status, rcore_cmd, read_lines, wait_for, wait_lines


def one_line_error(r, *words):
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("rcore: ")
    for w in words:
        assert w in lines[0], lines[0]
    assert "Traceback" not in r.stderr


def assert_running_untraced(pid, out_path):
    st = proc_status(pid)
    assert st["TracerPid"] == "0" and st["State"][0] in "SR", st
    n = len(read_lines(out_path))
    wait_lines(out_path, n + 2)          # and still making progress


@pytest.fixture
def ticker(build, procs):
    def start(mib=0):
        p = procs.start([build("ticker"), str(mib)])
        wait_lines(p.out_path, 1, timeout=30)
        return p
    return start


def test_no_such_process(tmp_path):
    r = rcore_cmd("dump", "999999999", "-o", tmp_path / "c")
    one_line_error(r, "no such process")
    assert os.listdir(tmp_path) == []


def test_zombie(procs, tmp_path):
    p = procs.start(["true"])            # not reaped until p.wait(): a zombie meanwhile
    wait_for(lambda: proc_status(p.pid).get("State", "")[:1] == "Z", what="a zombie")
    r = rcore_cmd("dump", p.pid, "-o", tmp_path / "c")
    one_line_error(r, "has exited", str(p.pid))
    assert [f for f in os.listdir(tmp_path) if not f.startswith("out.")] == []
    p.wait()


def test_not_permitted(ticker, tmp_path):
    p = ticker()
    # an unprivileged user may not trace a root process
    outdir = tempfile.mkdtemp(prefix="rcore-test-")
    try:
        r = dump_as_nobody(p.pid, outdir)
        one_line_error(r, "not permitted", str(p.pid))
        assert_running_untraced(p.pid, p.out_path)
        assert os.listdir(outdir) == []
    finally:
        shutil.rmtree(outdir)


def test_missing_output_directory(ticker, tmp_path):
    p = ticker()
    r = rcore_cmd("dump", p.pid, "-o", tmp_path / "nope" / "c")
    one_line_error(r, "does not exist")
    assert_running_untraced(p.pid, p.out_path)


def test_disk_full(ticker, tmp_path):
    p = ticker(64)
    mnt = tmp_path / "small"
    mnt.mkdir()
    # a private mount namespace so that the small tmpfs disappears with the command
    script = (f"mount -t tmpfs -o size=4m rcore-test {mnt} && "
              f"exec {sys.executable} -m rcore dump {p.pid} -o {mnt}/c")
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], env=dict(os.environ, PYTHONPATH=SRC),
                       capture_output=True, text=True)
    one_line_error(r, "disk full")
    assert_running_untraced(p.pid, p.out_path)
    assert children(p.pid) == []  # the copy reaped


def test_target_exits_during_dump(ticker, tmp_path):
    p = ticker(64)
    killed = []

    def kill_midway(done, total):
        if not killed and done > 0:
            os.kill(p.pid, signal.SIGKILL)
            killed.append(done)

    with pytest.raises(rcore.ProcessExited):
        rcore.dump(p.pid, str(tmp_path / "c"), fork=False, progress=kill_midway)
    assert killed
    assert [f for f in os.listdir(tmp_path) if not f.startswith("out.")] == []


def _start_slow_dump(p, tmp_path):
    """rcore dumping a 1 GiB process, returned once it is writing data."""
    core = tmp_path / "big.core"
    proc = subprocess.Popen([sys.executable, "-m", "rcore", "dump", str(p.pid), "-o", str(core)],
                            env=dict(os.environ, PYTHONPATH=SRC), stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)

    def writing():
        tmps = [f for f in os.listdir(tmp_path) if f.startswith(".big.core.rcore-")]
        return tmps and os.stat(tmp_path / tmps[0]).st_blocks * 512 > (8 << 20)
    wait_for(writing, timeout=60, interval=0.002, what="rcore writing the core")
    assert proc.poll() is None, "the dump ended before it could be interrupted"
    return proc, core


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_rcore_killed_mid_dump(ticker, tmp_path, sig):
    p = ticker(1024)
    proc, core = _start_slow_dump(p, tmp_path)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert not core.exists()
    assert_running_untraced(p.pid, p.out_path)
    # The dump's copy never outlives rcore: its pipes' other ends are gone, so it
    # exits (left a zombie of the target after a SIGKILL: nothing remains to reap it).
    copies = children(p.pid)
    wait_for(lambda: all(proc_status(c).get("State", "Z")[0] in "ZX" for c in copies),
             timeout=5, what="the dump's copy to end")
    if sig == signal.SIGINT:
        # a clean unwind: one line, the temporary file removed, the copy reaped
        assert proc.returncode == 130 and "interrupted" in proc.stderr.read()
        assert [f for f in os.listdir(tmp_path) if not f.startswith("out.")] == []
        assert children(p.pid) == []
    else:
        # a SIGKILL leaves the temporary and the copy (a zombie named by rcore);
        # the next dump in that directory, of that process, removes both
        assert [f for f in os.listdir(tmp_path) if ".rcore-tmp-" in f]
        assert [open(f"/proc/{c}/comm").read() for c in copies] == ["rcore-dump-copy\n"]
        rcore.dump(p.pid, str(tmp_path / "next.core"))
        assert sorted(f for f in os.listdir(tmp_path) if not f.startswith("out.")) == \
            ["next.core"]
        assert children(p.pid) == []


def test_temporaries_of_live_writers_and_others_stay(ticker, tmp_path):
    p = ticker()
    gone = subprocess.Popen(["true"])
    gone.wait()
    me = f"{os.getpid()}-{open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19]}"
    dead = tmp_path / f".x.core.rcore-tmp-{gone.pid}-1-0"
    live = tmp_path / f".x.core.rcore-tmp-{me}-0"
    other = tmp_path / ".x.core.rcore-7-0"             # not rcore's pattern
    for f in (dead, live, other):
        f.write_bytes(b"x")
    rcore.dump(p.pid, str(tmp_path / "c"))
    assert not dead.exists() and live.exists() and other.exists()


def test_the_programs_own_zombie_children_stay(build, procs, tmp_path):
    # the shell's child survives exec as a zombie child of the program
    p = procs.start(["sh", "-c", f"true & exec {build('ticker')}"])
    wait_lines(p.out_path, 1)
    zombies = wait_for(lambda: children(p.pid), what="the zombie child")
    rcore.dump(p.pid, str(tmp_path / "c"))
    assert children(p.pid) == zombies


def test_a_failed_dump_with_stop_leaves_the_target_running(ticker, tmp_path):
    p = ticker(64)
    mnt = tmp_path / "small"
    mnt.mkdir()
    script = (f"mount -t tmpfs -o size=4m rcore-test {mnt} && "
              f"exec {sys.executable} -m rcore dump --stop {p.pid} -o {mnt}/c")
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], env=dict(os.environ, PYTHONPATH=SRC),
                       capture_output=True, text=True)
    one_line_error(r, "disk full")
    assert_running_untraced(p.pid, p.out_path)


@pytest.mark.parametrize("content,words", [
    (b"this is not a core file at all\n" * 10, "not an ELF file"),
    (b"", "not an ELF file"),
])
def test_info_rejects_non_cores(tmp_path, content, words):
    f = tmp_path / "x"
    f.write_bytes(content)
    one_line_error(rcore_cmd("info", f), words)


def test_info_rejects_elf_executable():
    one_line_error(rcore_cmd("info", sys.executable), "not a core file")


def test_info_rejects_missing_file(tmp_path):
    one_line_error(rcore_cmd("info", tmp_path / "none"), "no such file")


@pytest.fixture
def good_core(build, procs, tmp_path):
    p = procs.start([build("dump_threads")])
    wait_lines(p.out_path, 1)
    path = tmp_path / "good.core"
    rcore.dump(p.pid, str(path))
    return path


def test_info_rejects_truncated_core(good_core, tmp_path):
    data = good_core.read_bytes()
    for cut in (40, 1000, len(data) // 2):
        f = tmp_path / f"cut{cut}"
        f.write_bytes(data[:cut])
        one_line_error(rcore_cmd("info", f), "truncated")


def test_info_rejects_corrupt_notes(good_core, tmp_path):
    data = bytearray(good_core.read_bytes())
    # the first note's n_descsz (right after the program headers) made huge
    from rcore.elf import structs as S
    eh = S.Elf64_Ehdr.from_buffer_copy(data)
    ph = S.Elf64_Phdr.from_buffer_copy(data, eh.e_phoff)
    assert ph.p_type == S.PT_NOTE
    data[ph.p_offset + 4: ph.p_offset + 8] = (1 << 30).to_bytes(4, "little")
    f = tmp_path / "corrupt"
    f.write_bytes(bytes(data))
    one_line_error(rcore_cmd("info", f), "corrupt")
