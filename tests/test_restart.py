"""rcore restart with C programs: each is checkpointed mid-work, SIGKILLed, started
again from its core as a new process, and must finish with the output of an
uninterrupted run (the programs check their own state and print ok/fail)."""

import os
import shutil
import signal
import tempfile
import time

import rcore
from conftest import checkpoint_and_kill, read_lines, restart, wait_for, wait_lines
from rcore.elf.reader import CoreFile


def start_state_pair(build, procs, tmp_path, steps):
    """Two runs of restart_state, each in a directory of its own: a reference that
    is never interrupted, and the one to checkpoint."""
    exe = build("restart_state")
    runs = []
    for name in ("ref", "run"):
        (tmp_path / name).mkdir()
        runs.append(procs.start([exe, str(tmp_path / name), str(steps)]))
    return runs


def finished_output(p, timeout=30):
    assert p.wait(timeout=timeout) == 0
    return read_lines(p.out_path)


def test_single_threaded_state(build, procs, tmp_path):
    ref, p = start_state_pair(build, procs, tmp_path, 8)
    wait_lines(p.out_path, 3)
    checkpoint_and_kill(p, tmp_path / "core")
    h = restart(procs, tmp_path / "core")
    assert h.pid == p.pid
    assert h.wait(timeout=30) == 0
    out = read_lines(p.out_path)
    assert [line for line in out if "fail" in line] == []
    assert out == finished_output(ref)
    assert out[-1] == "done" and sum(line.startswith("check ") for line in out) == 25


def test_threads_mutex_tls(build, procs, tmp_path):
    exe = build("restart_threads")
    ref = procs.start([exe, "300"])
    p = procs.start([exe, "300"])
    wait_lines(p.out_path, 1)
    time.sleep(0.2)                     # the workers are mid-way
    checkpoint_and_kill(p, tmp_path / "core")
    with CoreFile(str(tmp_path / "core")) as c:
        tids = [t.tid for t in c.state.threads]
    assert len(tids) == 5
    h = restart(procs, tmp_path / "core")
    assert sorted(int(t) for t in os.listdir(f"/proc/{h.pid}/task")) == sorted(tids)
    assert h.wait(timeout=30) == 0
    out = read_lines(p.out_path)
    assert out == finished_output(ref)
    assert "shared 1200 sum 1200 ok" in out and "pthread_kill ok" in out


def test_fpu_sse_avx_registers_mid_computation(build, procs, tmp_path):
    p = procs.start([build("restart_fpu"), "1200000000"])
    wait_lines(p.out_path, 1)
    time.sleep(0.3)
    checkpoint_and_kill(p, tmp_path / "core")
    with CoreFile(str(tmp_path / "core")) as c:
        k = c.state.threads[0].regs
    h = restart(procs, tmp_path / "core")
    assert h.wait(timeout=30) == 0
    assert read_lines(p.out_path) == [
        "start", "iterations 1200000000",
        "avx 1200000000.0 2400000000.0 3600000000.0 4800000000.0",
        "sse 1200000000.0 2400000000.0", "x87 1200000000.0"]
    assert k["orig_rax"] == (1 << 64) - 1      # it was checkpointed in user code


def test_restart_twice_and_chain(build, procs, tmp_path):
    ref, p = start_state_pair(build, procs, tmp_path, 12)
    wait_lines(p.out_path, 2)
    checkpoint_and_kill(p, tmp_path / "core1")
    # First restart from core1, killed; then core1 again, checkpointed at a later
    # step; then the restarted process's own checkpoint, run to the end.
    h = restart(procs, tmp_path / "core1")
    wait_lines(p.out_path, 4)
    h.kill()
    h.wait(timeout=10)
    h = restart(procs, tmp_path / "core1")
    wait_lines(p.out_path, 6)
    rcore.dump(h.pid, str(tmp_path / "core2"), kill=True)
    assert h.wait(timeout=10) == -signal.SIGKILL
    h = restart(procs, tmp_path / "core2")
    assert h.wait(timeout=30) == 0
    out = read_lines(p.out_path)
    assert [line for line in out if "fail" in line] == []
    assert out == finished_output(ref)


def test_heap_grows_after_lazy_restart(build, procs, tmp_path):
    """--lazy: memory comes from the core on first touch; the checks (heap, brk
    growth, pipe, signals...) must pass all the same."""
    exe = build("restart_state")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    p = procs.start([exe, str(run_dir), "6"])
    wait_lines(p.out_path, 2)
    checkpoint_and_kill(p, tmp_path / "core")
    h = restart(procs, tmp_path / "core", lazy=True)
    maps = open(f"/proc/{h.pid}/maps").read()
    assert str(tmp_path / "core") in maps       # the 4 MiB region comes from the core
    assert "[heap]" in maps and "[stack]" in maps
    assert h.wait(timeout=30) == 0
    out = read_lines(p.out_path)
    assert [line for line in out if "fail" in line] == [] and out[-1] == "done"


