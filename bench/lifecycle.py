#!/usr/bin/env python3
"""Benchmark of periodic checkpoints (rcore run's loop), in one run.

    python3 bench/lifecycle.py [--mib 1024] [--seconds 60] [--interval 1] [--dir DIR]

A target holds --mib MiB of written memory and rewrites 10 MiB a second (25
pages every 10 ms, printing its clock each time).  For --seconds it is
checkpointed every --interval seconds as `rcore run` does: a full core with
dirty tracking first, then incremental cores.  Then, for as long, full dumps of
the same process at the same interval.  For each checkpoint: its freeze (the
longest gap between the target's 10 ms lines while it ran; beside it the time
rcore held all threads stopped, which leaves out the seizing, the scheduling of
the target and its 10 ms rhythm), its time, its bytes on disk and, for
increments, the bytes the target wrote since the previous one.
Finally the target is stopped and checkpointed once more, incrementally and in
full: the chain read through must give the same memory as the full core, page
by page (the threads' rseq areas aside); then
the newest increment is restarted (the target killed first) and must run.
Targets (issue 12): each increment stores at most 2x the bytes written in its
interval, and its freeze stays under 50 ms."""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

from benchlib import end_process, longest_gap, read_file  # noqa: E402
from rcore import dump, restart  # noqa: E402
from rcore.diff import diff  # noqa: E402
from rcore.elf.reader import CoreFile  # noqa: E402

MiB = 1 << 20
PAGE = 4096
CHUNK = 1 << 20
PAGES_PER_TICK = 25


def ticks_between(out, t0, t1):
    return sum(1 for line in read_file(out).split(b"\n")
               if line.isdigit() and t0 <= int(line) / 1e9 < t1)


def on_disk(path):
    return os.stat(path).st_blocks * 512


def checkpoints(target, out, workdir, seconds, interval, incremental):
    """Checkpoint the target every interval for seconds; returns a row per
    checkpoint: (freeze, time, bytes on disk, bytes written since the last,
    the freeze rcore measured: from all threads stopped to their release)."""
    rows, parent, last_t = [], None, time.monotonic()
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        time.sleep(max(0.0, last_t + interval - time.monotonic()))
        n += 1
        path = os.path.join(workdir, f"{'inc' if incremental else 'full'}-{n:04d}.core")
        t0 = time.monotonic()
        if not incremental:
            s = dump(target.pid, path)
        elif parent is None:
            s = dump(target.pid, path, track=True)
        else:
            s = dump(target.pid, path, incremental=parent)
        t1 = time.monotonic()
        written = ticks_between(out, last_t, t0) * PAGES_PER_TICK * 4096
        rows.append((longest_gap(out, t0, t1), t1 - t0, on_disk(path), written,
                     s.freeze_seconds))
        if incremental:
            parent = path
        elif n > 1:
            os.unlink(os.path.join(workdir, f"full-{n - 1:04d}.core"))   # disk space
        last_t = t0
    return rows, parent


def pages_differing(a, b):
    """(addresses of the pages whose bytes differ between core a, read through its
    chain, and core b, the threads' rseq areas left out; how many pages differ
    only in those areas)."""
    with CoreFile(a) as ca, CoreFile(b) as cb:
        areas = [(t.rseq["ptr"], t.rseq["size"]) for t in cb.state.threads if t.rseq]
        pages, rseq = [], 0
        for seg in cb.segments:
            for at in range(seg.vaddr, seg.vaddr + seg.filesz, CHUNK):
                n = min(CHUNK, seg.vaddr + seg.filesz - at)
                x, y = bytearray(ca.read(at, n)), bytearray(cb.read(at, n))
                if x == y:
                    continue
                before = sum(x[i:i + PAGE] != y[i:i + PAGE] for i in range(0, n, PAGE))
                for ptr, size in areas:
                    lo, hi = max(ptr, at), min(ptr + size, at + n)
                    if lo < hi:
                        x[lo - at:hi - at] = y[lo - at:hi - at]
                after = [at + i for i in range(0, n, PAGE) if x[i:i + PAGE] != y[i:i + PAGE]]
                pages += after
                rseq += before - len(after)
        return pages, rseq


