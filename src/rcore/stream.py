"""stream: the fork copy of a dump sends its own pages to rcore through pipes.

Reading another process's memory costs rcore more than writing it: /proc/PID/mem
copies every page twice (into a kernel page, then out to the reader) and looks
each page up alone; process_vm_readv copies once but first unshares every page
a fork still shares (a third copy).  A process can hand its own pages to a pipe
without copying them (vmsplice takes page references), so the copy runs a small
loop (arch VMSPLICE_LOOP_CODE): it reads entries (pipe, address, length) from a
control pipe, vmsplices each range into its pipe and drops it (MADV_DONTNEED:
the pipe holds the pages now, and the copy's exit has nothing left to free).
rcore's two workers, two pipes each, read a pipe into a buffer and write it to
the core: one copy per byte on rcore's side, the same as a plain write.

The copy blocks every signal and is resumed from any stop.  If rcore dies, the
copy's next read of the control pipe sees its end or its vmsplice sees EPIPE,
and it exits; it never runs the program's code."""

import fcntl
import mmap
import os
import queue
import select
import signal
import struct
import threading

from . import arch
from .errors import RcoreError
from .linux import inject, libc, ptrace

ARCH = arch.host()
WORKERS = 2                # one reading while the other writes: the file's lock is the limit
PIPES = 4                  # two per worker, so that the copy can run ahead
# Control entries go out in writes of at most PIPE_BUF bytes: those are atomic, so
# the loop's 24-byte reads always see whole entries.
_BATCH = 4096 // ARCH.STREAM_ENTRY_SIZE
_POLL_SECONDS = 0.005


class StreamFailed(RcoreError):
    """The copy could not be set up to stream, or stopped streaming: its memory
    must be read the other way (at once, or by taking the dump again)."""


def stream_eligible(m):
    """Anonymous private memory only: every present page of it can be vmspliced
    and dropped.  File pages may lie beyond the file's end (vmsplice fails
    there); hugetlb pages cannot be dropped page by page; vmsplice cannot take
    pages the program may not read (PROT_NONE): /proc/PID/mem can."""
    return (not m.file_backed and not m.shared and m.path != "[vdso]"
            and "ht" not in m.vmflags and m.perms[0] == "r")


