"""rcore restore: rolling live processes back to a checkpoint of themselves."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import SRC, proc_status, rcore_cmd, read_lines, wait_for, wait_lines

from rcore import arch
from rcore.elf.reader import CoreFile

SYS = arch.host().SYS


class Stepper:
    """restore_state: one step per byte written to its stdin; its stdout is a file
    opened with O_APPEND, so output written after a rollback is appended."""

    def __init__(self, procs, build, tmp_path):
        self.work = tmp_path / "work"
        self.work.mkdir()
        self.out = str(tmp_path / "state.out")
        self.p = procs.start([build("restore_state"), str(self.work)],
                             stdout=open(self.out, "ab"), stdin=subprocess.PIPE)
        self.pid = self.p.pid
        wait_lines(self.out, 1)

    def send(self, cmds, expect):
        """Send commands, wait for `expect` more lines, return the new lines."""
        before = len(read_lines(self.out))
        self.p.stdin.write(cmds.encode())
        self.p.stdin.flush()
        return wait_lines(self.out, before + expect)[before:]


def kernel_thread_state(core):
    """Per thread, what the kernel keeps for it (as rcore dump records it)."""
    with CoreFile(core) as c:
        return {t.tid: (t.sigmask, t.sigaltstack, t.robust_list, t.clear_child_tid, t.rseq,
                        t.regs["fs_base"]) for t in c.state.threads}


def assert_thread_state_back(pid, core, tmp_path):
    """A new dump of the restored process shows the checkpoint's per-thread state."""
    again = str(tmp_path / "again.core")
    assert rcore_cmd("dump", pid, "-o", again).returncode == 0
    assert kernel_thread_state(again) == kernel_thread_state(core)


def not_traced(pid):
    status = proc_status(pid)
    return status["TracerPid"] == "0" and not status["State"].startswith(("t", "T"))


def test_rollback_of_everything_the_process_changed(procs, build, tmp_path):
    st = Stepper(procs, build, tmp_path)
    assert st.send("xxx", 3) == ["count 1 ok", "count 2 ok", "count 3 ok"]
    core = str(tmp_path / "state.core")
    r = rcore_cmd("dump", st.pid, "-o", core)
    assert r.returncode == 0, r.stderr
    tids = sorted(os.listdir(f"/proc/{st.pid}/task"))

    # The checkpoint found the main thread in read() and the worker in nanosleep():
    # both must resume correctly.
    with CoreFile(core) as c:
        calls = {t.tid: t.regs["orig_rax"] for t in c.state.threads}
    assert calls[st.pid] == SYS["read"]
    assert set(calls.values()) - {SYS["read"]} <= {SYS["nanosleep"], 230}  # clock_nanosleep

    assert st.send("m", 1) == ["mutated"]
    assert st.send("xx", 2) == ["count 4 mutated", "count 5 mutated"]
    assert len(os.listdir(f"/proc/{st.pid}/task")) == 3

    r = rcore_cmd("restore", st.pid, core)
    assert r.returncode == 0, r.stderr
    assert "restored" in r.stdout and "1 ended" in r.stdout
    assert not_traced(st.pid)
    # Every check of the program passes again from the checkpointed step on.
    assert st.send("xxx", 3) == ["count 4 ok", "count 5 ok", "count 6 ok"]
    assert sorted(os.listdir(f"/proc/{st.pid}/task")) == tids
    assert_thread_state_back(st.pid, core, tmp_path)


def test_rollback_recreates_an_exited_thread_with_its_tid(procs, build, tmp_path):
    st = Stepper(procs, build, tmp_path)
    st.send("xx", 2)
    core = str(tmp_path / "state.core")
    tids = sorted(os.listdir(f"/proc/{st.pid}/task"))
    assert rcore_cmd("dump", st.pid, "-o", core).returncode == 0
    assert st.send("q", 1) == ["worker gone"]
    assert len(os.listdir(f"/proc/{st.pid}/task")) == 1

    r = rcore_cmd("restore", st.pid, core)
    assert r.returncode == 0, r.stderr
    assert "1 created" in r.stdout
    assert sorted(os.listdir(f"/proc/{st.pid}/task")) == tids
    # The worker answers the main thread again: its TLS and stack are checked.
    assert st.send("xx", 2) == ["count 3 ok", "count 4 ok"]
    # The new thread got the old one's rseq, robust list, clear_child_tid, mask...
    assert_thread_state_back(st.pid, core, tmp_path)


