"""Faults during a dump must not hurt the target: a storm of signals, a seccomp
filter, rcore killed at any instant, and what a killed rcore leaves behind."""

import os
import signal
import subprocess

import rcore
from conftest import proc_status, read_lines, wait_for, wait_lines


def _counts(line):
    # "tick usr1=N rt=M" / "report usr1=N rt=M"
    fields = dict(f.split("=") for f in line.split()[1:])
    return int(fields["usr1"]), int(fields["rt"])


def test_dumps_under_a_signal_storm_and_thread_churn(build, procs, tmp_path):
    """100 dumps while another process sends SIGUSR1 and queued SIGRTMIN as fast as
    it can and the target creates and joins threads: every dump succeeds, and every
    SIGRTMIN the kernel accepted reaches the program exactly once (none lost or
    swallowed while rcore injected calls)."""
    target = procs.start([build("signal_storm")])
    wait_lines(target.out_path, 1)
    sender = procs.start([build("storm_sender"), str(target.pid)], stdout=subprocess.PIPE,
                         text=True)
    core = tmp_path / "core"
    failures = []
    for _ in range(100):
        try:
            rcore.dump(target.pid, str(core))
        except rcore.RcoreError as err:
            failures.append(str(err))
    sender.send_signal(signal.SIGTERM)
    sent_rt = int(sender.communicate(timeout=10)[0].split("=")[1])
    assert failures == []
    os.unlink(core)
    assert sent_rt > 100
    # the signals still queued reach the program; then it reports its count
    wait_for(lambda: int(proc_status(target.pid).get("ShdPnd", "1"), 16) == 0,
             what="the signal queue drained")
    n = len(read_lines(target.out_path))
    os.kill(target.pid, signal.SIGUSR2)
    lines = wait_for(lambda: [ln for ln in read_lines(target.out_path)[n:]
                              if ln.startswith("report")], what="the report")
    usr1, rt = _counts(lines[0])
    assert rt == sent_rt and usr1 > 0
    st = proc_status(target.pid)
    assert st["TracerPid"] == "0" and st["State"][0] in "SR"
