"""Descriptor kinds across a checkpoint, kill and restart: each C program under
tests/progs/fd_*.c sets up its descriptors, is checkpointed, killed and
restarted, then checks its own state and prints a verdict."""

import os

import pytest
import rcore

from conftest import checkpoint_and_kill, children, rcore_cmd, read_lines, restart, wait_lines


def restarted_verdict(procs, build, tmp_path, prog, *args, **restart_args):
    """Run tests/progs/PROG.c through dump, kill and restart, and check its
    verdict; returns its output, the dump's summary and the restart's handle."""
    go = tmp_path / "go"
    p = procs.start([build(prog), str(go), *args])
    wait_lines(p.out_path, 1)
    summary = rcore.dump(p.pid, str(tmp_path / "core"), kill=True)
    p.wait(timeout=10)
    h = restart(procs, tmp_path / "core", **restart_args)
    go.touch()
    status = h.wait(30)
    lines = read_lines(p.out_path)
    assert lines and lines[-1] == "verdict: ok", "\n".join(lines)
    assert status == 0
    return lines, summary, h


@pytest.mark.parametrize("prog", ["fd_eventfd", "fd_timerfd", "fd_signalfd", "fd_memfd",
                                  "fd_epoll", "fd_pidfd"])
def test_kind_comes_back(procs, build, tmp_path, prog):
    restarted_verdict(procs, build, tmp_path, prog)


def fd_with_fdinfo(pid, line):
    """The fd of process pid whose fdinfo holds `line`."""
    for name in os.listdir(f"/proc/{pid}/fdinfo"):
        with open(f"/proc/{pid}/fdinfo/{name}") as f:
            if line in f.read().splitlines():
                return int(name)
    raise AssertionError(f"no fd of {pid} with {line!r}")


def test_pidfd_of_another_process_refused(procs, build, tmp_path):
    p = procs.start([build("fd_pidfd"), str(tmp_path / "go"), "child"])
    wait_lines(p.out_path, 1)
    child = children(p.pid)[0]
    procs.adopt(child)
    fd = fd_with_fdinfo(p.pid, f"Pid:\t{child}")
    checkpoint_and_kill(p, tmp_path / "core")
    res = rcore_cmd("restart", tmp_path / "core")
    assert res.returncode != 0
    assert f"fd {fd} is a pidfd of process {child}" in res.stderr, res.stderr


def test_inotify_watches_come_back_queued_events_lost(procs, build, tmp_path):
    watched = tmp_path / "watched-dir"
    watched.mkdir()
    _, summary, h = restarted_verdict(procs, build, tmp_path, "fd_inotify", str(watched))
    lost = "bytes of inotify events queued at the checkpoint are lost"
    assert any(lost in w for w in summary.warnings), summary.warnings
    assert any(lost in w for w in h.warnings), h.warnings
