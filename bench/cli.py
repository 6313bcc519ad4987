"""The command line's own cost, against the interpreter and the Python API.

    python3 bench/cli.py [--reps N]

Prints, each the median of N runs (best in brackets), in one run:
  - `python3 -c pass` (the floor) and `python3 -m rcore --help`;
  - a small dump through the API (warm, in this process) and through the CLI;
  - `rcore info` of that core through the CLI.
Both with the bytecode cache as users have it (compiled once, then read) and
without it (PYTHONDONTWRITEBYTECODE=1, as in this workplace's sessions, where an
editable install recompiles every module at every start).  Targets (issue 12):
--help within 40 ms of `python3 -c pass`; the CLI dump within 50 ms of the API."""

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
sys.path.insert(0, SRC)

from benchlib import end_process  # noqa: E402
from rcore import dump  # noqa: E402


def _timed(argv, env):
    t = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def _series(fn, reps):
    times = [fn() for _ in range(reps)]
    return statistics.median(times), min(times)


def _show(label, med, best):
    print(f"  {label:34s} {med * 1000:7.1f} ms  (best {best * 1000:6.1f})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rcore-bench-cli-")
    target = subprocess.Popen(["sleep", "1000"])
    try:
        core = os.path.join(work, "core")
        for cached in (True, False):
            env = dict(os.environ, PYTHONPATH=SRC)
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            if cached:
                compileall.compile_dir(SRC, quiet=1)
            else:
                env["PYTHONDONTWRITEBYTECODE"] = "1"
                for root, dirs, _ in os.walk(SRC):
                    if "__pycache__" in dirs:
                        shutil.rmtree(os.path.join(root, "__pycache__"))
            print("bytecode cached" if cached else "no bytecode cache (PYTHONDONTWRITEBYTECODE=1)")
            py = _series(lambda: _timed([sys.executable, "-c", "pass"], env), args.reps)
            helps = _series(lambda: _timed([sys.executable, "-m", "rcore", "--help"], env),
                            args.reps)
            api = _series(lambda: _api_dump(target.pid, core), args.reps)
            cli = _series(lambda: _timed([sys.executable, "-m", "rcore", "dump",
                                          str(target.pid), "-o", core], env), args.reps)
            info = _series(lambda: _timed([sys.executable, "-m", "rcore", "info", core], env),
                           args.reps)
            _show("python3 -c pass", *py)
            _show("rcore --help", *helps)
            _show("dump, API (in process)", *api)
            _show("dump, CLI", *cli)
            _show("info, CLI", *info)
            print(f"  --help - python: {(helps[0] - py[0]) * 1000:.1f} ms (target 40)   "
                  f"CLI dump - API dump: {(cli[0] - api[0]) * 1000:.1f} ms (target 50)")
    finally:
        end_process(target)
        shutil.rmtree(work, ignore_errors=True)


def _api_dump(pid, path):
    t = time.perf_counter()
    dump(pid, path)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
