"""Fixtures shared by all tests: compiling the C programs under tests/progs, and
starting target processes that are always ended by PID, even when a test fails."""

import os
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SRC = os.path.join(ROOT, "src")
PROGS = os.path.join(HERE, "progs")

if SRC not in sys.path:
    sys.path.insert(0, SRC)

import rcore  # noqa: E402  (from SRC, just put on the path)


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    """build("name") compiles tests/progs/name.c (once per session) and returns the
    binary's path."""
    outdir = tmp_path_factory.mktemp("bin")
    built = {}

    def _build(name, *flags):
        key = (name, flags)
        if key not in built:
            out = str(outdir / (name + ("-" + "-".join(f.strip("-") for f in flags) if flags else "")))
            subprocess.run(["gcc", "-g", "-O0", "-pthread", *flags, "-o", out,
                            os.path.join(PROGS, name + ".c")], check=True)
            built[key] = out
        return built[key]
    return _build


def stat_fields(pid):
    """/proc/PID/stat after the command name: [state, ppid, pgrp, session, ...]
    ([] if the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return []


def start_time(pid):
    """The start time of process pid (/proc/PID/stat field 22), None if it is gone:
    with the PID, it names one process."""
    fields = stat_fields(pid)
    return int(fields[19]) if len(fields) > 19 else None


def session_members(sid, zombies=False):
    """PIDs of the processes of session sid: the live ones, and zombies too if asked."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = stat_fields(name)
            if len(fields) > 3 and (zombies or fields[0] != "Z") and int(fields[3]) == sid:
                pids.append(int(name))
    return pids


def all_children(pid):
    """PIDs of the children of every thread of process pid ([] if it is gone)."""
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(c) for c in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return kids


class Procs:
    """Starts targets and remembers their PIDs; end() kills every one of them,
    and every process of the trees and sessions it was told to own."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.popens = []
        self.pids = set()
        self.trees = set()
        self.sessions = set()

    def start(self, argv, stdout=None, **kwargs):
        """Start argv with stdout to a file (returned as .out_path) unless given."""
        out_path = None
        if stdout is None:
            out_path = str(self.tmp_path / f"out.{len(self.popens)}")
            stdout = open(out_path, "wb")
        p = subprocess.Popen(argv, stdout=stdout, stderr=kwargs.pop("stderr", subprocess.STDOUT),
                             stdin=kwargs.pop("stdin", subprocess.DEVNULL), **kwargs)
        p.out_path = out_path
        self.popens.append(p)
        self.pids.add(p.pid)
        return p

    def adopt(self, pid):
        """A process this test did not start directly (e.g. a restarted one)."""
        self.pids.add(pid)

    def own_tree(self, pid):
        """At the end, kill pid and all its descendants (e.g. `rcore restart` and
        the tree it rebuilt, even inside a PID namespace of its own)."""
        self.trees.add((pid, start_time(pid)))

    def own_session(self, sid):
        """At the end, kill every process of session sid (a tree started with
        start_new_session=True, and the same tree restarted: it keeps its sid)."""
        assert sid != os.getsid(0)
        self.sessions.add(sid)

    def _end_trees(self):
        # Stop before killing: a killed parent's children are reparented and
        # could no longer be found as its descendants; a stopped one cannot fork.
        stopped = set()
        for _ in range(100):
            found = {pid for pid, start in self.trees if start_time(pid) == start}
            for sid in self.sessions:
                found.update(session_members(sid))
            for pid in stopped:
                found.update(all_children(pid))
            found -= stopped | {os.getpid(), 1}
            if not found:
                break
            for pid in found:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    pass
            stopped |= found
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def end(self):
        self._end_trees()
        for pid in self.pids:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
        for p in self.popens:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.end()


def wait_for(predicate, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def read_lines(path):
    with open(path, "rb") as f:
        return f.read().decode(errors="replace").splitlines()


def wait_lines(path, n, timeout=10.0):
    """Wait until the file at path has at least n complete lines; returns them."""
    return wait_for(lambda: (lambda ls: ls if len(ls) >= n else None)(read_lines(path)),
                    timeout, what=f"{n} lines in {path}")


def rcore_cmd(*args, **kwargs):
    """Run the rcore CLI as a user would (python -m rcore)."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "rcore", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=kwargs.pop("timeout", 300),
                          **kwargs)


def dump_as_nobody(pid, outdir):
    """`rcore dump PID` run by the unprivileged user nobody, into outdir (made
    writable for it); returns the CompletedProcess."""
    os.chmod(outdir, 0o777)
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-m", "rcore", "dump", str(pid), "-o",
                           os.path.join(outdir, "c")],
                          env=dict(os.environ, PYTHONPATH=SRC), capture_output=True, text=True)


def checkpoint_and_kill(p, core):
    """Dump Popen p with rcore, SIGKILL it and reap it, so that its PID is free."""
    rcore.dump(p.pid, str(core), kill=True)
    p.wait(timeout=10)
    assert not os.path.exists(f"/proc/{p.pid}")


def restart(procs, core, **kwargs):
    """rcore.restart, with the new process ended by the procs fixture."""
    h = rcore.restart(str(core), **kwargs)
    procs.adopt(h.pid)
    return h


def children(pid):
    """PIDs of the children of process pid (its main thread's)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def proc_status(pid):
    """Fields of /proc/PID/status as a dict ({} if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except FileNotFoundError:
        return {}


def start_tree(procs, argv, **kwargs):
    """Start argv as the root of a tree in a session of its own, every process of
    which (and of the same tree restarted: it keeps its session) the procs fixture
    kills at the end."""
    p = procs.start(argv, start_new_session=True, **kwargs)
    procs.own_session(p.pid)
    return p


def dump_tree_and_kill(p, core):
    """`rcore dump ROOT -o core --kill` of the tree rooted at Popen p (started by
    start_tree); returns when every process of it is gone and reaped, so that
    their PIDs are free for the restart."""
    r = rcore_cmd("dump", p.pid, "-o", core, "--kill")
    assert r.returncode == 0, r.stderr
    p.wait(timeout=30)
    wait_for(lambda: not session_members(p.pid), what="every process of the tree killed by dump --kill")
    # Orphans killed with the tree are reaped by init, not at once.
    wait_for(lambda: not session_members(p.pid, zombies=True), timeout=60,
             what="the killed tree's zombies reaped by init")
    return r


def restart_tree(procs, core, *flags, out=None):
    """Start `rcore restart [flags] core` in the foreground as a user would, in a
    session of its own; it and every process under it are killed at the end."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = procs.start([sys.executable, "-m", "rcore", "restart", *map(str, flags), str(core)],
                    stdout=out, env=env, start_new_session=True)
    procs.own_tree(p.pid)
    procs.own_session(p.pid)
    return p


def finish(p, timeout):
    """Wait for Popen p (a tree's root or `rcore restart` of it); its exit status.
    A tree that does not finish fails the test (the procs fixture then kills it)."""
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        out = open(p.out_path, errors="replace").read() if p.out_path else ""
        raise AssertionError(f"{p.args} still running after {timeout} s; its output:\n{out}")