def test_any_pid(build, procs, tmp_path):
    exe = build("restart_threads")
    p = procs.start([exe, "200"])
    wait_lines(p.out_path, 1)
    rcore.dump(p.pid, str(tmp_path / "core"))     # the original runs on: PID taken
    h = restart(procs, tmp_path / "core", any_pid=True, stdout=str(tmp_path / "out2"))
    assert h.pid != p.pid
    h.kill()
    h.wait(timeout=10)
    assert p.wait(timeout=30) == 0


def test_credentials_come_back_when_root_restarts(build, procs, tmp_path):
    """A process of an unprivileged user, restarted by root, runs as that user again
    and with no capability more.  (The restarted process maps its files as that
    user, so the program must lie where the user can reach it.)"""
    public = tempfile.mkdtemp(prefix="rcore-test-")
    try:
        os.chmod(public, 0o755)
        exe = shutil.copy(build("ticker"), public)
        p = procs.start(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", exe])
        wait_lines(p.out_path, 2)
        checkpoint_and_kill(p, tmp_path / "core")
        h = restart(procs, tmp_path / "core")
        status = dict(line.split(":\t", 1)
                      for line in open(f"/proc/{h.pid}/status").read().splitlines()
                      if ":\t" in line)
        assert status["Uid"].split() == ["65534"] * 4
        assert status["Gid"].split() == ["65534"] * 4
        assert status["Groups"].strip() == ""
        assert int(status["CapEff"], 16) == 0
        n = len(read_lines(p.out_path))
        wait_lines(p.out_path, n + 2)
        h.kill()
        h.wait(timeout=10)
    finally:
        shutil.rmtree(public)


def restarted_output(procs, tmp_path, argv, ready=lambda p: None):
    """Start argv, wait for its first line (and ready(p)), checkpoint and kill it,
    restart it; once it has exited 0, return every line it printed."""
    p = procs.start(argv)
    wait_lines(p.out_path, 1)
    ready(p)
    checkpoint_and_kill(p, tmp_path / "core")
    h = restart(procs, tmp_path / "core")
    assert h.wait(timeout=30) == 0
    return read_lines(p.out_path)


def test_prot_none_memory_keeps_its_contents(build, procs, tmp_path):
    # Written, then made PROT_NONE: the bytes are the program's, though it cannot
    # read them until it mprotects them back (a silent loss before).
    assert restarted_output(procs, tmp_path, [build("prot_none"), "3"]) == [
        "ready", "prot_none ok"]


def test_sigtrap_handler_comes_back(build, procs, tmp_path):
    assert restarted_output(procs, tmp_path, [build("sigtrap_handler"), "2"]) == [
        "ready", "traps 2"]


def test_poll_with_a_timeout_times_out_after_restart(build, procs, tmp_path):
    def in_poll(p):
        wait_for(lambda: open(f"/proc/{p.pid}/syscall").read().split()[0] == "7",
                 what="the program in poll()")
    assert restarted_output(procs, tmp_path, [build("poll_timeout"), "3000"], in_poll) == [
        "polling", "poll 0 timeout"]


def test_signals_pending_for_a_thread_not_the_leader(build, procs, tmp_path):
    """A thread's own pending signals (the dump asks for them only when the
    thread says it has some) are in the core under that thread, and come back
    to it: it takes them, with their value, after the restart."""
    exe = build("thread_pending")
    ref = procs.start([exe])
    p = procs.start([exe])
    wait_lines(ref.out_path, 1)
    ref.send_signal(signal.SIGUSR2)
    wait_lines(p.out_path, 1)
    checkpoint_and_kill(p, tmp_path / "core")
    with CoreFile(str(tmp_path / "core")) as c:
        pending = [sorted(int.from_bytes(info[:4], "little") for info in t.pending)
                   for t in c.state.threads]
    assert len(pending) == 3 and pending[0] == []
    assert sorted(pending[1:]) == [[], [signal.SIGUSR1, signal.SIGRTMIN + 3]]
    h = restart(procs, tmp_path / "core")
    os.kill(h.pid, signal.SIGUSR2)
    assert h.wait(timeout=30) == 0
    out = sorted(read_lines(p.out_path))
    assert out == sorted(finished_output(ref))
    assert "first RTMIN+3 555" in out and "first SIGUSR1 0" in out and "second pending none" in out
