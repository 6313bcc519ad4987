"""Shared memory and SysV IPC across a checkpoint, kill and restart: each C
program under tests/progs/shm_*.c and sysv_ipc.c sets up its objects, is
checkpointed, killed and restarted, then checks them itself and prints a
verdict."""

import os

import pytest

from test_fd_kinds import restarted_verdict


def test_shared_anonymous_memory_is_one_object_again(procs, build, tmp_path):
    lines, _, h = restarted_verdict(procs, build, tmp_path, "shm_anon")
    assert not h.warnings, h.warnings


def test_posix_shm_and_named_semaphores(procs, build, tmp_path):
    name = f"rcore-test-{tmp_path.name}"
    try:
        lines, _, h = restarted_verdict(procs, build, tmp_path, "shm_posix", name)
    finally:
        for leftover in ("sem", "gone", "kept", "held"):
            for path in (f"/dev/shm/{name}-{leftover}", f"/dev/shm/sem.{name}-{leftover}"):
                if os.path.exists(path):
                    os.unlink(path)
    assert not h.warnings, h.warnings
