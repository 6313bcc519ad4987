"""Real programs with sockets across `rcore dump --kill` and `rcore restart
--detach`, used as a user would, and checked from outside: python's
http.server, an asyncio echo server, Redis, Node, a Jupyter kernel."""

import os
import shutil
import socket
import subprocess
import sys
import urllib.request

import pytest

from conftest import rcore_cmd, restart, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port(family=socket.AF_INET):
    with socket.socket(family) as s:
        s.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
        return s.getsockname()[1]


def answers(port, host="127.0.0.1"):
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def checkpoint_kill_restart(procs, p, core, *dump_args, restart_args=()):
    """rcore dump --kill, then rcore restart --detach, from the command line;
    returns the restarted PID (ended by the procs fixture)."""
    res = rcore_cmd("dump", "--kill", "-o", core, *dump_args, p.pid)
    assert res.returncode == 0, res.stderr
    p.wait(timeout=10)
    res = rcore_cmd("restart", "--detach", *restart_args, core)
    assert res.returncode == 0, res.stderr
    pid = int(res.stdout.split()[-1])
    procs.adopt(pid)
    return pid, res.stderr


def test_http_server_same_port_same_bytes(procs, tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "page.txt").write_bytes(os.urandom(3000).hex().encode())
    port = free_port()
    p = procs.start([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                    cwd=root)
    wait_for(lambda: answers(port), what="http.server listening")
    url = f"http://127.0.0.1:{port}/page.txt"
    before = urllib.request.urlopen(url, timeout=5).read()
    checkpoint_kill_restart(procs, p, tmp_path / "core")
    after = urllib.request.urlopen(url, timeout=5).read()
    assert after == before == (root / "page.txt").read_bytes()


ECHO_SERVER = """
import asyncio, sys

async def echo(reader, writer):
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", int(sys.argv[1]))
    print("listening", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


def echoed(sock, data):
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(len(data) - len(got))
        assert chunk, "connection closed"
        got += chunk
    return got


def start_echo_server(procs, tmp_path):
    script = tmp_path / "echo_server.py"
    script.write_text(ECHO_SERVER)
    port = free_port()
    p = procs.start([sys.executable, str(script), str(port)])
    wait_for(lambda: answers(port), what="echo server listening")
    return p, port


def test_asyncio_echo_server_echoes_new_clients(procs, tmp_path):
    p, port = start_echo_server(procs, tmp_path)
    held = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert echoed(held, b"before") == b"before"
    _, warnings = checkpoint_kill_restart(procs, p, tmp_path / "core")
    assert "comes back reset" in warnings, warnings
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        assert echoed(c, b"after the restart") == b"after the restart"
    # The connection held across the kill ended with the killed process.
    try:
        held.sendall(b"x")
        assert held.recv(1) == b""
    except OSError:
        pass
    held.close()


def test_asyncio_echo_connection_survives_with_tcp_established(procs, tmp_path):
    p, port = start_echo_server(procs, tmp_path)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as held:
        assert echoed(held, b"before the checkpoint") == b"before the checkpoint"
        checkpoint_kill_restart(procs, p, tmp_path / "core", "--tcp-established",
                                restart_args=["--tcp-established"])
        for i in range(3):
            msg = f"after the restart {i}".encode() * 100
            assert echoed(held, msg) == msg
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        assert echoed(c, b"new client") == b"new client"


@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server not installed")
def test_redis_keys_after_restart_same_port(procs, tmp_path):
    port = free_port()
    p = procs.start(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                     "--daemonize", "no", "--dir", str(tmp_path)])
    wait_for(lambda: answers(port), what="redis listening")
    cli = ["redis-cli", "-p", str(port)]
    for k, v in (("k", "v1"), ("other", "with spaces")):
        assert subprocess.run(cli + ["SET", k, v], capture_output=True, text=True,
                              timeout=10).stdout.strip() == "OK"
    checkpoint_kill_restart(procs, p, tmp_path / "core")
    for k, v in (("k", "v1"), ("other", "with spaces")):
        got = subprocess.run(cli + ["GET", k], capture_output=True, text=True, timeout=10)
        assert got.stdout.strip() == v, got
    assert subprocess.run(cli + ["INCR", "n"], capture_output=True, text=True,
                          timeout=10).stdout.strip() == "1"


NODE_SERVER = """
const http = require("http");
let ticks = 0;
setInterval(() => { ticks++; }, 20);
http.createServer((req, res) => res.end(String(ticks)))
    .listen(Number(process.argv[2]), "127.0.0.1", () => console.log("listening"));
"""


@pytest.mark.skipif(not shutil.which("node"), reason="node not installed")
def test_node_http_server_and_timer(procs, tmp_path):
    script = tmp_path / "server.js"
    script.write_text(NODE_SERVER)
    port = free_port()
    p = procs.start(["node", str(script), str(port)])
    wait_for(lambda: answers(port), what="node listening")
    url = f"http://127.0.0.1:{port}/"
    wait_for(lambda: int(urllib.request.urlopen(url, timeout=5).read()) > 5, what="ticks")
    before = int(urllib.request.urlopen(url, timeout=5).read())
    checkpoint_kill_restart(procs, p, tmp_path / "core")
    after = int(urllib.request.urlopen(url, timeout=5).read())
    assert after >= before
    wait_for(lambda: int(urllib.request.urlopen(url, timeout=5).read()) > after + 5,
             what="the timer counting on")


def _evaluate(kc, expression):
    reply = kc.execute("", user_expressions={"value": expression}, reply=True, timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]
    return reply["content"]["user_expressions"]["value"]["data"]["text/plain"]


class Kernel:
    """A Jupyter kernel over TCP on 127.0.0.1 and a client of it; the kernel
    process is ended by the procs fixture."""

    def __init__(self, procs, tmp_path, independent=False):
        pytest.importorskip("ipykernel")
        jupyter_client = pytest.importorskip("jupyter_client")
        self.km = jupyter_client.KernelManager(transport="tcp", ip="127.0.0.1",
                                               connection_file=str(tmp_path / "kernel.json"))
        self.out = open(tmp_path / "kernel.out", "wb")
        self.km.start_kernel(stdout=self.out, stderr=self.out, stdin=subprocess.DEVNULL,
                             independent=independent)
        self.process = self.km.provisioner.process
        procs.adopt(self.process.pid)
        self.kc = self.km.client()
        self.kc.start_channels()

    def __enter__(self):
        self.kc.wait_for_ready(timeout=60)
        return self

    def __exit__(self, *exc):
        self.kc.stop_channels()
        self.out.close()


def test_jupyter_kernel_keeps_its_variables(procs, tmp_path):
    with Kernel(procs, tmp_path) as k:
        kc, kernel = k.kc, k.process
        reply = kc.execute("x = 41", reply=True, timeout=60)
        assert reply["content"]["status"] == "ok"
        res = rcore_cmd("dump", "--kill", "-o", tmp_path / "core", kernel.pid)
        assert res.returncode == 0, res.stderr
        kernel.wait(timeout=10)
        # Restarted by the kernel's own parent, as a notebook server would: the
        # kernel exits by itself when its parent is not the one that started it
        # (ipykernel's ParentPollerUnix, JPY_PARENT_PID), so that
        # `rcore restart` from a shell, detached or not, ends in its exit.
        h = restart(procs, tmp_path / "core")
        assert h.pid == kernel.pid
        # The same client: ZeroMQ reconnects once the kernel's sockets listen again.
        assert _evaluate(kc, "x + 1") == "42"
        kc.execute("y = x * 2", reply=True, timeout=60)
        assert _evaluate(kc, "y") == "82"


def test_jupyter_kernel_started_independent_restarts_from_the_command_line(procs, tmp_path):
    """A kernel started independent (no JPY_PARENT_PID: it does not watch its
    parent) comes back with `rcore restart --detach` like any server."""
    with Kernel(procs, tmp_path, independent=True) as k:
        assert k.kc.execute("x = 41", reply=True, timeout=60)["content"]["status"] == "ok"
        pid, _ = checkpoint_kill_restart(procs, k.process, tmp_path / "core")
        assert pid == k.process.pid
        assert _evaluate(k.kc, "x + 1") == "42"


def test_jupyter_kernel_restored_between_cells(procs, tmp_path):
    """rcore restore rolls the live kernel back, with its sockets in place."""
    with Kernel(procs, tmp_path) as k:
        assert k.kc.execute("x = 41", reply=True, timeout=60)["content"]["status"] == "ok"
        res = rcore_cmd("dump", "-o", tmp_path / "core", k.process.pid)
        assert res.returncode == 0, res.stderr
        k.kc.execute("x = 100", reply=True, timeout=60)
        assert _evaluate(k.kc, "x") == "100"
        res = rcore_cmd("restore", k.process.pid, tmp_path / "core")
        assert res.returncode == 0, res.stderr
        assert _evaluate(k.kc, "x + 1") == "42"
