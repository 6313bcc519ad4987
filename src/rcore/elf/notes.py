"""Note framing and the standard Linux core notes (fs/binfmt_elf.c):
NT_PRSTATUS, NT_PRPSINFO, NT_PRFPREG, NT_SIGINFO, NT_AUXV, NT_FILE, NT_X86_XSTATE.

encode_* build note payloads from the state model; decode_* parse them back."""

import ctypes
import struct

from . import structs as S

SIGINFO_SIZE = 128


def _pad(n):
    return (n + S.NOTE_ALIGN - 1) & ~(S.NOTE_ALIGN - 1)


def encode_note(owner, note_type, desc):
    name = owner.encode() + b"\0"
    hdr = S.Elf64_Nhdr(len(name), len(desc), note_type)
    return (bytes(hdr) + name + b"\0" * (_pad(len(name)) - len(name))
            + desc + b"\0" * (_pad(len(desc)) - len(desc)))


def iter_notes(data):
    """Yield (owner, type, desc) from a PT_NOTE segment's bytes."""
    off, hsize = 0, ctypes.sizeof(S.Elf64_Nhdr)
    while off + hsize <= len(data):
        hdr = S.Elf64_Nhdr.from_buffer_copy(data, off)
        off += hsize
        name = data[off: off + hdr.n_namesz]
        off += _pad(hdr.n_namesz)
        desc = data[off: off + hdr.n_descsz]
        if len(desc) != hdr.n_descsz or len(name) != hdr.n_namesz:
            raise ValueError("note runs past the end of its segment")
        off += _pad(hdr.n_descsz)
        yield name.rstrip(b"\0").decode("ascii", "replace"), hdr.n_type, bytes(desc)


def _timeval(ticks, hz=100):
    return S.Timeval(ticks // hz, (ticks % hz) * (1000000 // hz))


def encode_prstatus(proc, thread, regs, sigpend=0, cursig=0):
    st = S.ElfPrstatus()
    st.pr_info.si_signo = cursig
    st.pr_cursig = cursig
    st.pr_sigpend = sigpend
    st.pr_sighold = thread.sigmask
    st.pr_pid, st.pr_ppid, st.pr_pgrp, st.pr_sid = thread.tid, proc.ppid, proc.pgrp, proc.sid
    if thread.tid == proc.pid:
        times = proc.times
        st.pr_utime = _timeval(times.get("utime", 0))
        st.pr_stime = _timeval(times.get("stime", 0))
        st.pr_cutime = _timeval(times.get("cutime", 0))
        st.pr_cstime = _timeval(times.get("cstime", 0))
    st.pr_reg = regs
    st.pr_fpvalid = 1
    return bytes(st)


def _exact(cls, desc):
    if len(desc) != ctypes.sizeof(cls):
        raise ValueError(f"{len(desc)} bytes, expected {ctypes.sizeof(cls)}")
    return cls.from_buffer_copy(desc)


def decode_prstatus(desc):
    st = _exact(S.ElfPrstatus, desc)
    if st.pr_pid <= 0:
        raise ValueError(f"thread ID {st.pr_pid}")
    return st


def encode_prpsinfo(proc):
    ps = S.ElfPrpsinfo()
    state = proc.state[:1] or "R"
    ps.pr_sname = state.encode()
    ps.pr_state = bytes([{"R": 0, "S": 1, "D": 2, "T": 3, "t": 3, "Z": 4}.get(state, 0)])
    ps.pr_zomb = bytes([1 if state == "Z" else 0])
    ps.pr_nice = bytes([proc.nice & 0xFF])
    ps.pr_uid = int(proc.creds.get("uid", [0])[0])
    ps.pr_gid = int(proc.creds.get("gid", [0])[0])
    ps.pr_pid, ps.pr_ppid, ps.pr_pgrp, ps.pr_sid = proc.pid, proc.ppid, proc.pgrp, proc.sid
    ps.pr_fname = proc.comm.encode("utf-8", "surrogateescape")[:15]
    ps.pr_psargs = " ".join(proc.cmdline).encode("utf-8", "surrogateescape")[:79]
    return bytes(ps)


def decode_prpsinfo(desc):
    return _exact(S.ElfPrpsinfo, desc)


def encode_siginfo(signo=0, code=0):
    return struct.pack("<iii", signo, 0, code).ljust(SIGINFO_SIZE, b"\0")


def encode_file_note(mappings, page_size):
    """NT_FILE: count, page size, then (start, end, offset in pages), then names."""
    files = [m for m in mappings if m.file_backed]
    head = struct.pack("<QQ", len(files), page_size)
    ranges = b"".join(struct.pack("<QQQ", m.start, m.end, m.offset // page_size) for m in files)
    names = b"".join(_file_name(m).encode("utf-8", "surrogateescape") + b"\0" for m in files)
    return head + ranges + names


def _file_name(m):
    return m.path + " (deleted)" if m.deleted else m.path


def decode_file_note(desc):
    """[(start, end, file offset, name)].  The count is checked against the note's
    size before anything is read: the note is untrusted input."""
    if len(desc) < 16:
        raise ValueError(f"{len(desc)} bytes, too short for its header")
    count, page_size = struct.unpack_from("<QQ", desc)
    names_at = 16 + 24 * count
    if names_at > len(desc):
        raise ValueError(f"{count} files do not fit in {len(desc)} bytes")
    if page_size == 0 or page_size & (page_size - 1):
        raise ValueError(f"page size {page_size} is not a power of two")
    names = desc[names_at:].split(b"\0")
    if len(names) <= count:
        raise ValueError(f"{count} files but {len(names) - 1} names")
    out = []
    for i in range(count):
        start, end, pgoff = struct.unpack_from("<QQQ", desc, 16 + 24 * i)
        if start >= end:
            raise ValueError(f"file {i}: start {start:#x} is not below end {end:#x}")
        out.append((start, end, pgoff * page_size, names[i].decode("utf-8", "surrogateescape")))
    return out


def iter_auxv(data):
    for i in range(0, len(data) - 15, 16):
        key, value = struct.unpack_from("<QQ", data, i)
        yield key, value
        if key == 0:
            return


def find_build_id(path):
    """The GNU build-id of an ELF file as hex, or "" (reads section headers only)."""
    try:
        with open(path, "rb") as f:
            ehdr = S.Elf64_Ehdr.from_buffer_copy(f.read(64).ljust(64, b"\0"))
            if bytes(ehdr.e_ident[:4]) != S.ELFMAG or ehdr.e_ident[4] != S.ELFCLASS64:
                return ""
            f.seek(ehdr.e_phoff)
            phdrs = f.read(ehdr.e_phnum * ctypes.sizeof(S.Elf64_Phdr))
            for i in range(ehdr.e_phnum):
                ph = S.Elf64_Phdr.from_buffer_copy(phdrs, i * ctypes.sizeof(S.Elf64_Phdr))
                if ph.p_type != S.PT_NOTE or ph.p_filesz > 1 << 20:
                    continue
                f.seek(ph.p_offset)
                for owner, ntype, desc in iter_notes(f.read(ph.p_filesz)):
                    if owner == "GNU" and ntype == S.NT_GNU_BUILD_ID:
                        return desc.hex()
    except (OSError, ValueError):
        pass
    return ""
