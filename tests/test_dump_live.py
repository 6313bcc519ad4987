"""A dump interrupts the target for a moment; afterwards it must go on exactly as if
nothing happened: calls it was blocked in resume, threads keep coming and going."""

import os
import subprocess

import rcore
from conftest import proc_status, read_lines, wait_for, wait_lines
from rcore.elf.reader import CoreFile


def test_nanosleep_resumes_after_dump(build, procs, tmp_path):
    p = procs.start([build("blocked_syscall"), "nanosleep"])
    wait_lines(p.out_path, 1)
    rcore.dump(p.pid, str(tmp_path / "c"))
    assert p.wait(timeout=10) == 0
    # restarted through restart_syscall: the full sleep, no EINTR
    assert read_lines(p.out_path)[1] == "nanosleep ret=0 errno=0"


def test_blocked_read_resumes_after_dump(build, procs, tmp_path):
    p = procs.start([build("blocked_syscall"), "read"], stdin=subprocess.PIPE)
    wait_lines(p.out_path, 1)
    for i in range(3):
        rcore.dump(p.pid, str(tmp_path / f"c{i}"))
    with CoreFile(str(tmp_path / "c0")) as c:
        assert c.state.threads[0].regs["orig_rax"] == 0     # read(2), interrupted
    p.stdin.write(b"hello")
    p.stdin.close()
    assert p.wait(timeout=10) == 0
    assert read_lines(p.out_path)[1] == "read n=5 errno=0 data=hello"


def test_pause_still_interrupted_by_signal_after_dump(build, procs, tmp_path):
    p = procs.start([build("blocked_syscall"), "pause_with_handler"])
    wait_lines(p.out_path, 1)
    wait_for(lambda: proc_status(p.pid)["SigCgt"] != "0000000000000000")
    rcore.dump(p.pid, str(tmp_path / "c"))
    # As after any ptrace stop, the kernel's restart logic re-enters pause(); a signal
    # that came before the thread is back in the call would be handled outside it.
    wait_for(lambda: open(f"/proc/{p.pid}/syscall").read().startswith("34 "),
             what="the thread back in pause()")
    os.kill(p.pid, 10)
    assert p.wait(timeout=10) == 0
    assert read_lines(p.out_path)[1] == "pause ret=-1 errno=4 got=10"


def test_dump_while_threads_come_and_go(build, procs, tmp_path):
    p = procs.start([build("thread_churn")])
    wait_lines(p.out_path, 2)
    for i in range(5):
        path = str(tmp_path / f"c{i}")
        s = rcore.dump(p.pid, path)
        with CoreFile(path) as c:
            tids = [t.tid for t in c.state.threads]
            assert tids[0] == p.pid and len(set(tids)) == len(tids) == s.threads
            assert s.threads >= 5
            assert all(len(t.xstate) > 512 for t in c.state.threads)
        assert proc_status(p.pid)["TracerPid"] == "0"
    n = len(read_lines(p.out_path))
    wait_lines(p.out_path, n + 2)


def test_fork_copy_invisible_to_the_target(build, procs, tmp_path):
    p = procs.start([build("child_watch"), "256"])
    wait_lines(p.out_path, 2)
    before = len(read_lines(p.out_path))
    for i in range(3):
        s = rcore.dump(p.pid, str(tmp_path / f"c{i}"))
        assert s.threads == 1
    n = len(read_lines(p.out_path))
    assert n - before >= 6          # it ran (and looked) while the copies existed
    lines = wait_lines(p.out_path, n + 5)
    # no SIGCHLD ever, and wait(-1) never saw a child: ECHILD (10) throughout
    assert all(line.split()[1:] == ["sigchld=0", "wait=-1", "errno=10"] for line in lines), \
        [line for line in lines if "sigchld=0 wait=-1 errno=10" not in line][:3]
