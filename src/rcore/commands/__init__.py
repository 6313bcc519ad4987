"""Sub-commands of the rcore CLI, in the order `rcore --help` lists them."""

from . import dump, info, restart, restore

COMMANDS = [dump, info, restore, restart]
