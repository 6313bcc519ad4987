"""rcore: checkpoint and restart of live Linux processes through ELF core files."""

from .errors import (AccessDenied, CoreFormatError, Incompatible, NoSuchProcess,
                     ProcessExited, RcoreError, Unsupported)
from .dump import dump, DumpSummary
from .restart import restart, Restarted
from .restore import restore, RestoreSummary

__all__ = ["dump", "DumpSummary", "restart", "Restarted", "restore", "RestoreSummary", "RcoreError", "NoSuchProcess", "AccessDenied",
           "ProcessExited", "CoreFormatError", "Incompatible", "Unsupported"]
__version__ = "0.1.0"
