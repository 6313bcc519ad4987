"""Sockets across a checkpoint, kill and restart: unix sockets of every kind
(tests/progs/fd_unix.c checks its own), TCP and UDP with their options."""

import fcntl
import os
import socket

from conftest import checkpoint_and_kill, proc_status, restart, wait_for
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
        opts.append((socket.IPPROTO_TCP, socket.TCP_NODELAY))
    if s.family == socket.AF_INET6:
        opts.append((socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
    peer = s.getpeername() if s.type == socket.SOCK_DGRAM and s.family == socket.AF_INET6 \
        else None
    proto = s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
    diag = sockdiag.read_inet_sockets(s.family, proto).get(os.fstat(s.fileno()).st_ino)
    nonblocking = bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)
    return ([s.getsockopt(*o) for o in opts], s.getsockname(), peer, nonblocking,
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
    h = restart(procs, tmp_path / "core")
    assert _states_of(h.pid, fds) == want
    with socket.create_connection(want["tcp"][1], timeout=5):
        pass                                # the listener takes new connections
