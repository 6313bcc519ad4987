"""Writing a core file: ELF header, program headers, each mapping's data at a
page-aligned offset (p_align = page size) so a restorer can mmap it, then the
notes.  The notes come last (ELF lets PT_NOTE be anywhere; gdb, readelf and the
reader follow the program header) so that the data's place does not depend on
their size: a dump lays out the file and writes memory while the target is
frozen, and encodes the notes (milliseconds per hundred threads) after releasing
it.

The file is created under a temporary name beside the target (O_EXCL, mode 0600),
sized with ftruncate so that pages never written stay holes, and renamed over the
final name only by commit().  Temporaries of dead rcore processes are removed."""

import bisect
import ctypes
import os
import re

from .. import arch
from ..linux import procfs
from . import notes as N
from . import rcore_notes as R
from . import structs as S


def segment_flags(perms):
    return ((S.PF_R if perms[0] == "r" else 0) | (S.PF_W if perms[1] == "w" else 0)
            | (S.PF_X if perms[2] == "x" else 0))


def build_notes(proc, arch_mod, page_size, cursig=0, parent=None, tree=None):
    """Standard notes in the kernel's order (fs/binfmt_elf.c write_note_info), then
    rcore's notes (with RCORE_PARENT for an incremental core: chain.py, and
    RCORE_TREE for a tree's root: tree.py)."""
    out = []
    for i, t in enumerate(proc.threads):
        regs = t.user_regs(arch_mod)
        sigpend = 0
        for info in t.pending:
            sigpend |= 1 << (int.from_bytes(info[:4], "little") - 1)
        out.append(N.encode_note("CORE", S.NT_PRSTATUS, N.encode_prstatus(proc, t, regs, sigpend, cursig if i == 0 else 0)))
        if i == 0:
            out.append(N.encode_note("CORE", S.NT_PRPSINFO, N.encode_prpsinfo(proc)))
            out.append(N.encode_note("CORE", S.NT_SIGINFO, N.encode_siginfo(cursig)))
            out.append(N.encode_note("CORE", S.NT_AUXV, proc.auxv))
            out.append(N.encode_note("CORE", S.NT_FILE, N.encode_file_note(proc.mappings, page_size)))
        if t.xstate:
            out.append(N.encode_note("CORE", S.NT_PRFPREG, t.xstate[:arch_mod.FXSAVE_SIZE]))
            out.append(N.encode_note("LINUX", arch_mod.NT_ARCH_XSTATE, t.xstate))
            out.extend(N.encode_note(owner, ntype, desc)
                       for owner, ntype, desc in arch_mod.extra_thread_notes(t.xstate))
    out.append(N.encode_note(R.OWNER, R.NT_RCORE_PROCESS, R.encode_process(proc)))
    for t in proc.threads:
        out.append(N.encode_note(R.OWNER, R.NT_RCORE_THREAD, R.encode_thread(t)))
    out.append(N.encode_note(R.OWNER, R.NT_RCORE_MAPPINGS, R.encode_mappings(proc)))
    out.append(N.encode_note(R.OWNER, R.NT_RCORE_FILES, R.encode_files(proc)))
    if parent:
        out.append(N.encode_note(R.OWNER, R.NT_RCORE_PARENT, R.encode_parent(parent)))
    if tree:
        out.append(N.encode_note(R.OWNER, R.NT_RCORE_TREE, R.encode_tree(tree)))
    if proc.sysvipc:
        out.append(N.encode_note(R.OWNER, R.NT_RCORE_SYSVIPC, R.encode_sysvipc(proc.sysvipc)))
    return b"".join(out)


# A core being written is named .NAME.rcore-tmp-PID-STARTTIME-N: the writing rcore's
# PID and start time (/proc/PID/stat field 22) tell whether it still lives.  One
# killed (SIGKILL leaves no time to clean up) leaves its temporary behind; the next
# core written in that directory removes it.
TMP_MARK = "rcore-tmp-"
_TMP_NAME = re.compile(r"^\..+\." + TMP_MARK + r"(\d+)-(\d+)-\d+$")


def _writer_id():
    return "%d-%d" % procfs.process_identity()


