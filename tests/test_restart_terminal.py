"""Full-screen programs across a checkpoint, kill and restart in another tmux
session (fds/tty.py): the terminal settings come back (raw mode: keys act
without Enter), the screen repaints, job control (Ctrl-Z, fg) works."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import SRC, rcore_cmd, wait_for

pytestmark = pytest.mark.skipif(not shutil.which("tmux"), reason="needs tmux")


class Tmux:
    """tmux sessions with names unique to this test, killed at the end, with
    the PIDs of what ran in them."""

    def __init__(self, tag):
        self.tag = f"rcore-test-{os.getpid()}-{tag}"
        self.sessions = []
        self.pids = set()

    def new(self, name, command):
        name = f"{self.tag}-{name}"
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "80", "-y", "24",
                        command], check=True)
        self.sessions.append(name)
        return name

    def pane_pid(self, name):
        pid = int(subprocess.run(["tmux", "list-panes", "-t", name, "-F", "#{pane_pid}"],
                                 check=True, capture_output=True, text=True).stdout.split()[0])
        self.pids.add(pid)
        return pid

    def keys(self, name, *keys):
        subprocess.run(["tmux", "send-keys", "-t", name, *keys], check=True)

    def screen(self, name):
        return subprocess.run(["tmux", "capture-pane", "-t", name, "-p"],
                              capture_output=True, text=True).stdout

    def wait_screen(self, name, predicate, what):
        return wait_for(lambda: predicate(self.screen(name)), timeout=15, what=what)

    def end(self):
        for name in self.sessions:
            subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
        for pid in self.pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


@pytest.fixture
def tmux(request):
    t = Tmux(request.node.name[:20].replace("[", "-").replace("]", ""))
    yield t
    t.end()


def _restart_cmd(core, rc_file):
    """The command line run in the new session's shell: rcore in the foreground,
    in a subshell that is one job with it (a list would go on when it stops)."""
    return (f"(cd {os.path.dirname(SRC)} && PYTHONPATH={SRC} {sys.executable} -m rcore "
            f"restart {core}; echo $? > {rc_file})")


def _checkpoint_pane(tmux, session, core, comm):
    pid = tmux.pane_pid(session)
    with open(f"/proc/{pid}/comm") as f:
        assert f.read().strip() == comm
    res = rcore_cmd("dump", pid, "-o", core, "--kill")
    assert res.returncode == 0, res.stderr
    return pid


@pytest.mark.skipif(not shutil.which("vim"), reason="needs vim")
def test_vim_repaints_in_raw_mode_with_job_control(tmux, tmp_path):
    text = tmp_path / "file"
    core, rc = tmp_path / "core", tmp_path / "rc"
    first = tmux.new("vim", f"vim -u NONE -i NONE -N {text}")
    tmux.wait_screen(first, lambda s: "~" in s, "vim to start")
    tmux.keys(first, "i", "hello restart", "Escape")
    tmux.wait_screen(first, lambda s: "hello restart" in s and "INSERT" not in s, "the edit")
    _checkpoint_pane(tmux, first, core, "vim")
    info = rcore_cmd("info", core).stdout
    assert "terminal, raw, no echo, 80x24, in the foreground" in info, info

    second = tmux.new("shell", "bash --norc --noprofile -i")
    tmux.keys(second, _restart_cmd(core, rc), "Enter")
    # The screen repaints with the unsaved edit; vim's POSIX timer works (no E1285/E1286).
    screen = tmux.wait_screen(second, lambda s: s if s.startswith("hello restart") else None,
                              "vim's screen repainted")
    assert "E128" not in screen, screen
    # Job control: Ctrl-Z stops vim and rcore (one process group), fg continues both.
    tmux.keys(second, "C-z")
    tmux.wait_screen(second, lambda s: "Stopped" in s, "the job to stop")
    tmux.keys(second, "clear; fg", "Enter")
    tmux.wait_screen(second, lambda s: s.startswith("hello restart"), "vim back after fg")
    # Raw mode: keys act without Enter; ZZ saves and quits.
    tmux.keys(second, "A", " more", "Escape", "Z", "Z")
    wait_for(lambda: rc.exists() and rc.read_text().strip(), what="rcore to exit")
    assert rc.read_text().strip() == "0"
    assert text.read_text() == "hello restart more\n"


@pytest.mark.skipif(not shutil.which("less"), reason="needs less")
def test_less_answers_single_keys(tmux, tmp_path):
    text = tmp_path / "lines"
    text.write_text("".join(f"line {i}\n" for i in range(1, 201)))
    core, rc = tmp_path / "core", tmp_path / "rc"
    first = tmux.new("less", f"less {text}")
    tmux.wait_screen(first, lambda s: "line 23" in s, "less to show the file")
    _checkpoint_pane(tmux, first, core, "less")

    second = tmux.new("restart", f"bash --norc --noprofile -c '{_restart_cmd(core, rc)}'")
    tmux.wait_screen(second, lambda s: s.startswith("line 1\n") and "line 23" in s,
                     "less's screen repainted")
    tmux.keys(second, "G")
    tmux.wait_screen(second, lambda s: "line 200" in s, "G to go to the end")
    tmux.keys(second, "q")
    wait_for(lambda: rc.exists() and rc.read_text().strip(), what="rcore to exit")
    assert rc.read_text().strip() == "0"
