"""Clocks across a checkpoint, a kill, 5 s dead and a restart (timens.py):
CLOCK_MONOTONIC and CLOCK_BOOTTIME go on from their checkpointed values in a
time namespace by default, and jump with --host-clocks."""

import os
import time

import pytest
import rcore

from conftest import rcore_cmd, read_lines, restart, wait_lines

DEAD = 5


def _dead_then_restarted(procs, build, tmp_path, mode, times=1, **restart_args):
    go = tmp_path / "go"
    p = procs.start([build("time_continues"), str(go), mode])
    wait_lines(p.out_path, 1)
    time.sleep(0.2)                 # some readings before the checkpoint
    rcore.dump(p.pid, str(tmp_path / "core"), kill=True)
    p.wait(timeout=10)
    for i in range(times):
        if i:                       # checkpointed inside the time namespace it got
            rcore.dump(h.pid, str(tmp_path / "core"), kill=True)
            h.wait(10)
        time.sleep(DEAD)
        h = restart(procs, tmp_path / "core", **restart_args)
        time.sleep(0.2)             # some readings after the restart
    go.touch()
    status = h.wait(30)
    lines = read_lines(p.out_path)
    assert lines and lines[-1] == "verdict: ok", "\n".join(lines)
    assert status == 0
    return h


def test_clocks_go_on_from_the_checkpoint(procs, build, tmp_path):
    h = _dead_then_restarted(procs, build, tmp_path, "continue")
    assert not h.warnings
    info = rcore_cmd("info", tmp_path / "core")
    assert "clocks:   monotonic " in info.stdout, info.stdout


def test_host_clocks_jump(procs, build, tmp_path):
    _dead_then_restarted(procs, build, tmp_path, "jump", host_clocks=True)


def test_clocks_go_on_when_checkpointed_in_a_time_namespace(procs, build, tmp_path):
    _dead_then_restarted(procs, build, tmp_path, "continue", times=2)