def remove_dead_temporaries(directory):
    """Remove the temporaries of rcore processes that died writing a core in
    directory (only this user's files).  Returns the names removed."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = _TMP_NAME.match(name)
        if not m:
            continue
        path = os.path.join(directory, name)
        try:
            if (not procfs.identity_alive(int(m.group(1)), int(m.group(2)))
                    and os.lstat(path).st_uid == os.geteuid()):
                os.unlink(path)
                removed.append(name)
        except OSError:
            continue
    return removed


# A big segment's data starts at a file offset congruent to its address modulo
# 2 MiB (the padding is a hole): aligned writes fill the page cache with large
# folios (measured 5-7% faster on ext4), and a restore that maps the core can
# get them too.
LARGE_ALIGN = 2 << 20


class CoreWriter:
    """Lays out and writes one core file.  `segments` is a list of (mapping,
    filesz): filesz bytes of the mapping are stored, the rest is memory only.
    parent: the RCORE_PARENT identity of an incremental core (chain.py).
    tree: the tree.Tree a tree's root core holds (RCORE_TREE).
    Every core gets a checkpoint_id (in RCORE_PROCESS): random for a new
    checkpoint, kept from proc.extra when the state already has one (a
    flattened core is the same checkpoint)."""

    def __init__(self, path, proc, segments, arch_mod=None, parent=None, tree=None):
        self.path = os.path.abspath(path)
        self.arch = arch_mod or arch.host()
        self.page = self.arch.PAGE_SIZE
        self.proc = proc
        self.segments = segments
        self.parent = parent
        self.tree = tree            # tree.Tree: the root core of a tree holds it
        self.checkpoint_id = proc.extra.setdefault("checkpoint_id", os.urandom(16).hex())
        self.fd = None
        self.tmp = None
        self.offsets = {}           # mapping start -> file offset of its data
        self._stored = self._starts = None
        self.size = 0

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None or self.fd is not None:
            self.abort()
        return False

    def open(self):
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise FileNotFoundError(2, f"no such directory: {directory}")
        remove_dead_temporaries(directory)
        base = os.path.basename(self.path)
        me = _writer_id()
        for n in range(100):
            tmp = os.path.join(directory, f".{base}.{TMP_MARK}{me}-{n}")
            try:
                self.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                self.tmp = tmp
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(17, f"cannot create a temporary file in {directory}")
        os.fchmod(self.fd, 0o600)    # whatever the umask
        self._lay_out()

    def _lay_out(self):
        """Each segment's data offset; the headers and notes are written by commit()."""
        phnum = 1 + len(self.segments)
        off = self._align(ctypes.sizeof(S.Elf64_Ehdr) + phnum * ctypes.sizeof(S.Elf64_Phdr))
        for m, filesz in self.segments:
            if filesz >= LARGE_ALIGN:
                off += (m.start - off) % LARGE_ALIGN
            if filesz:
                self.offsets[m.start] = off
                off = self._align(off + filesz)
        self.size = off
        os.ftruncate(self.fd, self.size)

    def _write_head(self):
        note_data = build_notes(self.proc, self.arch, self.page, parent=self.parent,
                                tree=self.tree)
        notes_off = self.size
        phdrs = [S.Elf64_Phdr(S.PT_NOTE, 0, notes_off, 0, 0, len(note_data), 0, 4)]
        for m, filesz in self.segments:
            phdrs.append(S.Elf64_Phdr(S.PT_LOAD, segment_flags(m.perms),
                                      self.offsets[m.start] if filesz else 0,
                                      m.start, 0, filesz, m.size, self.page))
        eh = S.Elf64_Ehdr()
        eh.e_ident[:7] = list(S.ELFMAG) + [S.ELFCLASS64, S.ELFDATA2LSB, S.EV_CURRENT]
        eh.e_type, eh.e_machine, eh.e_version = S.ET_CORE, self.arch.ELF_MACHINE, S.EV_CURRENT
        eh.e_phoff, eh.e_ehsize = ctypes.sizeof(S.Elf64_Ehdr), ctypes.sizeof(S.Elf64_Ehdr)
        eh.e_phentsize, eh.e_phnum = ctypes.sizeof(S.Elf64_Phdr), len(phdrs)
        self.pwrite(note_data, notes_off)
        self.pwrite(bytes(eh) + b"".join(bytes(p) for p in phdrs), 0)
        self.size = notes_off + len(note_data)

    def _align(self, n):
        return (n + self.page - 1) & ~(self.page - 1)

    def pwrite(self, data, offset):
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def data_offset(self, mapping, addr):
        return self.offsets[mapping.start] + (addr - mapping.start)

    def stored_offset(self, addr):
        """The file offset of addr's data, or None when the core does not store
        it (a mapping may be cut into several segments: chain.py)."""
        if self._stored is None:        # sorted (start, filesz): one search per address
            self._stored = sorted((m.start, filesz) for m, filesz in self.segments if filesz)
            self._starts = [start for start, _ in self._stored]
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self._stored[i][0] + self._stored[i][1]:
            return self.offsets[self._stored[i][0]] + (addr - self._stored[i][0])
        return None

    def commit(self):
        """Write the notes (from the state as it is now) and the headers, then
        give the core its name."""
        self._write_head()
        os.close(self.fd)
        self.fd = None
        os.rename(self.tmp, self.path)
        self.tmp = None

    def abort(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.tmp:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass
            self.tmp = None