def test_refuses_to_reopen_a_closed_pipe_and_changes_nothing(procs, build, tmp_path):
    st = Stepper(procs, build, tmp_path)
    st.send("x", 1)
    core = str(tmp_path / "state.core")
    assert rcore_cmd("dump", st.pid, "-o", core).returncode == 0
    assert st.send("p", 1) == ["pipe closed"]
    maps = open(f"/proc/{st.pid}/maps").read()
    r = rcore_cmd("restore", st.pid, core)
    assert r.returncode != 0
    assert "pipe" in r.stderr and "cannot be reopened" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not_traced(st.pid) and open(f"/proc/{st.pid}/maps").read() == maps
    assert st.send("x", 1) == ["count 2 ok"]


def test_changed_executable_refused_unless_forced(procs, build, tmp_path):
    binary = str(tmp_path / "restore_state")
    with open(build("restore_state"), "rb") as src, open(binary, "wb") as dst:
        dst.write(src.read())
    os.chmod(binary, 0o755)
    work = tmp_path / "work"
    work.mkdir()
    out = str(tmp_path / "state.out")
    p = procs.start([binary, str(work)], stdout=open(out, "ab"), stdin=subprocess.PIPE)
    wait_lines(out, 1)
    p.stdin.write(b"x")
    p.stdin.flush()
    wait_lines(out, 2)
    core = str(tmp_path / "state.core")
    assert rcore_cmd("dump", p.pid, "-o", core).returncode == 0
    os.utime(binary, (1, 1))            # the executable's mtime no longer matches
    r = rcore_cmd("restore", p.pid, core)
    assert r.returncode != 0 and "mtime, ctime differ" in r.stderr and "--force" in r.stderr
    assert not_traced(p.pid)
    r = rcore_cmd("restore", "--force", p.pid, core)
    assert r.returncode == 0, r.stderr
    p.stdin.write(b"x")
    p.stdin.flush()
    assert wait_lines(out, 3)[2] == "count 2 ok"


def test_restore_stop_leaves_it_stopped_untraced(procs, build, tmp_path):
    st = Stepper(procs, build, tmp_path)
    st.send("x", 1)
    core = str(tmp_path / "state.core")
    assert rcore_cmd("dump", st.pid, "-o", core).returncode == 0
    st.send("m", 1)
    r = rcore_cmd("restore", "--stop", st.pid, core)
    assert r.returncode == 0, r.stderr
    status = wait_for(lambda: (lambda s: s if s["State"].startswith("T") else None)(
        proc_status(st.pid)), what="stopped state")
    assert status["TracerPid"] == "0"
    os.kill(st.pid, 18)     # SIGCONT
    assert st.send("x", 1) == ["count 2 ok"]


