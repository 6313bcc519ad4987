"""Process state beyond descriptors across a checkpoint, kill and restart: each
C program under tests/progs sets it up, is checkpointed, killed and restarted,
then checks its own state and prints a verdict (as test_fd_kinds does)."""

import fcntl
import os

import rcore

from conftest import rcore_cmd, wait_lines
from test_fd_kinds import restarted_verdict


def test_posix_timers_come_back_with_their_ids(procs, build, tmp_path):
    restarted_verdict(procs, build, tmp_path, "posix_timers")
    info = rcore_cmd("info", tmp_path / "core")
    assert "timer 0: clock 1, signal 10 to the process, value 0x1234" in info.stdout, info.stdout


def test_file_locks_and_leases_are_taken_again(procs, build, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    restarted_verdict(procs, build, tmp_path, "file_locks", str(locked))
    info = rcore_cmd("info", tmp_path / "core").stdout
    for words in ("holds write flock", "holds write POSIX lock 0-99, read POSIX lock 200-EOF",
                  "holds write OFD lock 10-19", "holds read lease"):
        assert words in info, info


def test_a_lock_taken_meanwhile_refuses_the_restart(procs, build, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    p = procs.start([build("file_locks"), str(tmp_path / "go"), str(locked)])
    wait_lines(p.out_path, 1)
    rcore.dump(p.pid, str(tmp_path / "core"), kill=True)
    p.wait(timeout=10)
    with open(locked / "flocked") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        res = rcore_cmd("restart", tmp_path / "core")
    assert res.returncode != 0
    assert f"cannot take its write flock on {locked / 'flocked'} again" in res.stderr, res.stderr
    assert not os.path.exists(f"/proc/{p.pid}")


def test_process_settings_come_back(procs, build, tmp_path):
    lines, _, _ = restarted_verdict(procs, build, tmp_path, "proc_settings")
    assert "guards installed" in lines     # this kernel has MADV_GUARD_INSTALL
    info = rcore_cmd("info", tmp_path / "core").stdout
    assert "THP disabled (prctl), child subreaper, oom_score_adj 123, 1 guard-page ranges" \
        in info, info


def test_deleted_files_directories_fifos_and_cwd_come_back(procs, build, tmp_path):
    where = tmp_path / "where"
    where.mkdir()
    restarted_verdict(procs, build, tmp_path, "deleted_ghosts", str(where))
    assert os.listdir(where) == []          # the ghosts are gone again


def test_unlinked_limit_is_said_at_dump(procs, build, tmp_path):
    where = tmp_path / "where"
    where.mkdir()
    p = procs.start([build("deleted_ghosts"), str(tmp_path / "go"), str(where)])
    wait_lines(p.out_path, 1)
    res = rcore_cmd("dump", "--unlinked-limit", "100", p.pid, "-o", tmp_path / "core")
    assert res.returncode == 0, res.stderr
    assert "bytes of data) is not stored in the core: more than the dump's --unlinked-limit" \
        in res.stderr and "a restart will refuse it" in res.stderr, res.stderr
