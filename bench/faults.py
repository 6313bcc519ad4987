#!/usr/bin/env python3
"""rcore killed (SIGKILL) at random instants, in one run: does the target survive?

    python3 bench/faults.py [--dumps 300] [--restores 50] [--restarts 50]
                            [--mib 16] [--threads 2] [--dir DIR] [--seed N]

The target is tests/progs/steady.c: worker threads keep checking their registers
(general and AVX), signal mask and sigaltstack, the main thread checks its memory
and prints "ok PID ROUND" every 5 ms; any damage makes it print "BAD".

dump      `rcore dump PID` (the CLI) is SIGKILLed: every other run after a random
          delay between the CLI's start-up time and the end of a typical dump
          (the whole dump), the others 0-30 ms after the target is first seen
          traced (the freeze, which lasts a few ms, and the start of the copy).  After each kill: the target must
          be alive, printing "ok" lines of its own PID only (a line of another PID
          would be the fork copy running the program), not stopped (/proc state
          T/t), not traced (TracerPid), with no zombie children; temporary core
          files in the directory are counted before the next run (which removes
          those of dead rcore processes).
restore   `rcore restore PID CORE` killed at random instants (every other run
          0-80 ms after the target is first seen traced).  Once restore starts
          changing the target it holds it with PTRACE_O_EXITKILL, so a kill then
          kills the target by design: targets dead by SIGKILL are counted apart
          (and replaced by a fresh one); any other death or damage is a failure.
restart   `rcore restart CORE --detach` killed at random instants (every other
          run 0-80 ms after the new process is first seen traced; the PID is
          waited for between runs): a half-built process must not survive it
          (EXITKILL), and a complete one must run unharmed.

Printed: per operation, kills, and for each check how many runs failed it.
Every process started here is killed by PID at the end."""

import argparse
import glob
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from benchlib import end_process  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
sys.path.insert(0, os.path.join(ROOT, "src"))
from rcore.linux import inject, procfs  # noqa: E402


def build(outdir):
    exe = os.path.join(outdir, "steady")
    subprocess.run(["gcc", "-g", "-O0", "-pthread", "-o", exe,
                    os.path.join(ROOT, "tests", "progs", "steady.c")], check=True)
    return exe


