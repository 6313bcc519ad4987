"""The command line's own cost, against the interpreter and the Python API.

    python3 bench/cli.py [--reps N] [--rcore PATH] [--against PATH]

The CLI is timed as users type it: the installed `rcore` command (the launcher,
scripts/rcore), here this checkout installed with `pip install -e` (as .ci/run
installs it) into a temporary venv that sees the system's site-packages, or
the launcher --rcore names.  Prints, each the median of N runs (best in
brackets), in one run:
  - the interpreter: `python3 -c pass` (with site: the floor of a console
    script) and `python3 -S -c pass` (without: the launcher's floor), and what
    a pyenv shim in front of a command adds (PATH's rcore is one here);
  - `rcore --help`, and `python3 -m rcore --help` (with site) beside it;
  - a dump of a small process (sleep) through the API (warm, in this process)
    and through the CLI, and `rcore info` of its core;
  - a restart of that core (detached) through the API and the CLI;
  - dump and restart through rcore-python run directly: the command as the
    console script it replaced started, site first.
--against names another installed launcher (an older checkout's) whose --help,
dump, info and restart are timed in the same run, alternating with these rep by
rep (bytecode cached only: its tree keeps its own cache).
Both with the bytecode cache as users have it (compiled once, then read) and
without it (PYTHONDONTWRITEBYTECODE=1, as in this workplace's sessions, where an
editable install recompiles every module at every start).  Targets (issue 12):
--help within 40 ms of `python3 -c pass`; the CLI dump and restart each within
50 ms of the same operation through the API."""

import argparse
import compileall
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
sys.path.insert(0, SRC)

from benchlib import end_process, installed_rcore  # noqa: E402
from rcore import dump, restart  # noqa: E402


def _timed(argv, env):
    t = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def _series(fn, reps):
    times = [fn() for _ in range(reps)]
    return statistics.median(times), min(times)


def _alternating(fn, commands, reps):
    """fn(command) timed for each of commands in turn, reps times: one series
    each (None for a None command)."""
    times = [[] for _ in commands]
    for _ in range(reps):
        for cmd, series in zip(commands, times):
            if cmd:
                series.append(fn(cmd))
    return [(statistics.median(t), min(t)) if t else None for t in times]


def _show(label, series):
    med, best = series
    print(f"  {label:48s} {med * 1000:7.1f} ms  (best {best * 1000:6.1f})")


def _gone(pid):
    """Kill a detached restarted process by PID and wait until it is gone."""
    os.kill(pid, signal.SIGKILL)
    while os.path.exists(f"/proc/{pid}"):
        time.sleep(0.002)


def _api_dump(pid, path):
    t = time.perf_counter()
    dump(pid, path)
    return time.perf_counter() - t


def _api_restart(core):
    t = time.perf_counter()
    handle = restart(core, detach=True)
    seconds = time.perf_counter() - t
    handle.close()
    _gone(handle.pid)
    return seconds


def _cli_restart(rcore_cmd, core, env):
    t = time.perf_counter()
    r = subprocess.run([rcore_cmd, "restart", "--detach", core], env=env, check=True,
                       capture_output=True, text=True)
    seconds = time.perf_counter() - t
    _gone(int(r.stdout))
    return seconds


def _shim_cost(reps, env):
    """What a pyenv shim adds to a command: a shim's python3 against the
    interpreter it runs (both -S), or None when PATH has no pyenv shims.  (This
    script may itself run through `pyenv exec`, which puts the interpreter's
    own directory first in PATH.)"""
    shims = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d.endswith("/shims")]
    shim = shims and shutil.which("python3", path=os.pathsep.join(shims))
    if not shim:
        return None
    real = _series(lambda: _timed([sys.executable, "-S", "-c", "pass"], env), reps)
    shimmed = _series(lambda: _timed([shim, "-S", "-c", "pass"], env), reps)
    return shim, shimmed[0] - real[0]


