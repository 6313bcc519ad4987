"""Sub-commands of the rcore CLI: one module each, with add_parser(subparsers)
and run(args).

Only the module of the command typed is imported (all of them for --help), and
each imports the library only inside run(): every command a user types pays for
what it loads."""

import importlib

NAMES = ("dump", "info", "diff", "flatten", "restore", "restart", "run")  # as --help lists them


def module(name):
    """The module of command `name` (one of NAMES)."""
    return importlib.import_module(f"{__name__}.{name}")
