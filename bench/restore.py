#!/usr/bin/env python3
"""Benchmark of `rcore restore` (rollback of a live process), in one run.

    python3 bench/restore.py [--mib 1024] [--reps 3] [--dir DIR]

A target holds --mib MiB of touched pseudo-random heap and is checkpointed once
with rcore dump, dirty tracking armed (dump --track).  Then, --reps times,
interleaved:
  t) 10 MiB changed (2560 pages spread over the heap), rcore.restore() using the
     tracking (only pages written since the checkpoint are compared)
  w) 10 MiB changed, a plain write of just those 2560 pages from the core
     through /proc/PID/mem (what a rollback that knew the changed pages for
     free would cost; registers are left: the rest of the process did not
     change)
  a) 10 MiB changed, rcore.restore(tracking=False): every stored page compared
  b) every page changed, rcore.restore(tracking=False)
  c) every page changed, a gdb-style full rewrite: gdb attached to the process
     writes every byte of every segment of the core back with
     gdb.Inferior.write_memory and sets the first thread's registers, as the
     original restore-core-file proposal did (only that is timed, not gdb's
     start-up or attach)
  d) every page changed, a plain full rewrite of every stored byte of the
     writable segments through /proc/PID/mem from this Python process, and the
     thread's registers (the fastest blind rewrite)
  e), f) as a) and b) with map_core=True (restore --map-core: the large
     anonymous regions mapped from the core file instead of written)
After every rollback the target's checksum of its heap must equal the one at the
checkpoint, or the run stops.  Printed: the best time of each, and the ratios.
rcore is timed through its Python API; every process started here is killed by
PID at the end; files go to --dir (default: a new temporary directory)."""

import argparse
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

from rcore import dump, restore  # noqa: E402
from rcore.apply import resume_regs  # noqa: E402
from rcore.elf.reader import CoreFile  # noqa: E402
from rcore.linux.ptrace import FrozenProcess  # noqa: E402

MiB = 1 << 20

GDB_WRITE = r"""
import sys, time
sys.path.insert(0, {src!r})
from rcore.elf.reader import CoreFile
inf = gdb.selected_inferior()
with CoreFile({core!r}) as core:
    t = time.perf_counter()
    for seg in core.segments:
        if seg.filesz:
            inf.write_memory(seg.vaddr, core.view(seg.offset, seg.filesz))
    # and the first thread's general registers, as the proposal did
    regs = core.state.threads[0].regs
    for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10",
                 "r11", "r12", "r13", "r14", "r15", "rip", "eflags", "orig_rax"):
        value = regs[name] - (1 << 64) if regs[name] >> 63 else regs[name]
        gdb.execute(f"set ${{name}} = {{value}}")
    print("GDB_WRITE_SECONDS", time.perf_counter() - t)
"""


