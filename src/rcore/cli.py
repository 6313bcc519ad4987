"""The rcore command line.  Each sub-command lives in rcore/commands/ as a thin
module with add_parser(subparsers) and run(args); this file only wires them up
and turns errors into one line on stderr and an exit code."""

import argparse
import errno
import gc
import os
import signal
import sys

from . import commands
from .errors import RcoreError


def build_parser(argv=None):
    """The parser; given the arguments, only the sub-command they name is built
    (each sub-parser costs a millisecond or more, argparse looking up message
    translations), all of them otherwise (--help, a mistyped command)."""
    parser = _Parser(
        prog="rcore", description="Checkpoint and restart of live Linux processes "
                                  "through standard ELF core files.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    named = [argv[0]] if argv and argv[0] in commands.NAMES else commands.NAMES
    for name in named:
        commands.module(name).add_parser(sub)
    return parser


class _Formatter(argparse.HelpFormatter):
    """argparse makes a formatter at every add_argument (to check its metavar),
    and HelpFormatter asks shutil the terminal's width: importing shutil (and
    zlib, bz2, lzma with it) costs 2-3 ms of every command.  The width found
    as shutil.get_terminal_size finds it, without it."""

    def __init__(self, prog):
        super().__init__(prog, width=_columns())


def _columns():
    try:
        columns = int(os.environ.get("COLUMNS", 0))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser with _Formatter, sub-parsers included (add_subparsers
    makes them of the parser's class)."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=_Formatter, **kwargs)


def _terminate(signum, frame):
    # SIGTERM/SIGHUP unwind like Ctrl-C, so that every cleanup (detaching the
    # target, removing a temporary core) runs.
    raise KeyboardInterrupt


def main(argv=None):
    args = build_parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    try:
        return args.func(args) or 0
    except RcoreError as err:
        print(f"rcore: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("rcore: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as err:
        if err.errno == errno.ENOSPC:
            print("rcore: disk full", file=sys.stderr)
        else:
            print(f"rcore: {err.strerror or err}"
                  + (f": {err.filename}" if err.filename else ""), file=sys.stderr)
        return 1


# The collector's first threshold for the command (Python's: 700 allocations).
GC_THRESHOLD = 100_000


def command():
    """The rcore command: what __main__.py and scripts/rcore-python run.  The
    garbage collector is set for a short process.  With Python's threshold it
    runs about 20 times in a CLI dump, over the objects the imports made:
    3-4 ms of a command that takes 60; every GC_THRESHOLD allocations still
    bounds what a long `rcore run` can leave in cycles.  At the end the
    interpreter's teardown would collect over every object alive, more than
    once (5-7 ms): gc.freeze() puts them out of the collector's sight first;
    the teardown still runs (atexit, threads joined, modules and files closed),
    only cycles among those objects are not looked for, which Python never
    promised to break at exit anyway."""
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    code = main()
    gc.freeze()
    sys.exit(code)
