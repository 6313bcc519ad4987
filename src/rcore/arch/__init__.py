"""Architecture tables.  The architecture is a value (a module object) rather than
something decided implicitly, so that a core from another machine can still be
described; only x86-64 exists so far."""

import os

from . import x86_64

ARCHES = {x86_64.ELF_MACHINE: x86_64}


def host():
    machine = os.uname().machine     # (the platform module costs 3 ms to import)
    if machine == "x86_64":
        return x86_64
    raise NotImplementedError(f"rcore does not support {machine} yet")


def by_elf_machine(e_machine):
    return ARCHES.get(e_machine)