class Target:
    def __init__(self, binary, mib, workdir):
        self.out = open(os.path.join(workdir, "target.out"), "w+b")
        self.p = subprocess.Popen([binary, str(mib)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.pid = self.p.pid
        if self.p.stdout.readline() != b"ready\n":
            raise RuntimeError("target did not start")

    def ask(self, cmd):
        self.p.stdin.write(cmd.encode() + b"\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().decode().strip()

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait()


def rcore_restore(t, core, map_core=False, tracking=True):
    s = time.perf_counter()
    summary = restore(t.pid, core, map_core=map_core, tracking=tracking)
    return time.perf_counter() - s, summary


def gdb_rewrite(t, core, workdir):
    script = os.path.join(workdir, "gdb_write.py")
    with open(script, "w") as f:
        f.write(GDB_WRITE.format(src=SRC, core=core))
    r = subprocess.run(["gdb", "-batch", "-nx", "-p", str(t.pid), "-ex", f"source {script}"],
                       capture_output=True, text=True, timeout=600)
    for line in r.stdout.splitlines():
        if line.startswith("GDB_WRITE_SECONDS"):
            return float(line.split()[1])
    raise RuntimeError(f"gdb rewrite failed: {r.stdout[-500:]} {r.stderr[-500:]}")


CHANGED_PAGES = 2560          # what the target's "c" changes


def pages_rewrite(t, core, mib):
    """Write back only the pages the target's "c" changed: page k * (pages / 2560)
    of its heap, the largest anonymous mapping."""
    with CoreFile(core) as c, FrozenProcess(t.pid):
        heap = max((m for m in c.state.mappings if not m.path), key=lambda m: m.size)
        pages = (mib * MiB) // 4096
        addrs = [heap.start + k * (pages // CHANGED_PAGES) * 4096 for k in range(CHANGED_PAGES)]
        fd = os.open(f"/proc/{t.pid}/mem", os.O_RDWR)
        try:
            s = time.perf_counter()
            for addr in addrs:
                if os.pwrite(fd, c.read(addr, 4096), addr) != 4096:
                    raise RuntimeError("short write")
            return time.perf_counter() - s
        finally:
            os.close(fd)


def mem_rewrite(t, core):
    with CoreFile(core) as c, FrozenProcess(t.pid) as frozen:
        fd = os.open(f"/proc/{t.pid}/mem", os.O_RDWR)
        try:
            s = time.perf_counter()
            frozen.leader().set_regs(resume_regs(c.state.threads[0]))
            for seg in c.segments:
                if not seg.filesz or seg.flags & 2 == 0:     # writable segments only
                    continue
                view, addr = c.view(seg.offset, seg.filesz), seg.vaddr
                for off in range(0, len(view), 8 * MiB):
                    chunk = view[off:off + 8 * MiB]
                    if os.pwrite(fd, chunk, addr + off) != len(chunk):
                        raise RuntimeError("short write")
                del view, chunk          # the core's map cannot close while exported
            return time.perf_counter() - s
        finally:
            os.close(fd)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir")
    args = ap.parse_args()
    workdir = args.dir or tempfile.mkdtemp(prefix="rcore-bench-restore-")
    binary = os.path.join(workdir, "restore_heap")
    subprocess.run(["gcc", "-O2", "-o", binary, os.path.join(HERE, "targets", "restore_heap.c")],
                   check=True)
    t = Target(binary, args.mib, workdir)
    core = os.path.join(workdir, "heap.core")
    try:
        want = t.ask("s")
        armed = dump(t.pid, core, track=True).tracking
        if not armed.startswith("dirty tracking armed"):
            raise SystemExit(f"tracking not armed: {armed}")

        def check(what):
            got = t.ask("s")
            if got != want:
                raise SystemExit(f"{what}: heap checksum {got}, checkpoint {want}")

        t.ask("a")
        rcore_restore(t, core)            # warm-up: page cache of the core, memory
        check("warm-up")
        times = {k: [] for k in ("tracked", "pages", "small", "all", "gdb", "mem",
                                 "map_small", "map_all")}
        written = {}
        for _ in range(args.reps):
            t.ask("c")
            sec, s = rcore_restore(t, core)
            if not s.tracking.startswith("only pages written"):
                raise SystemExit(f"tracking not used: {s.tracking}")
            times["tracked"].append(sec)
            written["tracked"] = s.bytes_written
            written["tracked_compared"] = s.bytes_compared
            check("rcore with tracking, 10 MiB changed")
            t.ask("c")
            times["pages"].append(pages_rewrite(t, core, args.mib))
            check("write of the 10 MiB changed")
            t.ask("c")
            sec, s = rcore_restore(t, core, tracking=False)
            times["small"].append(sec)
            written["small"] = s.bytes_written
            check("rcore, 10 MiB changed")
            t.ask("a")
            sec, s = rcore_restore(t, core, tracking=False)
            times["all"].append(sec)
            written["all"] = s.bytes_written
            check("rcore, all changed")
            t.ask("a")
            times["gdb"].append(gdb_rewrite(t, core, workdir))
            check("gdb rewrite")
            t.ask("a")
            times["mem"].append(mem_rewrite(t, core))
            check("/proc/PID/mem rewrite")
            t.ask("c")
            times["map_small"].append(rcore_restore(t, core, map_core=True)[0])
            check("rcore --map-core, 10 MiB changed")
            t.ask("a")
            times["map_all"].append(rcore_restore(t, core, map_core=True)[0])
            check("rcore --map-core, all changed")
            t.ask("a")
            rcore_restore(t, core)        # unmeasured: back to anonymous memory
            check("back to anonymous memory")
        best = {k: min(v) for k, v in times.items()}
        print(f"rollback of a {args.mib} MiB process (best of {args.reps}):")
        print(f"  rcore restore, 10 MiB changed, tracking armed: {best['tracked']:.3f} s "
              f"({written['tracked'] / MiB:.1f} MiB written of "
              f"{written['tracked_compared'] / MiB:.1f} MiB compared)")
        print(f"  write of just the 10 MiB changed:  {best['pages']:.3f} s")
        print(f"  rcore restore, 10 MiB changed:    {best['small']:.3f} s "
              f"({written['small'] / MiB:.1f} MiB written)")
        print(f"  rcore restore, everything changed: {best['all']:.3f} s "
              f"({written['all'] / MiB:.1f} MiB written)")
        print(f"  rcore restore --map-core, 10 MiB:  {best['map_small']:.3f} s")
        print(f"  rcore restore --map-core, all:     {best['map_all']:.3f} s")
        print(f"  gdb write_memory of every segment: {best['gdb']:.3f} s")
        print(f"  /proc/PID/mem rewrite of all:      {best['mem']:.3f} s")
        print(f"tracking: rcore tracked / write of 10 MiB = {best['tracked'] / best['pages']:.1f}x "
              f"(target 3x), rcore full compare / rcore tracked = "
              f"{best['small'] / best['tracked']:.1f}x (target 5x)")
        print(f"ratios: gdb rewrite / rcore 10 MiB = {best['gdb'] / best['small']:.1f}x, "
              f"gdb rewrite / rcore all = {best['gdb'] / best['all']:.1f}x, "
              f"mem rewrite / rcore 10 MiB = {best['mem'] / best['small']:.1f}x, "
              f"mem rewrite / rcore all = {best['mem'] / best['all']:.2f}x")
        print(f"        mem rewrite / rcore --map-core 10 MiB = "
              f"{best['mem'] / best['map_small']:.1f}x, gdb rewrite / rcore --map-core all = "
              f"{best['gdb'] / best['map_all']:.0f}x")
    finally:
        t.kill()
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
