"""/proc parsing against what the kernel says through other interfaces."""

import mmap
import os
import resource

from conftest import wait_lines
import rcore
from rcore.elf.reader import CoreFile
from rcore.linux import procfs


def test_limits_parsed_as_prlimit_reports_them():
    limits = procfs.read_rlimits(os.getpid())
    assert len(limits) == len(procfs.RLIMIT_NAMES) == 16
    for num, name in procfs.RLIMIT_NAMES.items():
        assert limits[name] == list(resource.prlimit(os.getpid(), num)), name


def test_stat_with_a_hostile_command_name():
    data = b"123 (a) b (c) d) S 1 123 123 0 -1 4194304 " + b" ".join(b"7" for _ in range(45))
    st = procfs.parse_stat(data)
    assert st.pid == 123 and st.comm == "a) b (c) d" and st.state == "S" and st.ppid == 1


def test_smaps_entries_match_maps_and_carry_flags_and_anonymous_bytes():
    # Our own smaps, with a mapping whose every page is written and one of a file
    # whose name has spaces and would end like a special mapping.
    anon = mmap.mmap(-1, 16 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    anon.write(b"x" * (16 * 4096))
    path = f"/tmp/rcore-test-{os.getpid()} [vdso]"
    with open(path, "wb") as f:
        f.write(b"y" * 4096)
    try:
        with open(path, "rb") as f:
            filemap = mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ)
        pid = os.getpid()
        entries = procfs.read_smaps(pid)
        assert [(m.start, m.end, m.perms, m.path) for m in entries] == \
            [(m.start, m.end, m.perms, m.path) for m in procfs.read_maps(pid)]
        assert all(m.vmflags for m in entries)
        mine = [m for m in entries if m.anonymous >= 16 * 4096 and "wr" in m.vmflags]
        assert mine, "the written anonymous mapping"
        assert any(m.path == path for m in entries)
        vdso = procfs.find_mapping(pid, "[vdso]")
        assert vdso.path == "[vdso]" and vdso.start == next(
            m.start for m in entries if m.path == "[vdso]")
        assert procfs.find_mapping(pid, "[no such mapping]") is None
        filemap.close()
    finally:
        os.unlink(path)
        anon.close()


def test_smaps_parsing_of_a_written_text():
    text = (b"7f0000000000-7f0000004000 rw-p 00000000 00:00 0 \n"
            b"Size:                 16 kB\nAnonymous:             8 kB\nSwap:                  4 kB\n"
            b"VmFlags: rd wr mr mw me ac \n"
            b"7f0000004000-7f0000005000 r--p 00001000 fe:01 42    /a path/with spaces (deleted)\n"
            b"Size:                  4 kB\nAnonymous:             0 kB\n"
            b"VmFlags: rd mr mw me \n")
    a, b = procfs.parse_smaps(text)
    assert (a.start, a.end, a.perms, a.path, a.anonymous, a.vmflags) == (
        0x7f0000000000, 0x7f0000004000, "rw-p", "", 12288, ["rd", "wr", "mr", "mw", "me", "ac"])
    assert (b.offset, b.dev, b.inode, b.path, b.deleted, b.anonymous, b.vmflags) == (
        0x1000, "fe:01", 42, "/a path/with spaces", True, 0, ["rd", "mr", "mw", "me"])


def test_dump_of_another_users_process(build, procs, tmp_path):
    # prlimit(2) on another user's process needs CAP_SYS_RESOURCE; /proc does not
    p = procs.start(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                     build("ticker")])
    wait_lines(p.out_path, 1)
    rcore.dump(p.pid, str(tmp_path / "c"))
    with CoreFile(str(tmp_path / "c")) as c:
        assert c.state.creds["uid"][0] == 65534
        # inherited from this process (prlimit on it would be refused, as said above)
        assert c.state.rlimits["nofile"] == list(resource.getrlimit(resource.RLIMIT_NOFILE))
