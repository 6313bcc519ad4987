"""What the benchmark scripts share."""

import os
import shutil
import signal


def end_process(p):
    """End Popen p by its PID (SIGCONT first, in case a dump left it stopped)."""
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            break
    p.wait()


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def longest_gap(out, t0, t1):
    """Longest gap between consecutive timestamps the target printed in [t0, t1]
    (CLOCK_MONOTONIC, the clock of time.monotonic())."""
    stamps = [int(line) / 1e9 for line in read_file(out).split(b"\n")
              if line.isdigit()]
    inside = [s for s in stamps if t0 <= s <= t1]
    if len(inside) < 2:
        raise RuntimeError("the target printed no timestamps")
    # The edges count too: a pause that began before the first line in the window.
    points = [t0] + inside + [t1]
    return max(b - a for a, b in zip(points, points[1:]))


def criu_path():
    """CRIU's executable, or None: the benchmarks compare with it only if installed
    (`criu` on PATH, or /usr/local/sbin/criu, where a source build installs it)."""
    return shutil.which("criu") or (
        "/usr/local/sbin/criu" if os.path.exists("/usr/local/sbin/criu") else None)


def tree_arguments(description):
    """The options of the process-tree benchmarks (a tree of --processes
    processes of --mib MiB each, --reps runs, files in --dir)."""
    import argparse
    ap = argparse.ArgumentParser(description=description.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--processes", type=int, default=10)
    ap.add_argument("--mib", type=int, default=100, help="MiB of memory per process")
    ap.add_argument("--dir")
    return ap


def installed_rcore(directory, given=None):
    """The `rcore` command to time as users type it: `given` (the path of an
    installed launcher), or else this checkout installed as .ci/run installs it
    (pip install -e) into a new venv in `directory` that sees the system's
    site-packages, as a global install does, with its modules compiled to
    bytecode as pip compiles a normal install (PYTHONDONTWRITEBYTECODE=1, set
    in this workplace, would otherwise have every start compile them).  Not
    the pyenv shim that PATH may put in front of it (bench/cli.py says what
    that adds)."""
    import compileall
    import subprocess
    import sys
    if given:
        return os.path.abspath(given)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    compileall.compile_dir(os.path.join(root, "src"), quiet=1)
    venv = os.path.join(directory, "venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    venv], check=True)
    subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q",
                    "--disable-pip-version-check", "--no-deps", "-e", root], check=True)
    return os.path.join(venv, "bin", "rcore")
