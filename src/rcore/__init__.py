"""rcore: checkpoint and restart of live Linux processes through ELF core files."""

import importlib
import sys
import types

from .errors import (AccessDenied, CoreFormatError, Incompatible, NoSuchProcess,
                     ProcessExited, RcoreError, Unsupported)

# The operations are imported on first use: `import rcore` and the CLI then load
# only what a sub-command needs (every command a user types pays for start-up).
_LAZY = {"dump": "dump", "DumpSummary": "dump", "restart": "restart",
         "Restarted": "restart", "restore": "restore", "RestoreSummary": "restore"}


def _lazy(module, name):
    def get(self):
        return getattr(importlib.import_module(f"{__name__}.{module}"), name)

    def ignore(self, value):
        # Importing the submodule rcore.restore sets the package attribute
        # `restore` to it; the public name stays the function, as it was when
        # this file imported the functions eagerly.
        pass
    return property(get, ignore)


class _Package(types.ModuleType):
    pass


for _name, _module in _LAZY.items():
    setattr(_Package, _name, _lazy(_module, _name))
sys.modules[__name__].__class__ = _Package

__all__ = ["dump", "DumpSummary", "restart", "Restarted", "restore", "RestoreSummary", "RcoreError", "NoSuchProcess", "AccessDenied",
           "ProcessExited", "CoreFormatError", "Incompatible", "Unsupported"]
__version__ = "0.1.0"
