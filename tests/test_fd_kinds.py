"""Descriptor kinds across a checkpoint, kill and restart: each C program under
tests/progs/fd_*.c sets up its descriptors, is checkpointed, killed and
restarted, then checks its own state and prints a verdict."""

import os
import socket
import sys

import pytest
import rcore

from conftest import (children, proc_status, rcore_cmd, read_lines, restart,
                      wait_for, wait_lines)


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
    res = rcore_cmd("dump", p.pid, "-o", tmp_path / "core", "--kill", "--no-children")
    assert res.returncode == 0, res.stderr
    assert f"rcore: warning: fd {fd} is a pidfd of process {child}" in res.stderr, res.stderr
    p.wait(timeout=10)
    res = rcore_cmd("restart", tmp_path / "core")            # the child is not carried
    assert res.returncode != 0 and f"({child})" in res.stderr, res.stderr
    # and accepting that, its pidfd is still refused, by name
    res = rcore_cmd("restart", "--without-children", tmp_path / "core")
    assert res.returncode != 0
    assert f"fd {fd} is a pidfd of process {child}" in res.stderr, res.stderr


def test_inotify_watches_come_back_queued_events_lost(procs, build, tmp_path):
    watched = tmp_path / "watched-dir"
    watched.mkdir()
    _, summary, h = restarted_verdict(procs, build, tmp_path, "fd_inotify", str(watched))
    lost = "bytes of inotify events queued at the checkpoint are lost"
    assert any(lost in w for w in summary.warnings), summary.warnings
    assert any(lost in w for w in h.warnings), h.warnings


def test_skipped_descriptors_are_disconnected_not_dev_null(procs, build, tmp_path):
    _, summary, h = restarted_verdict(procs, build, tmp_path, "fd_skipped",
                                      skip_unsupported=True)
    assert sum("a restart will refuse it" in w for w in summary.warnings) == 2, summary.warnings
    assert sum("disconnected socket" in w for w in h.warnings) == 2, h.warnings


def test_info_shows_each_descriptor_with_its_state_and_restart(procs, build, tmp_path):
    a, b = socket.socketpair()
    p = procs.start([build("fd_eventfd"), str(tmp_path / "go")], pass_fds=[a.fileno()])
    a.close()
    b.close()
    wait_lines(p.out_path, 1)
    rcore.dump(p.pid, str(tmp_path / "core"))
    out = rcore_cmd("info", tmp_path / "core").stdout
    assert "eventfd  anon_inode:[eventfd]  count 25\n" in out, out
    assert "count 3 semaphore\n" in out
    assert "restart: a new eventfd with the same count and flags" in out
    assert "socket" in out and "AF_UNIX SOCK_STREAM" in out
    assert "restart: a socket whose peer is closed, with the queued messages" in out
    assert "shares fd" in out                     # the dup of an eventfd


def test_memfd_mapped_shared_stays_one_file_with_its_fd(procs, build, tmp_path):
    restarted_verdict(procs, build, tmp_path, "fd_memfd", "map")


def test_memfd_mapped_without_descriptor(procs, build, tmp_path):
    _, _, h = restarted_verdict(procs, build, tmp_path, "fd_memfd_mapped")
    assert any("had no descriptor left" in w for w in h.warnings), h.warnings


@pytest.mark.parametrize("prog", ["fd_epoll", "fd_timerfd", "fd_memfd", "fd_pidfd"])
def test_restore_leaves_unchanged_descriptors_in_place(procs, build, tmp_path, prog):
    """rcore restore (the same live process) with these kinds present: they stay."""
    p = procs.start([build(prog), str(tmp_path / "go")])
    wait_lines(p.out_path, 1)
    rcore.dump(p.pid, str(tmp_path / "core"))
    res = rcore_cmd("restore", p.pid, tmp_path / "core")
    assert res.returncode == 0, res.stderr
    (tmp_path / "go").touch()
    assert p.wait(timeout=30) == 0
    assert read_lines(p.out_path)[-1] == "verdict: ok"


REPLACE_EVENTFD = """
import os, sys, time
fd = os.eventfd(5)
print(fd, flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
new = os.eventfd(9)
os.dup2(new, fd)
os.close(new)
print("replaced", flush=True)
time.sleep(100)
"""


def test_restore_refuses_an_eventfd_replaced_since(procs, tmp_path):
    p = procs.start([sys.executable, "-c", REPLACE_EVENTFD, str(tmp_path / "go")])
    fd = int(wait_lines(p.out_path, 1)[0])
    rcore.dump(p.pid, str(tmp_path / "core"))
    (tmp_path / "go").touch()
    wait_lines(p.out_path, 2)
    res = rcore_cmd("restore", p.pid, tmp_path / "core")
    assert res.returncode != 0
    assert f"fd {fd}" in res.stderr and "eventfd cannot be reopened" in res.stderr, res.stderr


@pytest.mark.parametrize("kind, state, what", [
    ("eventfd", {"count": "lots", "semaphore": False}, "count"),
    ("timerfd", {"clockid": 1, "flags": 0, "value_ns": -5, "interval_ns": 0, "ticks": 0},
     "value_ns"),
    ("epoll", {"watches": [{"tfd": 4, "events": 1}]}, "data"),
    ("inotify", {"watches": [], "queued": None}, "queued"),
    ("pidfd", {}, "pid"),
])
def test_bad_kind_state_in_a_core_is_named(kind, state, what):
    from rcore.fds import decode
    from rcore.state import FileDescriptor
    with pytest.raises(ValueError, match=f"fd 7 \\({kind}\\): bad .*{what}"):
        decode(FileDescriptor(fd=7, kind=kind, path="anon_inode:x", description=7,
                              kind_state=state))


def test_restore_puts_back_eventfd_signalfd_timerfd_says_epoll_changed(procs, build, tmp_path):
    go, marker = tmp_path / "go", tmp_path / "changed"
    p = procs.start([build("fd_rollback"), str(go), str(marker)])
    wait_lines(p.out_path, 1)
    rcore.dump(p.pid, str(tmp_path / "core"))
    go.touch()
    assert wait_lines(p.out_path, 2)[-1] == "changed"
    res = rcore_cmd("restore", p.pid, tmp_path / "core")
    assert res.returncode == 0, res.stderr
    assert "(epoll): its watches changed since the checkpoint" in res.stdout, res.stdout
    assert p.wait(timeout=30) == 0, read_lines(p.out_path)
    assert read_lines(p.out_path)[-1] == "verdict: ok"
