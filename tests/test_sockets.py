"""Sockets across a checkpoint, kill and restart: unix sockets of every kind
(tests/progs/fd_unix.c checks its own), TCP and UDP with their options."""

import fcntl
import os
import socket
import struct
import sys

import pytest
from conftest import (checkpoint_and_kill, proc_status, rcore_cmd, restart, wait_for,
                      wait_lines)
from test_fd_kinds import restarted_verdict


def test_unix_sockets_come_back(procs, build, tmp_path):
    outside = socket.socket(socket.AF_UNIX)
    outside.bind(str(tmp_path / "outside.sock"))
    outside.listen()
    try:
        _, summary, h = restarted_verdict(procs, build, tmp_path, "fd_unix",
                                          str(tmp_path / "outside.sock"))
    finally:
        outside.close()
    for warnings in (summary.warnings, h.warnings):
        assert any("outside the checkpoint" in w and "reset" in w for w in warnings), warnings


def _inet_sockets():
    """Sockets set up as servers set them up, with the options a restart must
    carry: {name: socket}."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 5))
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 3)
    tcp.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x10)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(17)
    tcp.setblocking(False)
    tcp6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    tcp6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    tcp6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    tcp6.bind(("::1", 0))
    tcp6.listen(3)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
    udp.bind(("127.0.0.1", 0))
    from rcore.linux import libc
    accept_all = struct.pack("=HBBI", libc.BPF_RET_K, 0, 0, 0xFFFFFFFF)
    libc.attach_filter(udp.fileno(), accept_all)
    udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp6.bind(("::1", 0))
    udp6.connect(udp6.getsockname())
    return {"tcp": tcp, "tcp6": tcp6, "udp": udp, "udp6": udp6}


def _state(s):
    """What a restart must keep of socket s, read from outside."""
    from rcore.linux import sockdiag
    opts = [(socket.SOL_SOCKET, o) for o in (socket.SO_REUSEADDR, socket.SO_REUSEPORT,
                                             socket.SO_KEEPALIVE, socket.SO_RCVBUF,
                                             socket.SO_SNDBUF, socket.SO_TYPE, socket.SO_DOMAIN)]
    if s.type == socket.SOCK_STREAM:
        opts += [(socket.IPPROTO_TCP, socket.TCP_NODELAY), (socket.IPPROTO_TCP,
                                                            socket.TCP_DEFER_ACCEPT)]
    if s.family == socket.AF_INET:
        opts.append((socket.IPPROTO_IP, socket.IP_TOS))
    if s.family == socket.AF_INET6:
        opts.append((socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
    peer = s.getpeername() if s.type == socket.SOCK_DGRAM and s.family == socket.AF_INET6 \
        else None
    proto = s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
    diag = sockdiag.read_inet_sockets(s.family, proto).get(os.fstat(s.fileno()).st_ino)
    nonblocking = bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)
    from rcore.linux import libc
    structs = [s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8),
               s.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16),
               libc.socket_filter(s.fileno())]
    return ([s.getsockopt(*o) for o in opts] + structs, s.getsockname(), peer, nonblocking,
            diag.wqueue if s.type == socket.SOCK_STREAM else None)


def _states_of(pid, fds):
    from rcore.linux import libc
    pidfd = libc.pidfd_open(pid)
    try:
        out = {}
        for name, fd in fds.items():
            with socket.socket(fileno=libc.pidfd_getfd(pidfd, fd)) as s:
                out[name] = _state(s)
        return out
    finally:
        os.close(pidfd)


def test_tcp_and_udp_sockets_come_back_with_options(procs, tmp_path):
    socks = _inet_sockets()
    p = procs.start(["sleep", "100"], pass_fds=[s.fileno() for s in socks.values()])
    fds = {name: s.fileno() for name, s in socks.items()}
    want = {name: _state(s) for name, s in socks.items()}
    for s in socks.values():
        s.close()
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"))
    checkpoint_and_kill(p, tmp_path / "core")
    info = rcore_cmd("info", tmp_path / "core").stdout
    assert f"AF_INET SOCK_STREAM listening on 127.0.0.1:{want['tcp'][1][1]}, backlog 17" in info
    assert "restart: a new socket listening on the same address and port" in info
    assert "restart: a new UDP socket bound and connected to the same addresses" in info
    h = restart(procs, tmp_path / "core")
    assert _states_of(h.pid, fds) == want
    with socket.create_connection(want["tcp"][1], timeout=5):
        pass                                # the listener takes new connections


HOLDER = """
import os, socket, sys, time
lst = socket.create_server((sys.argv[4], int(sys.argv[1])),
                           family=socket.AF_INET6 if ":" in sys.argv[4] else socket.AF_INET)
