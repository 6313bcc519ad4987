"""--inherit-fd N:PATH / N:fd:M: what a descriptor the program inherited from
outside the checkpoint (a pipe at fd 251 from a CI runner) becomes."""

import os

from conftest import rcore_cmd, read_lines, restart, wait_lines
import rcore

FD = 251


def _checkpointed(procs, build, tmp_path):
    """fd_inherited running with a pipe at fd 251, checkpointed and killed."""
    r, w = os.pipe()
    try:
        os.dup2(w, FD)
        p = procs.start([build("fd_inherited"), str(tmp_path / "go")], pass_fds=[FD])
    finally:
        os.close(FD)
        os.close(w)
    wait_lines(p.out_path, 1)
    assert os.read(r, 100) == b"before\n"
    rcore.dump(p.pid, str(tmp_path / "core"), kill=True)
    p.wait(timeout=10)
    os.close(r)
    return p


def test_refusal_names_the_option(procs, build, tmp_path):
    _checkpointed(procs, build, tmp_path)
    res = rcore_cmd("restart", tmp_path / "core")
    assert res.returncode != 0
    assert f"fd {FD}" in res.stderr and f"--inherit-fd {FD}:PATH" in res.stderr, res.stderr


def test_inherit_fd_as_a_path(procs, build, tmp_path):
    p = _checkpointed(procs, build, tmp_path)
    log = tmp_path / "log"
    h = restart(procs, tmp_path / "core", inherit={FD: str(log)})
    (tmp_path / "go").touch()
    assert h.wait(30) == 0
    assert read_lines(p.out_path)[-1] == "verdict: ok"
    assert log.read_text() == "after\n"


def test_inherit_fd_as_one_of_rcores(procs, build, tmp_path):
    p = _checkpointed(procs, build, tmp_path)
    r, w = os.pipe()
    try:
        (tmp_path / "go").touch()
        res = rcore_cmd("restart", tmp_path / "core", "--inherit-fd", f"{FD}:fd:{w}",
                        pass_fds=[w])
        os.close(w)
        w = -1
        assert res.returncode == 0, res.stderr
        assert os.read(r, 100) == b"after\n"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert read_lines(p.out_path)[-1] == "verdict: ok"
