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


class Procs:
    """Starts targets and remembers their PIDs; end() kills every one of them."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.popens = []
        self.pids = set()

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

    def end(self):
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
