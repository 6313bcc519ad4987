"""Descriptor kinds across a checkpoint, kill and restart: each C program under
tests/progs/fd_*.c sets up its descriptors, is checkpointed, killed and
restarted, then checks its own state and prints a verdict."""

import pytest

from conftest import checkpoint_and_kill, read_lines, restart, wait_lines


def restarted_verdict(procs, build, tmp_path, prog, *args, **restart_args):
    """Run tests/progs/PROG.c through dump, kill and restart; returns its output
    after the restart (the last line is its verdict)."""
    go = tmp_path / "go"
    p = procs.start([build(prog), str(go), *args])
    wait_lines(p.out_path, 1)
    checkpoint_and_kill(p, tmp_path / "core")
    h = restart(procs, tmp_path / "core", **restart_args)
    go.touch()
    status = h.wait(30)
    lines = read_lines(p.out_path)
    assert lines and lines[-1] == "verdict: ok", "\n".join(lines)
    assert status == 0
    return lines, h


@pytest.mark.parametrize("prog", ["fd_eventfd", "fd_timerfd", "fd_signalfd", "fd_memfd",
                                  "fd_epoll"])
def test_kind_comes_back(procs, build, tmp_path, prog):
    restarted_verdict(procs, build, tmp_path, prog)
