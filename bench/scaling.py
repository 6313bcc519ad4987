#!/usr/bin/env python3
"""How dump and restore scale with the number of mappings and of threads, next to
gdb's gcore on the same process, in one run.

    python3 bench/scaling.py [--maps 3000] [--threads 300] [--reps 3] [--dir DIR]
                             [--only maps|threads]

a) a process with --maps private file pages and as many two-page anonymous
   regions (3 mappings each: tests/progs/many_maps.c): rcore dump (its freeze and
   total time), rcore restore of the same process, gdb gcore.
b) a process with --threads threads in pause() and a ticker thread
   (bench/targets/threads.c): rcore dump (freeze, total, and the longest gap of
   the ticker, every pause of a dump counted), gdb gcore.
The freeze is rcore's DumpSummary.freeze_seconds: from the first thread seized to
the last one released.
Best of --reps (and the median of the freezes); rcore timed through its Python API.  Every process started here
is killed by PID at the end."""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))

from benchlib import end_process, longest_gap  # noqa: E402
from rcore import dump, restore  # noqa: E402


def build(workdir, source):
    out = os.path.join(workdir, os.path.splitext(os.path.basename(source))[0])
    subprocess.run(["gcc", "-O2", "-pthread", "-o", out, source], check=True)
    return out


def start(argv, workdir, procs):
    out = os.path.join(workdir, f"out.{len(procs)}")
    with open(out, "wb") as f:
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    p.out_path = out
    procs.append(p)
    deadline = time.monotonic() + 60
    while b"ready" not in open(out, "rb").read():
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{argv[0]} did not start")
        time.sleep(0.02)
    return p


def gcore_seconds(pid, path):
    t = time.perf_counter()
    subprocess.run(["gdb", "-batch", "-nx", "-iex", "set debuginfod enabled off", "-p", str(pid),
                    "-ex", f"gcore {path}"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - t
    os.unlink(path)
    return seconds


def measure(pid, workdir, reps, with_restore, ticker=None):
    """ticker: the target's output file, where it prints a 10 ms ticker."""
    core = os.path.join(workdir, "rcore.core")
    freeze, total, rest, gdb, gaps = [], [], [], [], []
    for _ in range(reps):
        time.sleep(0.1)              # ticks before the dump: its gap is measured
        t0 = time.monotonic()
        t = time.perf_counter()
        s = dump(pid, core)
        total.append(time.perf_counter() - t)
        freeze.append(s.freeze_seconds)
        if ticker:
            time.sleep(0.05)         # and after it
            gaps.append(longest_gap(ticker, t0, time.monotonic()))
        if with_restore:
            t = time.perf_counter()
            restore(pid, core)
            rest.append(time.perf_counter() - t)
        os.unlink(core)
    # gcore after all of rcore's dumps, not between them: for a while after
    # gdb detaches, a dump of the 1000-thread process froze it 15-25% longer
    for _ in range(reps):
        gdb.append(gcore_seconds(pid, os.path.join(workdir, "gdb.core")))
    line = (f"rcore dump {min(total) * 1000:.0f} ms (freeze {min(freeze) * 1000:.0f} ms, "
            f"median {statistics.median(freeze) * 1000:.0f} ms"
            + (f"; longest gap of the target's 10 ms ticker {min(gaps) * 1000:.0f} ms, "
               f"median {statistics.median(gaps) * 1000:.0f} ms" if gaps else "") + ")"
            + (f", rcore restore {min(rest) * 1000:.0f} ms" if rest else "")
            + f"; gdb gcore {min(gdb) * 1000:.0f} ms: rcore {min(gdb) / min(total):.1f}x faster")
    return line


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--maps", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=300)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir")
    ap.add_argument("--only", choices=("maps", "threads"), help="run a) or b) alone")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="rcore-bench-", dir=args.dir)
    procs = []
    try:
        if args.only != "threads":
            many_maps = build(workdir, os.path.join(ROOT, "tests", "progs", "many_maps.c"))
            p = start([many_maps, os.path.join(workdir, "pages"), str(args.maps)], workdir, procs)
            n = sum(1 for _ in open(f"/proc/{p.pid}/maps"))
            print(f"a) {n} mappings: " + measure(p.pid, workdir, args.reps, True))
        if args.only != "maps":
            threads = build(workdir, os.path.join(HERE, "targets", "threads.c"))
            p = start([threads, str(args.threads)], workdir, procs)
            print(f"b) {args.threads + 2} threads: " + measure(p.pid, workdir, args.reps, False,
                                                                ticker=p.out_path))
    finally:
        for p in procs:
            end_process(p)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
