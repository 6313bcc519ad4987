#!/usr/bin/env python3
"""Benchmark of the restart of a process tree: rcore against CRIU, in one run.

    python3 bench/tree_restart.py [--reps 3] [--processes 10] [--mib 100] [--dir DIR]

The tree is bench/targets/treeheap.c: a root and --processes - 1 children, each
with --mib MiB of its own incompressible memory (touched after the fork: nothing
shared copy-on-write, so neither tool can store less than the memory), every
process writing a line "PID NS" every 10 ms to one O_APPEND file.  Chosen over a
shell pipeline because memory is what the restart of a real job spends its time
on, and because a line from each PID shows that every process runs again.  It is
started in a session of its own (setsid), so that both tools bring back the same
session and process group and the tree can be killed by its process group.

Each trial starts a fresh identical tree, checkpoints it with the commands users
type, and restarts it:
- rcore: `rcore dump ROOT -o DIR/tree.core --kill`,
         `rcore restart DIR/tree.core --detach`;
- CRIU:  `criu dump -t ROOT -D DIR --shell-job` (it kills the tree),
         `criu restore -d --shell-job -D DIR`.
Between the dump and the restart every process of the tree is gone and reaped
(this script is a child subreaper so that it reaps them itself at once: a PID
that a zombie still holds, even as a process group ID, cannot be taken again).
Measured for each: the wall time of the restart command; the time from its start
until every process of the tree has written a line again; the tree checked to be
back (every PID alive, not stopped, same executable, parent, process group and
session as at the checkpoint); the checkpoint's bytes on disk (allocated blocks)
and the dump command's wall time.  Trials alternate the tools (rcore, criu, criu,
rcore...), after one untimed warm-up of each on a small tree; best and worst of
--reps.  Both restarts read a checkpoint just written (in the page cache).
rcore runs as `python3 -m rcore` with its bytecode compiled, as an installed
rcore runs; the time of `python3 -m rcore --help` is printed beside it (the
interpreter's start, part of every rcore command).  If CRIU is not installed, or
cannot dump or restore here, that is printed with its error and rcore is
measured alone.  Every process started is killed by process group and by PID at
the end, even on failure; each checkpoint is deleted after its trial."""

import compileall
import ctypes
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

from benchlib import criu_path, read_file, tree_arguments  # noqa: E402

MiB = 1 << 20
PR_SET_CHILD_SUBREAPER = 36
TIMEOUT = 300


class ToolFailed(Exception):
    """A tool could not checkpoint or restart the tree (its own error in the text)."""


