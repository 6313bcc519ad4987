"""Rewriting the notes of a core file, to make cores that parse but hold values a
test chooses.

The notes are decoded with rcore's own framing (elf/notes.py), changed, encoded
again and appended at the end of the file; the PT_NOTE program header is pointed
at the new copy.  Memory segments stay where they are.

    rewrite_notes(path, fn)                      fn(owner, type, desc) -> new desc
                                                 (None: drop the note)
    rewrite_rcore_note(path, note_type, fn)      fn(json_dict) -> new dict (or None
                                                 after changing it in place), for
                                                 every rcore note of that type
    rewrite_prstatus(path, fn)                   fn(ElfPrstatus): change in place
    rewrite_xstate(path, fn)                     fn(bytearray): change in place"""

import ctypes
import json
import struct

from rcore.arch import x86_64
from rcore.elf import notes as N
from rcore.elf import rcore_notes as R
from rcore.elf import structs as S

def rewrite_notes(path, fn):
    with open(path, "r+b") as f:
        eh = S.Elf64_Ehdr.from_buffer_copy(f.read(ctypes.sizeof(S.Elf64_Ehdr)))
        phsize = ctypes.sizeof(S.Elf64_Phdr)
        f.seek(eh.e_phoff)
        table = bytearray(f.read(eh.e_phnum * phsize))
        for i in range(eh.e_phnum):
            ph = S.Elf64_Phdr.from_buffer(table, i * phsize)
            if ph.p_type != S.PT_NOTE:
                continue
            f.seek(ph.p_offset)
            blob = f.read(ph.p_filesz)
            out = b""
            for owner, ntype, desc in N.iter_notes(blob):
                new = fn(owner, ntype, desc)
                if new is not None:
                    out += N.encode_note(owner, ntype, bytes(new))
            end = f.seek(0, 2)
            end += -end % 8
            f.seek(end)
            f.write(out)
            ph.p_offset, ph.p_filesz = end, len(out)
        f.seek(eh.e_phoff)
        f.write(table)


def rewrite_rcore_note(path, note_type, fn):
    def change(owner, ntype, desc):
        if owner != R.OWNER or ntype != note_type:
            return desc
        (version,) = struct.unpack_from("<I", desc)
        data = json.loads(desc[4:].decode())
        new = fn(data)
        data = data if new is None else new
        return struct.pack("<I", version) + json.dumps(data).encode()
    rewrite_notes(path, change)


def rewrite_prstatus(path, fn):
    """fn(st) for each thread's NT_PRSTATUS (st.pr_pid, st.pr_reg.cs, ...)."""
    def change(owner, ntype, desc):
        if owner != "CORE" or ntype != S.NT_PRSTATUS:
            return desc
        st = N.decode_prstatus(desc)
        fn(st)
        return bytes(st)[:len(desc)]
    rewrite_notes(path, change)


def rewrite_xstate(path, fn):
    """fn(image) for each thread's NT_X86_XSTATE (a bytearray; may change length)."""
    def change(owner, ntype, desc):
        if owner != "LINUX" or ntype != x86_64.NT_ARCH_XSTATE:
            return desc
        image = bytearray(desc)
        fn(image)
        return image
    rewrite_notes(path, change)