def test_default_core_name_is_core_pid(procs, build, tmp_path):
    st = Stepper(procs, build, tmp_path)
    st.send("x", 1)
    assert rcore_cmd("dump", st.pid, cwd=tmp_path).returncode == 0
    st.send("m", 1)
    r = rcore_cmd("restore", st.pid, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert st.send("x", 1) == ["count 2 ok"]


def test_thread_checkpointed_in_nanosleep_resumes(procs, build, tmp_path):
    out = str(tmp_path / "ticks")
    p = procs.start([build("restore_ticker")], stdout=open(out, "ab"))
    wait_lines(out, 3)
    core = str(tmp_path / "ticker.core")
    before = len(read_lines(out))
    assert rcore_cmd("dump", p.pid, "-o", core).returncode == 0
    at_dump = len(read_lines(out))
    with CoreFile(core) as c:
        assert c.state.threads[0].regs["orig_rax"] in (SYS["nanosleep"], 230)
    wait_lines(out, at_dump + 3)
    restored_at = len(read_lines(out))
    r = rcore_cmd("restore", p.pid, core)
    assert r.returncode == 0, r.stderr
    lines = wait_lines(out, restored_at + 6)
    ticks = [int(line.split()[1]) for line in lines]
    back = [i for i in range(1, len(ticks)) if ticks[i] != ticks[i - 1] + 1]
    # One jump back, to the tick after the checkpoint, then it counts on.
    assert len(back) == 1 and back[0] >= restored_at - 1
    after = ticks[back[0]:]
    assert before < after[0] <= at_dump + 1
    assert after == list(range(after[0], after[0] + len(after)))
    assert not_traced(p.pid)


PY_LOOP = r"""
import sys
class Account:
    def __init__(self):
        self.history = []
        self.total = 0
    def add(self, n):
        self.history.append(n)
        self.total += n * n
acct = Account()
log = open(sys.argv[1], "w")
for line in sys.stdin:
    acct.add(len(acct.history) + 1)
    log.write(f"{len(acct.history)} {acct.total} {sum(acct.history)}\n")
    log.flush()
    print(len(acct.history), acct.total, flush=True)
"""


def test_python_rolled_back_twenty_times(procs, tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(PY_LOOP)
    log = tmp_path / "log"
    out = str(tmp_path / "py.out")
    p = procs.start(["/usr/bin/python3", str(script), str(log)], stdout=open(out, "ab"),
                    stdin=subprocess.PIPE)

    def step(n):
        before = len(read_lines(out))
        p.stdin.write(b"x\n" * n)
        p.stdin.flush()
        return wait_lines(out, before + n)[before:]

    step(5)
    core = str(tmp_path / "py.core")
    assert rcore_cmd("dump", p.pid, "-o", core).returncode == 0
    after_checkpoint = step(3)
    log_after = log.read_bytes()
    for _ in range(20):
        r = rcore_cmd("restore", p.pid, core)
        assert r.returncode == 0, r.stderr
        assert step(3) == after_checkpoint
        assert log.read_bytes() == log_after
    assert not_traced(p.pid)


# --- refusals: nothing changes, the process runs on untraced ------------------------

def _ticking(procs, build, tmp_path, *args):
    out = str(tmp_path / "ticks")
    p = procs.start([build("restore_ticker"), *args], stdout=open(out, "ab"))
    wait_lines(out, 2)
    return p, out


def _refused(pid, out, core, words):
    mem_before = open(f"/proc/{pid}/maps").read()
    r = rcore_cmd("restore", pid, core)
    assert r.returncode != 0
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rcore: "), err
    for w in words:
        assert w in err, err
    assert not_traced(pid)
    assert open(f"/proc/{pid}/maps").read() == mem_before
    n = len(read_lines(out))
    wait_lines(out, n + 2)          # still making progress
    return err


def test_refuses_core_of_another_program(procs, build, tmp_path):
    other = procs.start(["sleep", "60"])
    wait_for(lambda: os.path.exists(f"/proc/{other.pid}/exe")
             and os.readlink(f"/proc/{other.pid}/exe").endswith("sleep"), what="sleep exec")
    core = str(tmp_path / "sleep.core")
    assert rcore_cmd("dump", other.pid, "-o", core).returncode == 0
    p, out = _ticking(procs, build, tmp_path)
    _refused(p.pid, out, core, ["checkpoint of", "sleep", "differ", "--force"])


def test_refuses_core_whose_library_was_replaced(procs, build, tmp_path):
    lib = str(tmp_path / "librestore.so")
    src = os.path.join(os.path.dirname(__file__), "progs", "restore_lib.c")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", lib, src], check=True)
    p, out = _ticking(procs, build, tmp_path, lib)
    core = str(tmp_path / "t.core")
    assert rcore_cmd("dump", p.pid, "-o", core).returncode == 0
    # A new build installed over the old one (a new file renamed into place, as
    # package managers and `install` do: the running process keeps the old one).
    subprocess.run(["gcc", "-shared", "-fPIC", "-DVALUE=1000", "-o", lib + ".new", src],
                   check=True)
    os.rename(lib + ".new", lib)
    _refused(p.pid, out, core, [lib, "changed since the checkpoint"])


def test_refuses_random_file(procs, build, tmp_path):
    p, out = _ticking(procs, build, tmp_path)
    junk = tmp_path / "junk"
    junk.write_bytes(os.urandom(100000))
    _refused(p.pid, out, str(junk), ["not an ELF file"])


def test_refuses_truncated_core(procs, build, tmp_path):
    p, out = _ticking(procs, build, tmp_path)
    core = str(tmp_path / "t.core")
    assert rcore_cmd("dump", p.pid, "-o", core).returncode == 0
    os.truncate(core, os.path.getsize(core) // 2)
    _refused(p.pid, out, core, ["truncated"])


def test_refuses_missing_process_and_file(procs, build, tmp_path):
    p, out = _ticking(procs, build, tmp_path)
    _refused(p.pid, out, str(tmp_path / "nothing"), ["no such file"])
    r = rcore_cmd("restore", 999999999, str(tmp_path / "nothing"))
    assert r.returncode != 0 and "no such process" in r.stderr


def test_python_api(procs, build, tmp_path):
    import rcore
    st = Stepper(procs, build, tmp_path)
    st.send("x", 1)
    core = str(tmp_path / "api.core")
    rcore.dump(st.pid, core)
    st.send("m", 1)
    s = rcore.restore(st.pid, core)
    assert s.pid == st.pid and s.threads == 2 and s.threads_ended == 1
    assert s.not_restored == []
    assert st.send("x", 1) == ["count 2 ok"]


def test_failure_midway_kills_the_half_restored_process(procs, build, tmp_path, monkeypatch):
    import importlib
    import rcore
    from rcore.errors import InjectedSyscallError, RcoreError
    restore_mod = importlib.import_module("rcore.restore")    # the module, not the function
    st = Stepper(procs, build, tmp_path)
    st.send("x", 1)
    core = str(tmp_path / "mid.core")
    rcore.dump(st.pid, core)
    st.send("m", 1)
    real = restore_mod.rebuild_address_space

    def fails_after_rebuilding(pid, *args, **kwargs):
        real(pid, *args, **kwargs)
        raise InjectedSyscallError(pid, "mmap", 12)       # as if the kernel said ENOMEM
    monkeypatch.setattr(restore_mod, "rebuild_address_space", fails_after_rebuilding)
    with pytest.raises(RcoreError, match="failed midway .*ENOMEM|failed midway .*memory"):
        rcore.restore(st.pid, core)
    # Killed rather than left to run half-restored, and not left traced: gone.
    # (Here the tracer is also its parent, so rcore's wait reaped it already.)
    st.p.wait(timeout=10)
    assert not os.path.exists(f"/proc/{st.pid}")


def test_any_starting_layout_another_instance_becomes_the_checkpoint(procs, build, tmp_path):
    """The engine restart builds on: a process of the same program with an
    entirely different layout (ASLR) is rebuilt into the checkpointed one:
    everything unmapped and mapped again, [vdso]/[vvar] moved, descriptors
    reopened, registers set.  It then runs on as the checkpointed process."""
    a_out, b_out = str(tmp_path / "a.out"), str(tmp_path / "b.out")
    a = procs.start([build("restore_ticker")], stdout=open(a_out, "ab"))
    b = procs.start([build("restore_ticker")], stdout=open(b_out, "ab"))
    wait_lines(a_out, 3)
    wait_lines(b_out, 3)
    core = str(tmp_path / "a.core")
    assert rcore_cmd("dump", "--kill", a.pid, "-o", core).returncode == 0
    a.wait(timeout=10)
    a_ticks = len(read_lines(a_out))
    r = rcore_cmd("restore", "--force", b.pid, core)     # another process: forced
    assert r.returncode == 0, r.stderr
    assert f"the checkpoint is of process {a.pid}, not {b.pid}" in r.stdout
    with CoreFile(core) as c:
        layout = {(m.start, m.end, m.path) for m in c.state.mappings if m.path.startswith("/")
                  or m.path in ("[vdso]", "[vvar]")}
    now = open(f"/proc/{b.pid}/maps").read()
    for start, end, path in layout:
        assert f"{start:x}-{end:x}" in now and path in now
    # B carries on A's count in A's output file (fd 1 reopened by path, O_APPEND).
    # (a tick or two may have come between the checkpoint and the kill)
    lines = wait_lines(a_out, a_ticks + 3)
    ticks = [int(line.split()[1]) for line in lines]
    back = [i for i in range(1, len(ticks)) if ticks[i] != ticks[i - 1] + 1]
    assert len(back) <= 1 and ticks[0] == 1
    if back:
        assert back[0] == a_ticks and ticks[back[0]] <= ticks[back[0] - 1]
    after = ticks[back[0]:] if back else ticks
    assert after == list(range(after[0], after[0] + len(after)))
    assert not_traced(b.pid)


def test_map_core_maps_large_regions_from_the_core(procs, build, tmp_path):
    st = Stepper(procs, build, tmp_path)
    st.send("xx", 2)
    core = str(tmp_path / "state.core")
    assert rcore_cmd("dump", st.pid, "-o", core).returncode == 0
    st.send("mx", 2)
    for _ in range(2):                  # a second rollback maps them again, too
        r = rcore_cmd("restore", "--map-core", st.pid, core)
        assert r.returncode == 0, r.stderr
        assert "MiB mapped from the core" in r.stdout
        # The worker's 8 MiB stack now comes from the core file, and all still holds.
        assert core in open(f"/proc/{st.pid}/maps").read()
        assert st.send("xx", 2) == ["count 3 ok", "count 4 ok"]
        st.send("m", 1)


def test_rcore_killed_mid_restore_kills_the_half_restored_process(procs, build, tmp_path):
    """Once a restore has begun to change the process, rcore dying must not leave it
    running half-restored: PTRACE_O_EXITKILL has the kernel kill it."""
    p = procs.start([build("ticker"), "1024"])
    wait_lines(p.out_path, 1, timeout=30)
    core = str(tmp_path / "big.core")
    assert rcore_cmd("dump", p.pid, "-o", core).returncode == 0
    r = subprocess.Popen([sys.executable, "-m", "rcore", "restore", str(p.pid), core],
                         env=dict(os.environ, PYTHONPATH=SRC), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_for(lambda: proc_status(p.pid).get("TracerPid", "0") != "0", interval=0.001,
             what="rcore freezing the target")
    time.sleep(0.04)        # into the comparison of 1 GiB, well after the first change
    assert r.poll() is None, "the restore ended before it could be interrupted"
    r.kill()
    r.wait()
    assert p.wait(timeout=10) == -signal.SIGKILL


def test_thousands_of_mappings_rolled_back(procs, build, tmp_path):
    """A layout of 6000 small mappings, 500 of them changed after the checkpoint:
    the rollback brings every one back and leaves the layout as it was."""
    import rcore
    p = procs.start([build("many_maps"), str(tmp_path / "pages"), "2000"])
    wait_lines(p.out_path, 1, timeout=30)
    with open(f"/proc/{p.pid}/maps") as f:
        before = f.read()
    core = str(tmp_path / "core")
    rcore.dump(p.pid, core)
    memfd = os.open(f"/proc/{p.pid}/mem", os.O_RDWR)
    try:
        with CoreFile(core) as c:
            anons = [m for m in c.state.mappings if not m.path and m.perms == "rw-p"
                     and m.stored == "all"][:500]
            for m in anons:
                os.pwrite(memfd, b"\xee", m.start)      # changed since the checkpoint
            saved = {m.start: c.read(m.start, 4096) for m in anons}
        s = rcore.restore(p.pid, core)
        assert s.not_restored == []
        for start, page in saved.items():
            assert os.pread(memfd, 4096, start) == page
    finally:
        os.close(memfd)
    with open(f"/proc/{p.pid}/maps") as f:
        assert f.read() == before
    assert proc_status(p.pid)["TracerPid"] == "0"
