"""Sub-commands of the rcore CLI, in the order `rcore --help` lists them.

Each module imports the library only inside run(): building the parser must
stay cheap, since every command a user types pays for it."""

from . import diff, dump, flatten, info, restart, restore, run

COMMANDS = [dump, info, diff, flatten, restore, restart, run]
