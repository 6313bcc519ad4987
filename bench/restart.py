#!/usr/bin/env python3
"""Benchmark of `rcore restart`, in one run.

    python3 bench/restart.py [--reps 3] [--dir DIR] [--sizes 64,1024] [--rcore PATH]

For each size (MiB of touched, incompressible anonymous memory), the heap target
(bench/targets/heap.c with TICK=1: it prints its CLOCK_MONOTONIC time every
10 ms) is started, checkpointed with rcore dump and killed.  Then, --reps times,
interleaved:
  a) copy:    the same bytes read from the core file (in the page cache) into
              fresh anonymous memory of this process: the least a restart that
              copies memory must do (page faults included); printed beside it,
              the copy alone into memory populated beforehand
  b) restart: rcore.restart(core); the time from the call to the first tick the
              restarted program prints (it is running by then)
  c) lazy:    the same with lazy=True (large regions mapped from the core)
  d) CLI:     `rcore restart --detach` through the installed launcher
              (benchlib.installed_rcore: this checkout in a temporary venv, or
              --rcore), against rcore.restart(core, detach=True): the time to
              return in both
Targets: restart within 1.5x of the copy; lazy under 50 ms for 1 GiB; the CLI
within 50 ms of the API (issue 12).
The tick resolution is 10 ms at worst (a program checkpointed in usleep()
resumes with EINTR and prints at once).  Every process started here is killed
by PID."""

import argparse
import mmap
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
sys.path.insert(0, SRC)

import rcore  # noqa: E402
from benchlib import installed_rcore  # noqa: E402
from rcore.elf.reader import CoreFile  # noqa: E402

MiB = 1 << 20


def _read(path):
    with open(path, "rb") as f:
        return f.read()


class Bench:
    def __init__(self, workdir, reps, rcore_cmd=None):
        self.dir = workdir
        self.reps = reps
        self.rcore_cmd = installed_rcore(workdir, rcore_cmd)
        self.pids = set()
        self.heap = os.path.join(workdir, "heap")
        subprocess.run(["gcc", "-O2", "-o", self.heap, os.path.join(HERE, "targets", "heap.c")],
                       check=True)

    def checkpoint(self, mib):
        out = os.path.join(self.dir, f"heap.{mib}.out")
        with open(out, "wb") as f:
            p = subprocess.Popen([self.heap, str(mib), str(mib), "1"], stdout=f,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pids.add(p.pid)
        deadline = time.monotonic() + 120
        while b"ready" not in _read(out):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"target did not start: {_read(out)!r}")
            time.sleep(0.02)
        time.sleep(0.05)
        core = os.path.join(self.dir, f"heap.{mib}.core")
        rcore.dump(p.pid, core, kill=True)
        p.wait()
        return core, out

    def copy(self, core, mib, populated=False):
        """The heap's bytes from the core file into fresh anonymous memory (its
        page faults included), or into memory populated beforehand (only the
        copy is timed: a lower bound no restart can reach)."""
        with CoreFile(core) as c:
            m = max((m for m in c.state.mappings if not m.file_backed),
                    key=lambda m: m.size)
            offset, _ = c.stored_range(m.start)
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | (mmap.MAP_POPULATE if populated else 0)
        buf = mmap.mmap(-1, mib * MiB, flags=flags)
        fd = os.open(core, os.O_RDONLY)
        try:
            t = time.perf_counter()
            view = memoryview(buf)
            pos = 0
            while pos < len(buf):
                n = os.preadv(fd, [view[pos:pos + 64 * MiB]], offset + pos)
                if n <= 0:
                    raise RuntimeError("short core")
                pos += n
            seconds = time.perf_counter() - t
        finally:
            os.close(fd)
            view.release()
            buf.close()
        return seconds

    def restart(self, core, out, lazy):
        """Seconds from rcore.restart() to the first tick the program prints."""
        t0 = time.monotonic_ns()
        t = time.perf_counter()
        h = rcore.restart(core, lazy=lazy)
        api = time.perf_counter() - t
        self.pids.add(h.pid)
        try:
            deadline = time.monotonic() + 30
            while True:
                ticks = [int(x) for x in _read(out).split() if x.isdigit()]
                later = [x for x in ticks if x > t0]
                if later:
                    return (min(later) - t0) / 1e9, api
                if time.monotonic() > deadline:
                    raise RuntimeError("the restarted program printed nothing")
                time.sleep(0.001)
        finally:
            h.kill()
            h.wait()

    def cli(self, core):
        """Seconds for the installed `rcore restart --detach` to return."""
        t = time.perf_counter()
        res = subprocess.run([self.rcore_cmd, "restart", "--detach", core],
                             capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - t
        self._end(int(res.stdout))
        return seconds

    def api_detached(self, core):
        """Seconds for rcore.restart(core, detach=True) to return."""
        t = time.perf_counter()
        h = rcore.restart(core, detach=True)
        seconds = time.perf_counter() - t
        h.close()
        self._end(h.pid)
        return seconds

    def _end(self, pid):
        self.pids.add(pid)
        os.kill(pid, signal.SIGKILL)
        while os.path.exists(f"/proc/{pid}"):
            time.sleep(0.005)

    def cleanup(self):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir")
    ap.add_argument("--sizes", default="64,1024")
    ap.add_argument("--rcore", metavar="PATH", help="an installed rcore launcher to time "
                    "(default: this checkout installed into a temporary venv)")
    args = ap.parse_args()
    workdir = args.dir or tempfile.mkdtemp(prefix="rcore-bench-restart-")
    bench = Bench(workdir, args.reps, args.rcore)
    results = []
    try:
        for mib in [int(s) for s in args.sizes.split(",")]:
            core, out = bench.checkpoint(mib)
            bench.restart(core, out, False)             # warm-up, not measured
            copies, populated, restarts, lazies, apis, detached, clis = [], [], [], [], [], [], []
            for _ in range(args.reps):
                copies.append(bench.copy(core, mib))
                populated.append(bench.copy(core, mib, populated=True))
                running, api = bench.restart(core, out, False)
                restarts.append(running)
                apis.append(api)
                lazies.append(bench.restart(core, out, True)[0])
            for _ in range(args.reps):
                detached.append(bench.api_detached(core))
                clis.append(bench.cli(core))
            cli, api_detached = min(clis), min(detached)
            copy, restart, lazy = min(copies), min(restarts), min(lazies)
            print(f"{mib:5d} MiB  copy {copy * 1000:7.1f} ms (into populated memory "
                  f"{min(populated) * 1000:.1f} ms)   restart {restart * 1000:7.1f} ms "
                  f"(api returns {min(apis) * 1000:.1f} ms)  "
                  f"ratio {restart / copy:4.2f}   lazy {lazy * 1000:6.1f} ms")
            print(f"{mib:5d} MiB  detached: CLI {cli * 1000:.1f} ms, API {api_detached * 1000:.1f} ms: "
                  f"CLI - API {(cli - api_detached) * 1000:.1f} ms")
            results.append((f"restart {mib} MiB within 1.5x of copy", restart / copy <= 1.5,
                            f"{restart / copy:.2f}x"))
            results.append((f"restart {mib} MiB: CLI within 50 ms of the API",
                            cli - api_detached <= 0.05, f"{(cli - api_detached) * 1000:.1f} ms"))
            if mib >= 1024:
                results.append((f"lazy {mib} MiB under 50 ms", lazy < 0.05,
                                f"{lazy * 1000:.1f} ms"))
            os.unlink(core)
    finally:
        bench.cleanup()
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
    for name, ok, value in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