class CopyStream:
    """Streams ranges of the stopped fork copy `copy` (a ptrace.Thread).  After
    setup(), run() sends each chunk (address, length, core offset) and calls
    store(buffer, view, length, offset) in a worker thread for each."""

    def __init__(self, copy, syscall_addr, chunk_size):
        self.copy = copy
        self.syscall_addr = syscall_addr
        self.chunk_size = chunk_size
        self.control = None        # rcore's write end of the control pipe
        self.pipes = []            # rcore's read ends of the data pipes
        self.copy_pipes = []       # the same pipes' write ends, as numbered in the copy
        self.copy_control = None   # the control pipe's read end in the copy
        self.work = None           # the copy's page for one entry, then its code page
        self.exit_status = None

    def close(self):
        for fd in [self.control] + self.pipes:
            if fd is not None:
                os.close(fd)
        self.control, self.pipes = None, []

    # --- setting the copy up -------------------------------------------------------
    def setup(self):
        try:
            self._setup()
        except (RcoreError, OSError) as err:
            raise StreamFailed(f"the dump's copy cannot stream its memory: {err}") from err

    def _setup(self):
        tid, page = self.copy.tid, ARCH.PAGE_SIZE
        with inject.Injector(self.copy, self.syscall_addr) as inj:
            self.work = inj.call("mmap", 0, 2 * page, mmap.PROT_READ | mmap.PROT_WRITE,
                                 mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
            libc.write_memory(tid, self.work, b"\xff" * 8)
            inj.call("rt_sigprocmask", signal.SIG_SETMASK, self.work, 0, 8)
            control_read, control_write = self._pipe(inj)
            for _ in range(PIPES):
                read_end, write_end = self._pipe(inj)
                self.copy_pipes.append(write_end)
                self.pipes.append(self._take(read_end, inj))
            self.copy_control = control_read
            self.control = self._take(control_write, inj)
            code = self.work + page
            libc.write_memory(tid, code, ARCH.VMSPLICE_LOOP_CODE)
            inj.call("mprotect", code, page, mmap.PROT_READ | mmap.PROT_EXEC)
        for fd in self.pipes:
            try:
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, self.chunk_size)
            except OSError:
                pass            # over the user's pipe limits: smaller pipes work too
        os.set_blocking(self.control, False)
        try:
            # The copy works for rcore: let it have rcore's priority, not the
            # target's (only a privileged rcore may raise it).
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, 0))
        except OSError:
            pass
        regs = self.copy.get_regs()
        ARCH.set_stream_loop(regs, code, self.copy_control, self.work)
        self.copy.set_regs(regs)

    def _pipe(self, inj):
        inj.call("pipe2", self.work + 8, os.O_CLOEXEC)
        return struct.unpack("<ii", libc.read_memory(self.copy.tid, self.work + 8, 8))

    def _take(self, fd, inj):
        """Move the copy's descriptor fd to rcore."""
        pidfd = os.pidfd_open(self.copy.tid)
        try:
            mine = libc.pidfd_getfd(pidfd, fd)
        finally:
            os.close(pidfd)
        try:
            inj.call("close", fd)
        except BaseException:
            os.close(mine)
            raise
        return mine

    # --- streaming ---------------------------------------------------------------
    def run(self, chunks, store, meanwhile=None):
        """Stream every chunk.  meanwhile() runs in this thread once all are asked
        for, while the copy still lives (it exits once the control pipe closes)."""
        queues = [queue.SimpleQueue() for _ in range(WORKERS)]
        errors = []
        finished = threading.Event()
        remaining = [WORKERS]
        lock = threading.Lock()

        def work(k):
            try:
                self._drain(queues[k], store, errors)
            except BaseException as err:
                errors.append(err)
                self._kill_copy()          # unblocks everyone: the pipes close
            finally:
                with lock:
                    remaining[0] -= 1
                    if not remaining[0]:
                        finished.set()

        for k in range(WORKERS):
            threading.Thread(target=work, args=(k,), name=f"rcore-stream-{k}",
                             daemon=True).start()
        self.copy.cont()
        try:
            batch = []
            for i, (addr, length, offset) in enumerate(chunks):
                p = i % len(self.pipes)
                queues[p % WORKERS].put((self.pipes[p], length, offset))
                batch.append(struct.pack("<QQQ", self.copy_pipes[p], addr, length))
                if len(batch) == _BATCH or i < len(self.pipes):   # start the copy at once
                    self._send(b"".join(batch), errors)
                    batch = []
            if batch:
                self._send(b"".join(batch), errors)
            if meanwhile:
                meanwhile()                # while the copy, still waiting for entries, lives
            os.close(self.control)         # the loop's last read sees the end and exits
            self.control = None
        except BaseException as exc:
            self._kill_copy()
            if not errors or not isinstance(exc, Exception):
                raise                      # else a worker's error is the cause to report
        finally:
            for q in queues:
                q.put(None)
            while not finished.wait(_POLL_SECONDS):
                self._tend_copy()
        self._wait_copy_exit()
        if errors:
            if isinstance(errors[0], StreamFailed):
                raise StreamFailed(f"{errors[0]}{self._exit_text()}") from None
            raise errors[0]

    def _drain(self, queue_, store, errors):
        buf = bytearray(self.chunk_size)
        view = memoryview(buf)
        while not errors:
            item = queue_.get()
            if item is None:
                return
            fd, length, offset = item
            got = 0
            while got < length:
                n = os.readv(fd, [view[got:length]])
                if n == 0:
                    raise StreamFailed("the dump's copy stopped streaming")
                got += n
            store(buf, view, length, offset)

    def _send(self, data, errors):
        while data:
            if errors:
                raise StreamFailed("streaming stopped")
            try:
                n = os.write(self.control, data)
                data = data[n:]
            except BlockingIOError:
                select.select([], [self.control], [], _POLL_SECONDS)
                self._tend_copy()
            except BrokenPipeError:
                raise StreamFailed("the dump's copy stopped streaming") from None

    def _tend_copy(self):
        """Resume the copy from any stop (a SIGSTOP; other signals are blocked);
        note its end."""
        if self.exit_status is not None:
            return
        try:
            stop = ptrace.wait(self.copy.tid, nohang=True)
        except RcoreError:
            self.exit_status = -1
            return
        if stop is None:
            return
        if stop.exited:
            self.exit_status = stop.status
        else:
            try:
                self.copy.cont()
            except RcoreError:
                pass

    def _wait_copy_exit(self):
        while self.exit_status is None:
            try:
                stop = self.copy.wait()
            except RcoreError:
                return
            if stop.exited:
                self.exit_status = stop.status
            else:
                self.copy.cont()

    def _kill_copy(self):
        try:
            os.kill(self.copy.tid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _exit_text(self):
        status = self.exit_status
        if status is None or status < 0:
            return ""
        if os.WIFSIGNALED(status):
            return f" (killed by {signal.Signals(os.WTERMSIG(status)).name})"
        code = os.WEXITSTATUS(status)
        return f" ({os.strerror(code)})" if code else ""
