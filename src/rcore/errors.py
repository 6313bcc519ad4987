"""rcore's exceptions.  Each carries the data a caller needs (pid, path, what
differs); the CLI turns any RcoreError into one line on stderr."""


class RcoreError(Exception):
    """Base of every error rcore reports to users."""
    exit_code = 1


class NoSuchProcess(RcoreError):
    def __init__(self, pid, msg=None):
        self.pid = pid
        super().__init__(msg or f"no such process: {pid}")


class AccessDenied(RcoreError):
    def __init__(self, pid, msg=None):
        self.pid = pid
        super().__init__(msg or f"not permitted to trace process {pid}")


class ProcessExited(RcoreError):
    def __init__(self, pid, msg=None):
        self.pid = pid
        super().__init__(msg or f"process {pid} exited while rcore was working on it")


class PtraceError(RcoreError):
    """A ptrace request failed for a reason other than the process vanishing."""
    def __init__(self, pid, request, errno_, msg=None):
        self.pid, self.request, self.errno = pid, request, errno_
        super().__init__(msg or f"ptrace({request}) on {pid} failed: {_strerror(errno_)}")


class InjectedSyscallError(RcoreError):
    """A system call run inside the target returned an error."""
    def __init__(self, pid, name, errno_):
        self.pid, self.name, self.errno = pid, name, errno_
        super().__init__(f"{name}() inside process {pid} failed: {_strerror(errno_)}")


class InjectionFault(RcoreError):
    """A thread faulted while running a system call rcore injected."""
    def __init__(self, pid, signame):
        self.pid, self.signal = pid, signame
        super().__init__(f"process {pid} got {signame} while running a call injected by rcore")


class CoreFormatError(RcoreError):
    """The file is not a core, or is truncated or corrupt.  `note` names the note
    (or header) found corrupt: the message is then "PATH: corrupt NOTE: why"."""
    def __init__(self, path, msg, note=None):
        self.path, self.note = path, note
        super().__init__(f"{path}: corrupt {note}: {msg}" if note else f"{path}: {msg}")


class Incompatible(RcoreError):
    """A checkpoint does not fit the process or system it is applied to."""


class NotPermitted(RcoreError):
    """A core asks for more than the user it speaks for (its owner) may have."""


class Unsupported(RcoreError):
    """The process holds something rcore cannot save or rebuild."""


def _strerror(errno_):
    import os
    return f"{os.strerror(errno_)} (errno {errno_})"