def stat_of(pid):
    """(state, ppid, pgid, sid) from /proc/PID/stat, or None once PID is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def exe_of(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:             # gone, or a zombie
        return None


def on_disk(paths):
    return sum(os.stat(p).st_blocks * 512 for p in paths)


def timed(argv, env=None):
    """Wall seconds of a command that must succeed (ToolFailed with its output if not)."""
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    seconds = time.perf_counter() - t
    if r.returncode:
        raise ToolFailed(f"{' '.join(argv)}: exit {r.returncode}: {(r.stdout + r.stderr).strip()}")
    return seconds


class Tree:
    """A running treeheap tree: its PIDs and what each had at the start."""

    def __init__(self, bench, mib):
        self.out = os.path.join(bench.dir, "tree.out")
        fd = os.open(self.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
        try:
            self.p = subprocess.Popen([bench.exe, str(bench.n), str(mib)], stdout=fd,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        finally:
            os.close(fd)
        self.root = self.p.pid
        self.pids = [self.root]
        deadline = time.monotonic() + TIMEOUT
        try:
            while read_file(self.out).count(b"ready") < bench.n:
                if self.p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the tree did not start: {read_file(self.out)[-200:]!r}")
                time.sleep(0.05)
        except BaseException:
            bench.kill(self)
            raise
        self.pids = sorted(int(line.split()[1]) for line in read_file(self.out).split(b"\n")
                           if line.startswith(b"ready"))
        self.expected = {pid: stat_of(pid)[1:] for pid in self.pids}

    def check_back(self, exe):
        """Raise ToolFailed unless every process is back as it was checkpointed."""
        for pid in self.pids:
            st = stat_of(pid)
            if st is None:
                raise ToolFailed(f"process {pid} of the tree is not back")
            state, ppid, pgid, sid = st
            want_ppid, want_pgid, want_sid = self.expected[pid]
            if state in "TtZX":
                raise ToolFailed(f"process {pid} is back in state {state}")
            if exe_of(pid) != exe:
                raise ToolFailed(f"process {pid} is back running {exe_of(pid)}")
            # The root's parent is whoever restarted it (then this subreaper).
            if (pid != self.root and ppid != want_ppid) or (pgid, sid) != (want_pgid, want_sid):
                raise ToolFailed(f"process {pid} is back with ppid/pgid/sid {ppid}/{pgid}/{sid}, "
                                 f"checkpointed {want_ppid}/{want_pgid}/{want_sid}")

    def timed_restart(self, argv, env=None):
        """(wall seconds of the command, seconds until every PID wrote a line again)."""
        seen, tail = set(), b""
        with open(self.out, "rb") as f:
            f.seek(0, os.SEEK_END)
            t = time.perf_counter()
            p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            command = running = None
            while command is None or running is None:
                now = time.perf_counter() - t
                if command is None and p.poll() is not None:
                    command = now
                    if p.returncode:
                        break
                if running is None:
                    tail += f.read()
                    lines = tail.split(b"\n")
                    tail = lines.pop()
                    seen.update(int(line.split()[0]) for line in lines if line.split())
                    if seen.issuperset(self.pids):
                        running = now
                if now > TIMEOUT:
                    p.kill()
                    p.wait()
                    raise ToolFailed(f"{' '.join(argv)}: not every process ran again within "
                                     f"{TIMEOUT} s (seen {sorted(seen)})")
                time.sleep(0.001)
        out, err = p.communicate()
        if p.returncode:
            raise ToolFailed(f"{' '.join(argv)}: exit {p.returncode}: "
                             f"{(out + err).decode(errors='replace').strip()}")
        return command, running


class Bench:
    def __init__(self, workdir, processes):
        self.dir, self.n = workdir, processes
        self.exe = os.path.join(workdir, "treeheap")
        subprocess.run(["gcc", "-O2", "-o", self.exe,
                        os.path.join(HERE, "targets", "treeheap.c")], check=True)
        self.criu = criu_path()
        self.env = dict(os.environ, PYTHONPATH=SRC)
        self.rcore = [sys.executable, "-m", "rcore"]

    def gone(self, pids):
        """Wait until every PID is gone, reaping those reparented to this subreaper."""
        deadline = time.monotonic() + 60
        left = set(pids)
        while left:
            for pid in list(left):
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass                # not (yet) our child: its parent or init reaps it
                if stat_of(pid) is None:
                    left.discard(pid)
            if left and time.monotonic() > deadline:
                raise RuntimeError(f"processes {sorted(left)} did not go away")
            time.sleep(0.001)

    def kill(self, tree):
        """SIGKILL the tree by process group and by PID, each checked to run this
        script's own treeheap (a PID of a tree that did not come back may have been
        taken by someone else's process), and wait until they are gone."""
        ours = [pid for pid in tree.pids if exe_of(pid) == self.exe]
        if exe_of(tree.root) == self.exe and tree.root != os.getpgrp():
            os.killpg(tree.root, signal.SIGKILL)       # its own session and group
        for pid in ours:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.gone(ours)

    def trial(self, tool, mib):
        """One fresh tree checkpointed and restarted by tool: a dict of the figures."""
        tree = Tree(self, mib)
        try:
            if tool == "rcore":
                core = os.path.join(self.dir, "tree.core")
                dump = timed(self.rcore + ["dump", str(tree.root), "-o", core, "--kill"],
                             self.env)
                restart = self.rcore + ["restart", core, "--detach"]
            else:
                images = os.path.join(self.dir, "criu-images")
                os.mkdir(images)
                dump = timed([self.criu, "dump", "-t", str(tree.root), "-D", images,
                              "--shell-job", "-o", os.path.join(self.dir, "criu-dump.log")])
                restart = [self.criu, "restore", "-d", "--shell-job", "-D", images,
                           "-o", os.path.join(self.dir, "criu-restore.log")]
            tree.p.wait()
            self.gone(tree.pids)
            files = glob.glob(core + "*") if tool == "rcore" else [
                os.path.join(images, f) for f in os.listdir(images)]
            stored = on_disk(files)
            command, running = tree.timed_restart(restart, self.env if tool == "rcore" else None)
            tree.check_back(self.exe)
            return {"dump": dump, "restart": command, "running": running, "bytes": stored,
                    "files": len(files)}
        finally:
            self.kill(tree)
            for path in glob.glob(os.path.join(self.dir, "tree.core*")):
                os.unlink(path)
            shutil.rmtree(os.path.join(self.dir, "criu-images"), ignore_errors=True)

    def criu_error(self, failure):
        """The failure, with the end of CRIU's log if it wrote one."""
        lines = []
        for log in ("criu-dump.log", "criu-restore.log"):
            path = os.path.join(self.dir, log)
            if os.path.exists(path):
                lines += [f"  {log}: {line}" for line in read_file(path).decode(
                    errors="replace").splitlines() if "Error" in line][-5:]
                os.unlink(path)
        return "\n".join([str(failure)] + lines)