conn, _ = lst.accept()
conn.setblocking(False)
data = bytes(range(256)) * (int(sys.argv[3]) // 256)
sent = 0
while sent < len(data):           # until the peer's window and our buffer are full
    try:
        sent += conn.send(data[sent:])
    except BlockingIOError:
        break
print(sent, flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
conn.setblocking(True)
got = b""
while len(got) < 1000:
    got += conn.recv(1000 - len(got))
conn.sendall(b"echo:" + got)
time.sleep(100)
"""


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_tcp_connection_alive_with_its_queues(procs, tmp_path, host):
    """--tcp-established: bytes the process had not read yet, bytes it had sent
    that the peer had not acknowledged and bytes not even sent yet (the peer's
    window full) all arrive, in order, after the restart."""
    from test_socket_programs import free_port
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    port, go, total = free_port(family), tmp_path / "go", 8 << 20
    p = procs.start([sys.executable, str(script), str(port), str(go), str(total), host])
    client = wait_for(lambda: _connect(host, port), what="holder listening")
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    client.sendall(bytes(range(200)) * 5)        # queued unread in the holder
    sent = int(wait_lines(p.out_path, 1)[0])
    summary = rcore_cmd("dump", "--kill", "--tcp-established", "-o", tmp_path / "core", p.pid)
    assert summary.returncode == 0, summary.stderr
    p.wait(timeout=10)
    assert "bytes to send" in rcore_cmd("info", tmp_path / "core").stdout
    res = rcore_cmd("restart", "--detach", "--tcp-established", tmp_path / "core")
    assert res.returncode == 0, res.stderr
    procs.adopt(int(res.stdout.split()[-1]))
    client.settimeout(20)
    got = bytearray()
    while len(got) < sent:
        chunk = client.recv(1 << 20)
        assert chunk, f"connection closed after {len(got)} of {sent} bytes"
        got += chunk
    assert got == (bytes(range(256)) * (total // 256))[:sent]
    go.touch()
    want = b"echo:" + bytes(range(200)) * 5
    echo = b""
    while len(echo) < len(want):
        chunk = client.recv(len(want) - len(echo))
        assert chunk, "connection closed"
        echo += chunk
    assert echo == want
    client.close()


def _connect(host, port):
    try:
        return socket.create_connection((host, port), timeout=5)
    except OSError:
        return None


LOCK_HOLDER = """
import socket, sys, time
from rcore.fds import tcp_repair
from rcore.linux import libc
s = socket.socket(fileno=int(sys.argv[1]))
lock = tcp_repair.NetworkLock()
lock.hold(s)
s.setsockopt(socket.IPPROTO_TCP, libc.TCP_REPAIR, libc.TCP_REPAIR_ON)
print("holding", flush=True)
time.sleep(100)
"""


def test_sigkill_of_rcore_never_leaves_a_connection_locked(procs, tmp_path):
    """rcore killed while a connection is in repair mode behind its drop
    filter (dump --tcp-established): its guard process undoes both."""
    from rcore.linux import libc
    lst = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(lst.getsockname())
    conn, _ = lst.accept()
    script = tmp_path / "holder.py"
    script.write_text(LOCK_HOLDER)
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "src"))
    p = procs.start([sys.executable, str(script), str(conn.fileno())], pass_fds=[conn.fileno()],
                    env=env)
    wait_lines(p.out_path, 1)
    assert libc.socket_filter_length(conn.fileno()) == 1
    assert conn.getsockopt(socket.IPPROTO_TCP, libc.TCP_REPAIR) == 1
    p.kill()
    p.wait(timeout=10)
    wait_for(lambda: libc.socket_filter_length(conn.fileno()) == 0, what="filter removed")
    wait_for(lambda: conn.getsockopt(socket.IPPROTO_TCP, libc.TCP_REPAIR) == 0,
             what="repair mode off")
    client.sendall(b"still alive")
    conn.settimeout(10)
    assert conn.recv(100) == b"still alive"
    conn.sendall(b"both ways")
    client.settimeout(10)
    assert client.recv(100) == b"both ways"
    for s in (client, conn, lst):
        s.close()


def test_tcp_established_refused_while_the_connection_lives(procs, tmp_path):
    """A checkpoint of a process still running: restart --tcp-established
    refuses to make a second socket of the same connection."""
    lst = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(lst.getsockname())
    conn, _ = lst.accept()
    p = procs.start(["sleep", "100"], pass_fds=[conn.fileno()])
    fd = conn.fileno()
    conn.close()
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"))
    res = rcore_cmd("dump", "--tcp-established", "-o", tmp_path / "core", p.pid)
    assert res.returncode == 0, res.stderr
    assert "the process keeps its 1 established connections" in res.stderr, res.stderr
    res = rcore_cmd("restart", "--any-pid", "--tcp-established", tmp_path / "core")
    assert res.returncode != 0
    assert f"fd {fd}: the connection" in res.stderr and "still exists" in res.stderr, res.stderr
    _assert_untouched(p.pid, fd, client)      # the live one
    client.close()
    lst.close()


def _assert_untouched(pid, fd, client):
    """Process pid's connection at fd has no filter and is out of repair mode,
    and still gets what client sends."""
    from rcore.linux import libc
    pidfd = libc.pidfd_open(pid)
    try:
        with socket.socket(fileno=libc.pidfd_getfd(pidfd, fd)) as live:
            assert libc.socket_filter_length(live.fileno()) == 0
            assert live.getsockopt(socket.IPPROTO_TCP, libc.TCP_REPAIR) == 0
            client.sendall(b"ping")
            live.settimeout(10)
            assert live.recv(10) == b"ping"
    finally:
        os.close(pidfd)


def test_failed_dump_with_tcp_established_leaves_the_target_running(procs, tmp_path):
    """dump --kill --tcp-established holds the target stopped for the kill; a
    dump that fails (here: the core cannot take its name) lets it run on, its
    connection untouched."""
    lst = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(lst.getsockname())
    conn, _ = lst.accept()
    p = procs.start(["sleep", "100"], pass_fds=[conn.fileno()])
    fd = conn.fileno()
    conn.close()
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").touch()
    res = rcore_cmd("dump", "--kill", "--tcp-established", "-o", tmp_path / "taken", p.pid)
    assert res.returncode != 0
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"), what="running again")
    _assert_untouched(p.pid, fd, client)
    client.close()
    lst.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_established_tcp_comes_back_reset(procs, tmp_path, host):
    """Without --tcp-established: a TCP socket of the same family that its peer
    reset (ECONNRESET, then end of file; EPIPE), never a socket pair."""
    from rcore.linux import libc
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    lst = socket.create_server((host, 0), family=family)
    client = socket.create_connection(lst.getsockname()[:2])
    conn, _ = lst.accept()
    p = procs.start(["sleep", "100"], pass_fds=[conn.fileno()])
    fd = conn.fileno()
    conn.close()
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"))
    checkpoint_and_kill(p, tmp_path / "core")
    h = restart(procs, tmp_path / "core")
    assert any(f"fd {fd}" in w and "comes back reset" in w for w in h.warnings), h.warnings
    pidfd = libc.pidfd_open(h.pid)
    with socket.socket(fileno=libc.pidfd_getfd(pidfd, fd)) as s:
        assert (s.family, s.type) == (family, socket.SOCK_STREAM)
        with pytest.raises(ConnectionResetError):
            s.recv(1)
        assert s.recv(1) == b""
        with pytest.raises(BrokenPipeError):
            s.send(b"x")
    os.close(pidfd)
    client.close()
    lst.close()


SENDER = """
import os, socket, sys, time
lst = socket.create_server(("127.0.0.1", int(sys.argv[1])))
conn, _ = lst.accept()
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
conn.sendall(bytes(range(251)) * 400)
print("sent", flush=True)
time.sleep(100)
"""


def test_tcp_bytes_sent_but_not_acknowledged_arrive_after_restart(procs, tmp_path):
    """The peer drops everything (a socket filter on its side), so what the
    process sent is still unacknowledged at the checkpoint: it must come back
    as sent (repair mode) and be retransmitted once the peer listens again."""
    from rcore.linux import libc
    from test_socket_programs import free_port
    script = tmp_path / "sender.py"
    script.write_text(SENDER)
    port, go = free_port(), tmp_path / "go"
    p = procs.start([sys.executable, str(script), str(port), str(go)])
    client = wait_for(lambda: _connect("127.0.0.1", port), what="sender listening")
    libc.attach_filter(client.fileno(), libc.DROP_FILTER)
    go.touch()
    wait_lines(p.out_path, 1)
    res = rcore_cmd("dump", "--kill", "--tcp-established", "-o", tmp_path / "core", p.pid)
    assert res.returncode == 0, res.stderr
    p.wait(timeout=10)
    from rcore.elf.reader import CoreFile
    with CoreFile(str(tmp_path / "core")) as core:
        repair = next(f.kind_state["repair"] for f in core.state.files
                      if "repair" in f.kind_state)
    assert len(repair["send"]) // 2 > repair["unsent"]      # some sent, not acknowledged
    res = rcore_cmd("restart", "--detach", "--tcp-established", tmp_path / "core")
    assert res.returncode == 0, res.stderr
    procs.adopt(int(res.stdout.split()[-1]))
    client.setsockopt(socket.SOL_SOCKET, libc.SO_DETACH_FILTER, 0)
    client.settimeout(30)
    want, got = bytes(range(251)) * 400, b""
    while len(got) < len(want):
        chunk = client.recv(1 << 20)
        assert chunk, f"connection closed after {len(got)} bytes"
        got += chunk
    assert got == want
    client.close()


def test_unix_socket_path_taken_is_never_removed(procs, tmp_path):
    """The listener's path is free again only if it holds a stale socket file:
    a live listener there, or a file that is not a socket, makes the restart
    refuse, and stays."""
    path = str(tmp_path / "server.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen()
    p = procs.start(["sleep", "100"], pass_fds=[srv.fileno()])
    fd = srv.fileno()
    srv.close()
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"))
    checkpoint_and_kill(p, tmp_path / "core")
    os.unlink(path)
    other = socket.socket(socket.AF_UNIX)
    other.bind(path)
    other.listen()
    res = rcore_cmd("restart", tmp_path / "core")
    assert res.returncode != 0
    assert f"fd {fd}: another process listens on {path}" in res.stderr, res.stderr
    other.close()
    os.unlink(path)
    with open(path, "w") as f:
        f.write("not a socket")
    res = rcore_cmd("restart", tmp_path / "core")
    assert f"fd {fd}: {path} exists and is not a socket" in res.stderr, res.stderr
    assert open(path).read() == "not a socket"
    os.unlink(path)
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(path)                        # a socket file nobody listens on
    h = restart(procs, tmp_path / "core")
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(path)                         # the restarted process listens there
    assert h.poll() is None
