"""The rcore command line.  Each sub-command lives in rcore/commands/ as a thin
module with add_parser(subparsers) and run(args); this file only wires them up
and turns errors into one line on stderr and an exit code."""

import argparse
import errno
import signal
import sys

from .errors import RcoreError
from .commands import COMMANDS


def build_parser(argv=None):
    """The parser; given the arguments, only the sub-command they name is built
    (each sub-parser costs a millisecond or more, argparse looking up message
    translations), all of them otherwise (--help, a mistyped command)."""
    parser = argparse.ArgumentParser(
        prog="rcore", description="Checkpoint and restart of live Linux processes "
                                  "through standard ELF core files.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    named = [m for m in COMMANDS if argv and m.__name__.rsplit(".", 1)[1] == argv[0]]
    for module in named or COMMANDS:
        module.add_parser(sub)
    return parser


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