def interpreter_start(bench):
    """Best of 3 wall times of `python3 -m rcore --help`."""
    return min(timed(bench.rcore + ["--help"], bench.env) for _ in range(3))


def main():
    args = tree_arguments(__doc__).parse_args()
    # Orphans of a killed tree come to this script, which reaps them at once.
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0):
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    compileall.compile_dir(SRC, quiet=1)
    workdir = tempfile.mkdtemp(prefix="rcore-bench-tree-restart-", dir=args.dir)
    bench = Bench(workdir, args.processes)
    tools = ["rcore"]
    if bench.criu:
        tools.append("criu")
        print(subprocess.run([bench.criu, "--version"], capture_output=True,
                             text=True).stdout.split("\n")[0].replace("Version", "criu"))
    else:
        print("criu: not installed (criu on PATH or /usr/local/sbin/criu): rcore alone")
    results = {tool: [] for tool in tools}
    try:
        print(f"a tree of {args.processes} processes, {args.mib} MiB each; files in {workdir}; "
              f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
        for tool in list(tools):        # warm-up: executables and modules in the page cache
            try:
                bench.trial(tool, 1)
            except ToolFailed as e:
                if tool == "rcore":
                    raise
                print(f"criu cannot checkpoint and restart this tree here, left out:\n"
                      f"{bench.criu_error(e)}")
                tools.remove(tool)
                del results[tool]
        startup = interpreter_start(bench)
        for i in range(args.reps):
            for tool in (tools if i % 2 == 0 else tools[::-1]):
                try:
                    r = bench.trial(tool, args.mib)
                except ToolFailed as e:
                    if tool == "rcore":
                        raise
                    print(f"run {i + 1}: criu failed, left out from here on:\n{bench.criu_error(e)}")
                    tools.remove(tool)
                    continue
                results[tool].append(r)
                print(f"run {i + 1}: {tool:5s}: restart command {r['restart']:.3f} s, every "
                      f"process running again after {r['running']:.3f} s, tree back (same PIDs); "
                      f"dump {r['dump']:.3f} s, {r['bytes'] / MiB:.1f} MiB on disk in "
                      f"{r['files']} files")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"`python3 -m rcore --help` (the interpreter's start, in every rcore command): "
          f"{startup * 1000:.0f} ms")
    print(f"{'tool':<6} {'restart: best':>14} {'worst':>10} {'all running: best':>18} "
          f"{'worst':>10} {'dump: best':>11} {'worst':>10} {'on disk':>10}")
    measured = [tool for tool in results if results[tool]]
    for tool in measured:
        rs = results[tool]
        row = [f"{min(r[k] for r in rs):>{w}.3f} s {max(r[k] for r in rs):>8.3f} s"
               for k, w in (("restart", 12), ("running", 16), ("dump", 9))]
        print(f"{tool:<6} {' '.join(row)} {max(r['bytes'] for r in rs) / MiB:>6.1f} MiB")
    if "criu" in measured:
        rc, cr = results["rcore"], results["criu"]
        for label, key in (("restart command", "restart"), ("every process running", "running"),
                           ("dump command", "dump")):
            ratio = min(r[key] for r in rc) / min(r[key] for r in cr)
            print(f"rcore / criu, {label} (best): {ratio:.2f}x")
        print(f"rcore / criu, bytes on disk: "
              f"{max(r['bytes'] for r in rc) / max(r['bytes'] for r in cr):.3f}x")
    else:
        print("criu: no figures in this run (see above)")


if __name__ == "__main__":
    main()
