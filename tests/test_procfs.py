"""/proc parsing against what the kernel says through other interfaces."""

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
