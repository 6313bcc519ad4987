"""rcore: checkpoint and restart of live Linux processes through ELF core files."""

from .errors import (AccessDenied, CoreFormatError, Incompatible, NoSuchProcess,
                     ProcessExited, RcoreError, Unsupported)
from .dump import dump, DumpSummary

__all__ = ["dump", "DumpSummary", "RcoreError", "NoSuchProcess", "AccessDenied",
           "ProcessExited", "CoreFormatError", "Incompatible", "Unsupported"]
__version__ = "0.1.0"
