"""Real programs with sockets across `rcore dump --kill` and `rcore restart
--detach`, used as a user would, and checked from outside: python's
http.server, an asyncio echo server, Redis, Node, a Jupyter kernel."""

import os
import shutil
import socket
import sys
import time
import urllib.request

import pytest

from conftest import rcore_cmd, wait_for

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