def report(name, rows):
    freezes = [r[0] * 1000 for r in rows]
    times = [r[1] for r in rows]
    sizes = [r[2] / MiB for r in rows]
    held = [r[4] * 1000 for r in rows]
    print(f"  {name}: {len(rows)} checkpoints; freeze median {statistics.median(freezes):.1f} "
          f"ms, max {max(freezes):.1f} ms (stopped by rcore: median "
          f"{statistics.median(held):.1f} ms, max {max(held):.1f} ms); time median "
          f"{statistics.median(times):.3f} s; on disk median {statistics.median(sizes):.1f} MiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--dir")
    args = ap.parse_args()
    workdir = args.dir or tempfile.mkdtemp(prefix="rcore-bench-lifecycle-")
    os.environ.setdefault("RCORE_STATE_DIR", os.path.join(workdir, "state"))
    binary = os.path.join(workdir, "lifecycle")
    subprocess.run(["gcc", "-O2", "-o", binary, os.path.join(HERE, "targets", "lifecycle.c")],
                   check=True)
    out = os.path.join(workdir, "target.out")
    target = subprocess.Popen([binary, str(args.mib)], stdout=open(out, "wb"))
    restarted = None
    try:
        while b"ready" not in read_file(out):
            time.sleep(0.05)
        time.sleep(1)
        inc, newest = checkpoints(target, out, workdir, args.seconds, args.interval, True)
        full, _ = checkpoints(target, out, workdir, args.seconds, args.interval, False)
        print(f"periodic checkpoints of a {args.mib} MiB process writing 10 MiB/s, every "
              f"{args.interval} s for {args.seconds} s each:")
        report("incremental", inc[1:])
        print(f"  (the first, full with tracking: freeze {inc[0][0] * 1000:.1f} ms, "
              f"{inc[0][1]:.3f} s, {inc[0][2] / MiB:.0f} MiB)")
        report("full", full)
        ratios = [r[2] / r[3] for r in inc[1:] if r[3]]
        worst_freeze = max(r[0] for r in inc[1:])
        print(f"  increments: bytes on disk / bytes written in the interval: median "
              f"{statistics.median(ratios):.2f}x, max {max(ratios):.2f}x (target 2x); "
              f"longest freeze {worst_freeze * 1000:.1f} ms (target 50 ms)")
        # the chain read through against a full core of the same (stopped) instant
        os.kill(target.pid, signal.SIGSTOP)
        last = os.path.join(workdir, "last-inc.core")
        same = os.path.join(workdir, "last-full.core")
        dump(target.pid, last, incremental=newest)
        dump(target.pid, same)
        d = diff(last, same)
        changed = [k for k, v in d["mappings"].items() if v]
        where, rseq = pages_differing(last, same)
        print(f"  newest increment through its chain against a full core of the same "
              f"instant: {len(where)} pages differ ({', '.join(f'{a:#x}' for a in where[:5])}"
              f"{'...' if len(where) > 5 else ''}) outside the threads' rseq areas, "
              f"{rseq} pages in them (the kernel rewrites their cpu fields after each "
              f"dump's injected calls); mappings that differ: {changed or 'none'}")
        end_process(target)
        t = time.monotonic()
        restarted = restart(last, detach=True, any_pid=True)
        print(f"  restart from the newest increment: {time.monotonic() - t:.2f} s "
              f"(read through the chain), pid {restarted.pid}")
        time.sleep(0.5)
        print(f"  restarted process alive: {os.path.exists(f'/proc/{restarted.pid}')}")
    finally:
        end_process(target)
        if restarted is not None:
            try:
                os.kill(restarted.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