def rcore(*args):
    return subprocess.Popen([sys.executable, "-m", "rcore", *map(str, args)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Target:
    def __init__(self, exe, outdir, mib, threads):
        self.out = os.path.join(outdir, f"steady.{time.monotonic_ns()}.out")
        # O_APPEND: a restore rolls the descriptor's offset back, and the lines
        # written since must not be overwritten
        with open(self.out, "ab") as out:
            self.p = subprocess.Popen([exe, str(mib), str(threads)], stdout=out,
                                      stderr=subprocess.STDOUT)
        self.pid = self.p.pid
        self.wait_lines(2, 10)

    def lines(self):
        with open(self.out, "rb") as f:
            return f.read().decode(errors="replace").splitlines()

    def wait_lines(self, n, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.lines()) >= n:
                return True
            if self.p.poll() is not None:
                return False
            time.sleep(0.005)
        return False

    def end(self):
        end_process(self.p)


def status(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(ln.rstrip("\n").split(":\t", 1) for ln in f if ":\t" in ln)
    except (FileNotFoundError, ProcessLookupError):
        return {}


def zombie_children(pid):
    out = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            kids = open(path).read().split()
        except OSError:
            continue
        out += [k for k in kids if status(k).get("State", "")[:1] == "Z"]
    return out


def check_target(t, failures, seen_lines):
    """Every harm a kill can leave, by name (empty: unharmed)."""
    harm = []
    # the kernel detaches tracees of a dead tracer at once; give it a moment
    time.sleep(0.02)
    st = status(t.pid)
    if t.p.poll() is not None:
        harm.append("dead" if t.p.returncode != -signal.SIGKILL else "dead-SIGKILL")
        for h in harm:
            failures[h] = failures.get(h, 0) + 1
        return harm
    if st.get("TracerPid", "0") != "0":
        harm.append("traced")
    if st.get("State", "?")[:1] in "Tt":
        harm.append("stopped")
    if not t.wait_lines(seen_lines() + 3, 3):
        harm.append("not-running")
    lines = t.lines()
    if any(ln.startswith("BAD") for ln in lines):
        harm.append("damaged")
    if any(ln.split()[1] != str(t.pid) for ln in lines if ln.startswith("ok ")):
        harm.append("copy-ran-program")
    if len(zombie_children(t.pid)) > 1:
        # one zombie copy is what a kill leaves until the next dump reaps it
        harm.append("zombies-pile-up")
    for h in harm:
        failures[h] = failures.get(h, 0) + 1
    return harm


def leftover_mappings(pid):
    """Mappings dead rcore processes made in pid and left there."""
    try:
        return len(inject.find_leftovers(pid, procfs.read_maps(pid)))
    except Exception:      # the target is gone
        return 0


def tmp_files(directory):
    return [f for f in os.listdir(directory) if ".rcore" in f]


def typical(cmd, n=5):
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        r = rcore(*cmd)
        out, err = r.communicate()
        if r.returncode:
            raise SystemExit(f"rcore {' '.join(map(str, cmd))}: {err.strip()}")
        times.append(time.monotonic() - t0)
    return statistics.median(times)


def startup():
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import rcore.cli"], env=ENV, check=True)
    return time.monotonic() - t0


def kill_at(cmd, delay, traced_pid=None):
    """Run rcore cmd and SIGKILL it after delay seconds; with traced_pid, delay
    counts from the moment that process is first seen traced (the freeze)."""
    r = rcore(*cmd)
    if traced_pid is not None:
        while r.poll() is None and status(traced_pid).get("TracerPid", "0") == "0":
            time.sleep(0.0002)
    time.sleep(delay)
    r.send_signal(signal.SIGKILL)
    r.communicate()
    return r.returncode


def bench_dumps(n, exe, d, args, rng):
    t = Target(exe, d, args.mib, args.threads)
    core = os.path.join(d, "core")
    full = typical(["dump", t.pid, "-o", core])
    start = startup()
    failures, left_tmp, left_zombies, left_maps, completed = {}, 0, 0, 0, 0
    try:
        for i in range(n):
            n_lines = len(t.lines())
            if i % 2:
                rc = kill_at(["dump", t.pid, "-o", core], rng.uniform(start * 0.9, full * 1.1))
            else:
                rc = kill_at(["dump", t.pid, "-o", core], rng.uniform(0, 0.03), t.pid)
            completed += rc == 0
            harm = check_target(t, failures, lambda: n_lines)
            left_tmp = max(left_tmp, len(tmp_files(d)))
            left_zombies = max(left_zombies, len(zombie_children(t.pid)))
            left_maps = max(left_maps, leftover_mappings(t.pid))
            if "dead" in harm or "dead-SIGKILL" in harm or "damaged" in harm:
                print(f"  dump kill {i}: {harm}", file=sys.stderr)
                t.end()
                t = Target(exe, d, args.mib, args.threads)
        # the next complete dump removes what dead runs left
        r = rcore("dump", t.pid, "-o", core)
        r.communicate()
        after = (len(tmp_files(d)), len(zombie_children(t.pid)), leftover_mappings(t.pid))
    finally:
        t.end()
    print(f"dump: {n} kills (typical dump {full * 1000:.0f} ms, start-up {start * 1000:.0f} ms, "
          f"{completed} completed before the kill)")
    print(f"  harmed: {failures or 'none'}")
    print(f"  most present after a kill (the next run removes them): {left_tmp} temporary "
          f"cores, {left_zombies} zombie copies, {left_maps} mappings of rcore's; left "
          f"after one more complete dump: {after[0]} temporaries, {after[1]} zombies, "
          f"{after[2]} mappings")
    return dict(harmed=failures, most_tmp=left_tmp, most_zombies=left_zombies,
                most_maps=left_maps, tmp_after=after[0], zombies_after=after[1],
                maps_after=after[2])


def bench_restores(n, exe, d, args, rng):
    core = os.path.join(d, "core.restore")
    t = Target(exe, d, args.mib, args.threads)
    failures, by_design, completed = {}, 0, 0
    try:
        subprocess.run([sys.executable, "-m", "rcore", "dump", str(t.pid), "-o", core],
                       env=ENV, check=True, capture_output=True)
        full = typical(["restore", t.pid, core], 3)
        start = startup()
        for i in range(n):
            n_lines = len(t.lines())
            if i % 2:
                rc = kill_at(["restore", t.pid, core], rng.uniform(start * 0.9, full))
            else:
                rc = kill_at(["restore", t.pid, core], rng.uniform(0, 0.08), t.pid)
            completed += rc == 0
            harm = check_target(t, {}, lambda: n_lines)
            if harm == ["dead-SIGKILL"]:
                by_design += 1
            else:
                for h in harm:
                    failures[h] = failures.get(h, 0) + 1
            if harm:
                if harm != ["dead-SIGKILL"]:
                    print(f"  restore kill {i}: {harm}", file=sys.stderr)
                t.end()
                t = Target(exe, d, args.mib, args.threads)
                subprocess.run([sys.executable, "-m", "rcore", "dump", str(t.pid), "-o", core],
                               env=ENV, check=True, capture_output=True)
    finally:
        t.end()
    print(f"restore: {n} kills (typical restore {full * 1000:.0f} ms, {completed} completed "
          "before the kill)")
    print(f"  killed by design (EXITKILL, the target was being changed): {by_design}")
    print(f"  harmed otherwise: {failures or 'none'}")


def processes_of(exe):
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/exe") == exe:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def wait_gone(pid, timeout=30):
    """Until pid is free again (PID 1 here reaps orphans only every few seconds)."""
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)


def bench_restarts(n, exe, d, args, rng):
    core = os.path.join(d, "core.restart")
    t = Target(exe, d, args.mib, args.threads)
    pid = t.pid
    subprocess.run([sys.executable, "-m", "rcore", "dump", str(pid), "-o", core],
                   env=ENV, check=True, capture_output=True)
    t.end()
    out = os.path.join(d, "restarted.out")

    def attempt(delay=None, in_build=False):
        wait_gone(pid)
        open(out, "w").close()
        cmd = ["restart", core, "--detach", "--stdout", out]
        if delay is None:
            t0 = time.monotonic()
            r = rcore(*cmd)
            r.communicate()
            return time.monotonic() - t0
        kill_at(cmd, delay, pid if in_build else None)
        return None

    start = startup()
    times = []
    for _ in range(3):
        times.append(attempt())
        os.kill(pid, signal.SIGKILL)
    full = statistics.median(times)
    counts = {"none left": 0, "running unharmed": 0}
    failures = {}
    for i in range(n):
        if i % 2:
            attempt(rng.uniform(start * 0.9, full * 1.3))
        else:
            attempt(rng.uniform(0, 0.08), in_build=True)
        time.sleep(0.05)
        st = status(pid)
        if not st or st.get("State", "?")[:1] in "ZX":
            counts["none left"] += 1
            continue
        harm = []
        if st.get("TracerPid", "0") != "0":
            harm.append("traced")
        if st.get("State", "?")[:1] in "Tt":
            harm.append("stopped")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len(open(out).read().splitlines()) < 3:
            time.sleep(0.01)
        lines = open(out).read().splitlines()
        if len(lines) < 3:
            harm.append("not-running")
        if any(not ln.startswith(f"ok {pid} ") for ln in lines):
            harm.append("damaged")
        for h in harm:
            failures[h] = failures.get(h, 0) + 1
        if not harm:
            counts["running unharmed"] += 1
        else:
            print(f"  restart kill {i}: {harm}", file=sys.stderr)
        os.kill(pid, signal.SIGKILL)
    print(f"restart: {n} kills (typical restart {full * 1000:.0f} ms)")
    print(f"  outcomes: {counts}; harmed (left stopped, traced or damaged): {failures or 'none'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dumps", type=int, default=300)
    ap.add_argument("--restores", type=int, default=50)
    ap.add_argument("--restarts", type=int, default=50)
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    d = args.dir or tempfile.mkdtemp(prefix="rcore-faults-")
    rng = random.Random(args.seed)
    try:
        exe = build(d)
        if args.dumps:
            bench_dumps(args.dumps, exe, d, args, rng)
        if args.restores:
            bench_restores(args.restores, exe, d, args, rng)
        if args.restarts:
            bench_restarts(args.restarts, exe, d, args, rng)
    finally:
        for pid in processes_of(os.path.join(d, "steady")):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not args.dir:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
