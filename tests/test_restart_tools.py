"""rcore restart with real programs nobody here wrote: each is checkpointed
mid-work, SIGKILLed, restarted from its core, and must finish with results
byte-identical to an uninterrupted run."""

import os
import subprocess
import sys
import time

from conftest import checkpoint_and_kill, read_lines, restart, wait_for, wait_lines
from rcore.elf.reader import CoreFile


def started_reading(pid, fd):
    """Wait until process pid has read something from fd (it is at work)."""
    def pos():
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                return int(f.readline().split()[1])
        except FileNotFoundError:       # not opened yet
            return 0
    wait_for(lambda: pos() > 0, what=f"process {pid} reading fd {fd}")


def fd_pos(core, fd):
    with CoreFile(str(core)) as c:
        return next(f.pos for f in c.state.files if f.fd == fd)


def test_sleep_wakes_on_time(procs, tmp_path):
    t0 = time.monotonic()
    p = procs.start(["sleep", "2"])
    wait_for(lambda: open(f"/proc/{p.pid}/syscall").read().startswith("230 "),
             what="sleep in clock_nanosleep")
    time.sleep(0.5)
    slept = time.monotonic() - t0
    checkpoint_and_kill(p, tmp_path / "core")
    time.sleep(0.3)                     # down time: does not count
    t1 = time.monotonic()
    h = restart(procs, tmp_path / "core")
    assert h.wait(timeout=10) == 0
    # The rest of the 2 s, not the whole sleep again and not nothing.
    assert abs((time.monotonic() - t1) - (2 - slept)) < 0.4


def test_sha256sum_of_large_file(procs, tmp_path):
    data = tmp_path / "big"
    with open(data, "wb") as f:
        f.write(os.urandom(1 << 20))
        f.truncate(384 << 20)
    want = subprocess.run(["sha256sum", str(data)], capture_output=True, check=True).stdout
    p = procs.start(["sha256sum", str(data)])
    started_reading(p.pid, 3)
    time.sleep(0.1)
    checkpoint_and_kill(p, tmp_path / "core")
    assert 0 < fd_pos(tmp_path / "core", 3) < 384 << 20     # mid-file
    h = restart(procs, tmp_path / "core")
    assert h.wait(timeout=30) == 0
    with open(p.out_path, "rb") as f:
        assert f.read() == want


def test_gzip_stdin_stdout_files(procs, tmp_path):
    src, out, ref = tmp_path / "in.txt", tmp_path / "out.gz", tmp_path / "ref.gz"
    with open(src, "w") as f:       # about 1 s of gzip
        for k in range(0, 1500000, 10000):
            f.write("".join(f"{i} {i * 7919 % 104729} lorem {i * i % 977} {i % 7}\n"
                            for i in range(k, k + 10000)))
    with open(src, "rb") as fin, open(ref, "wb") as fout:
        subprocess.run(["gzip", "-c", "-n"], stdin=fin, stdout=fout, check=True)
    fin, fout = open(src, "rb"), open(out, "wb")
    p = procs.start(["gzip", "-c", "-n"], stdin=fin, stdout=fout)
    fin.close()
    fout.close()
    started_reading(p.pid, 0)
    time.sleep(0.1)
    checkpoint_and_kill(p, tmp_path / "core")
    assert 0 < fd_pos(tmp_path / "core", 0) < os.path.getsize(src)
    h = restart(procs, tmp_path / "core")
    assert h.wait(timeout=30) == 0
    assert out.read_bytes() == ref.read_bytes()


PY_LOOP = """
import sys, time
with open(sys.argv[1], "w") as f:
    for i in range(400):
        f.write(f"line {i} {i * i}\\n")
        f.flush()
        if i % 20 == 0:
            print(i, flush=True)
        time.sleep(0.002)
print("end", flush=True)
"""


def test_python_loop_writing_a_file(procs, tmp_path):
    ref_file, run_file = tmp_path / "ref.txt", tmp_path / "run.txt"
    ref = procs.start([sys.executable, "-c", PY_LOOP, str(ref_file)])
    p = procs.start([sys.executable, "-c", PY_LOOP, str(run_file)])
    wait_lines(p.out_path, 5)
    checkpoint_and_kill(p, tmp_path / "core")
    h = restart(procs, tmp_path / "core")
    assert h.wait(timeout=30) == 0
    assert ref.wait(timeout=30) == 0
    assert run_file.read_bytes() == ref_file.read_bytes()
    assert read_lines(p.out_path) == read_lines(ref.out_path)


BASH_LOOP = """
n=0
while read -r a b; do
    n=$((n + a * b))
    echo "$a $b $n"
    for ((j = 0; j < 300; j++)); do :; done
done < "$1"
echo "total $n"
"""


def test_bash_while_read_loop(procs, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("".join(f"{i} {i % 13}\n" for i in range(3000)))
    ref = procs.start(["bash", "-c", BASH_LOOP, "bash", str(src)])
    p = procs.start(["bash", "-c", BASH_LOOP, "bash", str(src)])
    wait_lines(p.out_path, 300)
    checkpoint_and_kill(p, tmp_path / "core")
    h = restart(procs, tmp_path / "core")
    assert h.wait(timeout=30) == 0
    assert ref.wait(timeout=30) == 0
    out = read_lines(p.out_path)
    assert out == read_lines(ref.out_path) and out[-1].startswith("total ")


def sqlite_script(path):
    with open(path, "w") as f:
        f.write("CREATE TABLE t(a INTEGER, b TEXT);\n")
        for batch in range(60):
            f.write(f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s "
                    f"WHERE i < 5000) INSERT INTO t SELECT i * {batch + 1}, "
                    f"hex(i * 31) FROM s;\n")
            f.write("SELECT count(*), sum(a), max(b) FROM t;\n")
            f.write("SELECT count(DISTINCT a % 977) FROM t;\n")
        f.write("SELECT 'end', count(*) FROM t;\n")


def test_sqlite3_long_script(procs, tmp_path):
    script = tmp_path / "s.sql"
    sqlite_script(script)
    with open(script, "rb") as fin:
        ref = procs.start(["sqlite3"], stdin=fin)
    with open(script, "rb") as fin:
        p = procs.start(["sqlite3"], stdin=fin)
    wait_lines(p.out_path, 20)
    checkpoint_and_kill(p, tmp_path / "core")
    h = restart(procs, tmp_path / "core")
    assert h.wait(timeout=60) == 0
    assert ref.wait(timeout=60) == 0
    out = read_lines(p.out_path)
    assert out == read_lines(ref.out_path) and out[-1] == "end|300000"


def test_cat_blocked_in_read_on_a_fifo(procs, tmp_path):
    """cat checkpointed inside read() on a FIFO: restarted, it is back in the
    read (the call runs again, as after a signal with SA_RESTART) and copies
    what a writer sends later."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR)         # both ends: cat never sees EOF
    p = procs.start(["cat"], stdin=fd)
    os.close(fd)
    wait_for(lambda: open(f"/proc/{p.pid}/syscall").read().startswith("0 0x0 "),
             what="cat blocked in read(0)")
    checkpoint_and_kill(p, tmp_path / "core")
    h = restart(procs, tmp_path / "core")
    wait_for(lambda: open(f"/proc/{h.pid}/syscall").read().startswith("0 0x0 "),
             what="cat back in read(0)")
    w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    os.write(w, b"hello after restart\n")
    os.close(w)
    wait_lines(p.out_path, 1)
    assert read_lines(p.out_path) == ["hello after restart"]
    h.kill()
    h.wait(timeout=10)