def _verdict(name, value, target):
    print(f"  {'PASS' if value <= target else 'FAIL'}  {name}: {value * 1000:.1f} ms "
          f"(target {target * 1000:.0f} ms)")
    return value <= target


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--rcore", metavar="PATH", help="an installed rcore launcher to time "
                    "(default: this checkout installed into a temporary venv)")
    ap.add_argument("--against", metavar="PATH", help="another installed rcore launcher, "
                    "timed alternately with the first (bytecode cached)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rcore-bench-cli-")
    results = []
    try:
        rcore_cmd = installed_rcore(work, args.rcore)
        against = args.against and os.path.abspath(args.against)
        # rcore-python run directly is the command as a console script was: site
        # first.  (An older install given by --rcore, a console script, has none.)
        with_site = rcore_cmd + "-python"
        if not os.path.exists(with_site):
            with_site = None
        print(f"the CLI: {rcore_cmd}" + (f" (python -S through {with_site})" if with_site else ""))
        core = os.path.join(work, "core")
        for cached in (True, False):
            env = dict(os.environ)
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env.pop("PYTHONPATH", None)
            if cached:
                compileall.compile_dir(SRC, quiet=1)
            else:
                env["PYTHONDONTWRITEBYTECODE"] = "1"
                for root, dirs, _ in os.walk(SRC):
                    if "__pycache__" in dirs:
                        shutil.rmtree(os.path.join(root, "__pycache__"))
            module_env = dict(env, PYTHONPATH=SRC)
            print("bytecode cached" if cached else "no bytecode cache (PYTHONDONTWRITEBYTECODE=1)")
            py = _series(lambda: _timed([sys.executable, "-c", "pass"], env), args.reps)
            py_s = _series(lambda: _timed([sys.executable, "-S", "-c", "pass"], env), args.reps)
            other = against if cached else None
            helps, helps_other = _alternating(lambda cmd: _timed([cmd, "--help"], env),
                                              [rcore_cmd, other], args.reps)
            module_helps = _series(lambda: _timed([sys.executable, "-m", "rcore", "--help"],
                                                  module_env), args.reps)
            # Its descriptors are /dev/null: a pipe of this script would come back
            # with the restarted process and hold the CLI's output open.
            target = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                api = _series(lambda: _api_dump(target.pid, core), args.reps)
                cli, cli_other = _alternating(lambda cmd: _timed(
                    [cmd, "dump", str(target.pid), "-o", core], env), [rcore_cmd, other], args.reps)
                cli_site = with_site and _series(lambda: _timed(
                    [with_site, "dump", str(target.pid), "-o", core], env), args.reps)
                info, info_other = _alternating(lambda cmd: _timed([cmd, "info", core], env),
                                                [rcore_cmd, other], args.reps)
            finally:
                end_process(target)
            api_restart = _series(lambda: _api_restart(core), args.reps)
            cli_restart, cli_restart_other = _alternating(
                lambda cmd: _cli_restart(cmd, core, env), [rcore_cmd, other], args.reps)
            cli_restart_site = with_site and _series(lambda: _cli_restart(with_site, core, env),
                                                     args.reps)
            _show("python3 -c pass (with site)", py)
            _show("python3 -S -c pass (without site)", py_s)
            _show("rcore --help", helps)
            _show("python3 -m rcore --help (with site)", module_helps)
            _show("dump, API (in process)", api)
            _show("dump, CLI", cli)
            if with_site:
                _show("dump, CLI started with site (rcore-python)", cli_site)
            _show("info, CLI", info)
            _show("restart --detach, API (in process)", api_restart)
            _show("restart --detach, CLI", cli_restart)
            if with_site:
                _show("restart --detach, CLI with site (rcore-python)", cli_restart_site)
            if other:
                print(f"  against {other}, alternating with the above:")
                _show("rcore --help", helps_other)
                _show("dump, CLI", cli_other)
                _show("info, CLI", info_other)
                _show("restart --detach, CLI", cli_restart_other)
            print(f"  site's start-up on this machine: {(py[0] - py_s[0]) * 1000:.1f} ms "
                  f"(.pth files; the launcher skips it)")
            shim = _shim_cost(args.reps, env) if cached else None
            if shim:
                print(f"  a pyenv shim in front of a command ({shim[0]}, and rcore's in "
                      f"the same directory) adds {shim[1] * 1000:.1f} ms: not counted above")
            results += [
                _verdict("rcore --help - python3 -c pass", helps[0] - py[0], 0.040),
                _verdict("dump: CLI - API", cli[0] - api[0], 0.050),
                _verdict("restart: CLI - API", cli_restart[0] - api_restart[0], 0.050)]
            if other:
                print("  against (not counted):")
                _verdict("dump: CLI - API", cli_other[0] - api[0], 0.050)
                _verdict("restart: CLI - API", cli_restart_other[0] - api_restart[0], 0.050)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
