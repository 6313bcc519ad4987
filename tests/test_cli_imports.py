"""The CLI imports only what a command needs (every command a user types pays
for its imports): a dump of a process without sockets loads no socket code, a
restart none of the dump's capture, neither loads dataclasses (rcore.record),
shutil, termios for a process without a terminal, nor the other commands'
modules.  What is loaded, not how long it
takes: a behaviour test."""

import os
import subprocess
import sys

from conftest import SRC

# Runs the CLI's main() as the command does and prints the modules it loaded.
RUN = ("import sys\nfrom rcore import cli\ncode = cli.main(sys.argv[1:])\n"
       "print(' '.join(sorted(sys.modules)), file=sys.stderr)\nsys.exit(code)")


def _modules(*argv):
    r = subprocess.run([sys.executable, "-S", "-c", RUN, *map(str, argv)],
                       env=dict(os.environ, PYTHONPATH=SRC), capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout, set(r.stderr.splitlines()[-1].split())


NEVER = {"dataclasses", "inspect", "shutil", "copy", "rcore.commands.info",
         "rcore.commands.diff", "rcore.commands.run",
         "termios", "rcore.fds.tty"}        # (its descriptors: /dev/null and a file)
SOCKETS = {"socket", "rcore.fds.sockets", "rcore.fds.unix", "rcore.fds.inet",
           "rcore.fds.tcp_repair", "rcore.linux.sockdiag"}
CAPTURE = {"rcore.capture", "rcore.frozenmaps", "rcore.dump", "rcore.commands.dump"}


def test_dump_and_restart_load_only_their_modules(procs, tmp_path):
    p = procs.start(["sleep", "1000"], stdin=subprocess.DEVNULL)
    core = tmp_path / "core"
    _, loaded = _modules("dump", p.pid, "-o", core)
    assert "rcore.dump" in loaded and "rcore.fds.device" in loaded     # it did dump /dev/null
    assert not loaded & (NEVER | SOCKETS | {"rcore.commands.restart", "rcore.elf.schema"})
    out, loaded = _modules("restart", "--detach", "--any-pid", core)
    procs.adopt(int(out))
    assert "rcore.restart" in loaded
    assert not loaded & (NEVER | SOCKETS | CAPTURE)


def test_a_socket_loads_its_family_only(procs, tmp_path):
    """A process with a unix socket loads the unix family, not inet."""
    p = procs.start([sys.executable, "-S", "-c", "import socket, time\n"
                     "a, b = socket.socketpair()\nprint(flush=True)\ntime.sleep(1000)"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    p.stdout.readline()
    _, loaded = _modules("dump", p.pid, "-o", tmp_path / "core")
    assert {"socket", "rcore.fds.sockets", "rcore.fds.unix"} <= loaded
    assert not loaded & {"rcore.fds.inet", "rcore.fds.tcp_repair"}
