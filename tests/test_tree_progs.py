"""Process trees (issue 11), with the C programs tests/progs/tree_*.c: each sets up
a tree in the state under test, prints "ready", waits for the test's go file, then
checks its state and prints a verdict; the root exits 0 only if every process of
the tree found what it expected.  Each runs uninterrupted, and checkpointed at
"ready" with `rcore dump --kill`, restarted with `rcore restart` and let go.  A
restarted tree must also look, from outside, as it did at the dump: the same
PIDs, parents, process groups, session and zombies."""

import re
import subprocess

import pytest

from conftest import (dump_tree_and_kill, finish, read_lines, restart_tree, stat_fields, session_members,
                      start_tree, wait_for)

TIMEOUT = 120       # a hung tree fails the test instead of hanging it

RUNS = ["uninterrupted", "restarted"]


def tree_state(sid):
    """{pid: (ppid, pgid, zombie)} of the processes of session sid (the tree's
    root: its session leader), the root's ppid left out (rcore restart is its
    parent after a restart)."""
    state = {}
    for pid in session_members(sid, zombies=True):
        fields = stat_fields(pid)
        if fields:
            state[pid] = (None if pid == sid else int(fields[1]), int(fields[2]), fields[0] == "Z")
    return state


class Tree:
    """A tree program started at "ready"; go() lets it finish, through a
    checkpoint and a restart if asked."""

    def __init__(self, procs, build, tmp_path, name, *args):
        self.procs, self.tmp_path = procs, tmp_path
        self.go_file = tmp_path / "go"
        self.root = start_tree(procs, [build(name), str(self.go_file), *map(str, args)], cwd=tmp_path)
        wait_for(lambda: "ready" in self.lines(), timeout=60, what=f"{name} ready")

    def lines(self):
        return read_lines(self.root.out_path)

    def go(self, run, before_restart=None):
        """Let the tree finish (exit 0, verdict ok); run is one of RUNS.  Returns
        what `rcore restart` printed ("" if not restarted)."""
        waited = self.root
        if run == "restarted":
            core = self.tmp_path / "tree.core"
            before = tree_state(self.root.pid)
            dump_tree_and_kill(self.root, core)
            if before_restart:
                before_restart()
            waited = restart_tree(self.procs, core)
            # Until it is rebuilt, or rcore restart ended (refused, or failed midway).
            wait_for(lambda: tree_state(self.root.pid) == before or waited.poll() is not None,
                     timeout=60, what="the tree rebuilt")
            assert tree_state(self.root.pid) == before, read_lines(waited.out_path)
        self.go_file.touch()
        status = finish(waited, TIMEOUT)
        restart_out = "" if waited is self.root else open(waited.out_path, errors="replace").read()
        assert status == 0 and self.lines()[-1:] == ["verdict: ok"], (status, self.lines(), restart_out)
        return restart_out


@pytest.mark.parametrize("run", RUNS)
def test_zombie_and_live_child(procs, build, tmp_path, run):
    # The zombie comes back a zombie with its PID and exit status 7; the live
    # child is still the parent's child.
    tree = Tree(procs, build, tmp_path, "tree_zombie")
    zombie = re.match(r"zombie (\d+) live (\d+)", tree.lines()[0]).group(1)
    tree.go(run)
    assert f"reaped zombie {zombie}: status 0x700" in tree.lines()


@pytest.mark.parametrize("run", RUNS)
def test_session_and_process_groups(procs, build, tmp_path, run):
    # Session leader, its group and a child-led group of three: every process's
    # pid, ppid, pgid and sid unchanged (each checks its own; outside: tree_state).
    tree = Tree(procs, build, tmp_path, "tree_pgrp")
    groups = {pgid for _, pgid, _ in tree_state(tree.root.pid).values()}
    assert len(groups) == 2 and tree.root.pid in groups
    tree.go(run)


@pytest.mark.parametrize("run", RUNS)
def test_shared_anonymous_memory(procs, build, tmp_path, run):
    # MAP_SHARED|MAP_ANONYMOUS from before fork: still one memory (ping-pong).
    tree = Tree(procs, build, tmp_path, "tree_shared_anon")
    tree.go(run)
    assert "rounds 2200" in tree.lines()


@pytest.mark.parametrize("run", RUNS)
def test_shared_file_offset(procs, build, tmp_path, run):
    # One open file description in two processes: one offset, so their
    # alternating lines interleave exactly, before and after the checkpoint.
    out = tmp_path / "interleaved"
    tree = Tree(procs, build, tmp_path, "tree_shared_offset", out)
    tree.go(run)
    assert out.read_text() == "".join(f"{'PC'[i % 2]} {i // 2:03d}\n" for i in range(200))


@pytest.mark.parametrize("run", RUNS + ["restarted-after-ipcrm"])
def test_sysv_ipc(procs, build, tmp_path, run):
    # SysV shm, semaphores and a message queue shared by parent and child: values,
    # contents and queued messages kept, with the same ids; also when the objects
    # were removed after the dump (restart makes them again).
    tree = Tree(procs, build, tmp_path, "tree_sysv")
    shm, sem, msg = re.match(r"shm (\d+) sem (\d+) msg (\d+)", tree.lines()[0]).groups()
    ipcrm = ["ipcrm", "-m", shm, "-s", sem, "-q", msg]
    try:
        removed = (lambda: subprocess.run(ipcrm, check=True)) if run.endswith("ipcrm") else None
        tree.go(run.split("-")[0], before_restart=removed)
    finally:
        subprocess.run(ipcrm, capture_output=True)   # on success the program removed them


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("writer", ["writer-running", "writer-gone"])
def test_pipe_between_members(procs, build, tmp_path, run, writer):
    # 40000 bytes queued in a parent-to-child pipe at the checkpoint: exactly those
    # and the rest of the 2 MiB stream arrive (the child checks every byte).  Or,
    # the write end closed by then (a pipeline's writer that finished first):
    # exactly the queued bytes, then end of file.
    tree = Tree(procs, build, tmp_path, "tree_pipe", writer)
    assert "queued 40000" in tree.lines()
    tree.go(run)
    read = 50000 if writer == "writer-gone" else 2 << 20
    assert f"child read {read} bytes" in tree.lines()


@pytest.mark.parametrize("run", RUNS)
def test_socketpair_between_members(procs, build, tmp_path, run):
    # A Unix stream socket pair, 4 lines queued each way at the checkpoint: they
    # arrive, then 100 round trips (each side checks every line).
    Tree(procs, build, tmp_path, "tree_socketpair").go(run)


@pytest.mark.parametrize("run", RUNS)
def test_pdeath_and_exit_signals(procs, build, tmp_path, run):
    # PR_SET_PDEATHSIG SIGUSR1 fires when the grandchild's parent exits after the
    # restart.  The clone child's exit signal is still SIGUSR2, or the restart
    # said that it could not keep it (the kernel resets it at execve): never
    # silently.
    tree = Tree(procs, build, tmp_path, "tree_signals")
    restart_out = tree.go(run)
    if "c exit signal 12" not in tree.lines():
        assert run == "restarted" and "c exit signal 17" in tree.lines(), tree.lines()
        assert "exit signal SIGUSR2" in restart_out, restart_out
