"""Process state beyond descriptors across a checkpoint, kill and restart: each
C program under tests/progs sets it up, is checkpointed, killed and restarted,
then checks its own state and prints a verdict (as test_fd_kinds does)."""

from conftest import rcore_cmd
from test_fd_kinds import restarted_verdict


def test_posix_timers_come_back_with_their_ids(procs, build, tmp_path):
    restarted_verdict(procs, build, tmp_path, "posix_timers")
    info = rcore_cmd("info", tmp_path / "core")
    assert "timer 0: clock 1, signal 10 to the process, value 0x1234" in info.stdout, info.stdout
