"""TCP and UDP sockets over IPv4 and IPv6: listening and bound sockets on the
same address and port with their options, connected UDP, and established TCP
connections (reset, or alive again with tcp_repair.py)."""

import errno
import select
import socket
import struct

from ..errors import Incompatible
from ..linux import libc, sockdiag
from . import sockets, tcp_repair

# Options carried over: (name, level, option, size): size 0 for an int, else
# the bytes of a structure or name (stored in hex).  Restart sets those whose
# value differs from a new socket's; the buffer sizes only where the kernel does
# not size them by itself (a connection's buffers grow with its traffic).
SOL, TCP, IP, IP6 = socket.SOL_SOCKET, socket.IPPROTO_TCP, socket.IPPROTO_IP, socket.IPPROTO_IPV6
OPTIONS = [
    ("SO_REUSEADDR", SOL, socket.SO_REUSEADDR, 0), ("SO_REUSEPORT", SOL, socket.SO_REUSEPORT, 0),
    ("SO_KEEPALIVE", SOL, socket.SO_KEEPALIVE, 0), ("SO_BROADCAST", SOL, socket.SO_BROADCAST, 0),
    ("SO_RCVBUF", SOL, socket.SO_RCVBUF, 0), ("SO_SNDBUF", SOL, socket.SO_SNDBUF, 0),
    ("SO_PRIORITY", SOL, socket.SO_PRIORITY, 0), ("SO_RCVLOWAT", SOL, socket.SO_RCVLOWAT, 0),
    ("SO_OOBINLINE", SOL, socket.SO_OOBINLINE, 0), ("SO_MARK", SOL, socket.SO_MARK, 0),
    ("SO_LINGER", SOL, socket.SO_LINGER, 8),                     # struct linger
    ("SO_BINDTODEVICE", SOL, socket.SO_BINDTODEVICE, 16),        # IFNAMSIZ
]
TCP_OPTIONS = [
    ("TCP_NODELAY", TCP, socket.TCP_NODELAY, 0), ("TCP_KEEPIDLE", TCP, socket.TCP_KEEPIDLE, 0),
    ("TCP_KEEPINTVL", TCP, socket.TCP_KEEPINTVL, 0), ("TCP_KEEPCNT", TCP, socket.TCP_KEEPCNT, 0),
    ("TCP_USER_TIMEOUT", TCP, socket.TCP_USER_TIMEOUT, 0),
    ("TCP_DEFER_ACCEPT", TCP, socket.TCP_DEFER_ACCEPT, 0),
    ("TCP_FASTOPEN", TCP, socket.TCP_FASTOPEN, 0),
    ("TCP_CONGESTION", TCP, socket.TCP_CONGESTION, 16),         # TCP_CA_NAME_MAX
]
V4_OPTIONS = [("IP_TOS", IP, socket.IP_TOS, 0), ("IP_TTL", IP, socket.IP_TTL, 0),
              ("IP_FREEBIND", IP, libc.IP_FREEBIND, 0),
              ("IP_TRANSPARENT", IP, socket.IP_TRANSPARENT, 0)]
V6_OPTIONS = [("IPV6_V6ONLY", IP6, socket.IPV6_V6ONLY, 0),
              ("IPV6_TCLASS", IP6, socket.IPV6_TCLASS, 0),
              ("IPV6_UNICAST_HOPS", IP6, socket.IPV6_UNICAST_HOPS, 0)]
BUFFERS = ("SO_RCVBUF", "SO_SNDBUF")
SO_LINGER = struct.Struct("=ii")

# include/net/tcp_states.h
TCP_STATES = {1: "established", 2: "syn-sent", 3: "syn-recv", 4: "fin-wait1", 5: "fin-wait2",
              6: "time-wait", 7: "close", 8: "close-wait", 9: "last-ack", 10: "listen",
              11: "closing"}
TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN = 1, 7, 10
LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}


def _options(family, kind):
    return OPTIONS + (TCP_OPTIONS if kind == socket.SOCK_STREAM else []) + (
        V6_OPTIONS if family == socket.AF_INET6 else V4_OPTIONS)


def _getopt(s, level, opt, size):
    """An option's value as the core stores it (int, or hex of its bytes);
    None where this kernel or socket has no such option."""
    try:
        return s.getsockopt(level, opt) if not size else s.getsockopt(level, opt, size).hex()
    except OSError:
        return None


def _setopt_value(value):
    return value if isinstance(value, int) else bytes.fromhex(value)


class Inet(sockets.Family):
    """Captured on rcore's copy of the socket, besides the common fields:
    `protocol`, `addr` and `peer_addr` ([host, port, flowinfo, scope] as
    socket.getsockname gives them; None: unbound, unconnected), `state`
    (TCP_* number, sock_diag), `backlog` and `pending` of a listener (sock_diag
    inet_diag: idiag_wqueue, idiag_rqueue; /proc/net/tcp does not show the
    backlog), `options` {name: value} (OPTIONS), `queued` (UDP: bytes of
    datagrams waiting), and with dump --tcp-established the repair state of an
    established connection (`repair`, tcp_repair.py).

    Restart: a new socket of the same family, type and protocol, its options
    set, bound to the same address and port (before the process exists),
    listening with the same backlog; a UDP socket connected to the same peer.
    An established TCP connection comes back alive with restart
    --tcp-established (tcp_repair.py); otherwise, and in the other connected
    states, a TCP socket reset by its peer (reads fail with ECONNRESET, then see
    end of file; writes fail with EPIPE) so that the program reconnects.
    Connections waiting in a listener's accept queue and datagrams waiting in a
    UDP socket are lost (their clients see a reset; the datagrams are gone).
    Restore: kept if still open; refused if closed since."""

    def capture_socket(self, ctx, f, s):
        st = f.kind_state
        protocol = s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
        st.update(protocol=protocol, addr=_addr(s.getsockname),
                  peer_addr=_addr(s.getpeername),
                  options={name: _getopt(s, level, opt, size)
                           for name, level, opt, size in _options(st["family"], st["type"])})
        # The TCP state from the socket itself (TCP_INFO's first byte): sock_diag
        # lists only rcore's network namespace.
        st["state"] = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] \
            if st["type"] == socket.SOCK_STREAM else None
        d = _diag(ctx, st["family"], protocol).get(f.inode)
        if st["listening"] and not d:
            raise ValueError("sock_diag does not list it (is the process in another "
                             "network namespace?): its backlog is unknown")
        if st["listening"]:
            st.update(backlog=d.wqueue, pending=d.rqueue)
        elif d and st["type"] == socket.SOCK_DGRAM:
            st["queued"] = d.rqueue
        elif d:
            st.update(recv_queued=d.rqueue, send_queued=d.wqueue)
        if st["type"] == socket.SOCK_STREAM and st["state"] == TCP_ESTABLISHED \
                and ctx.tcp_lock is not None:
            st["repair"] = tcp_repair.capture(ctx.tcp_lock, s)

    def decode(self, f):
        st = f.kind_state
        for key in ("type", "protocol"):
            if not isinstance(st[key], int):
                raise ValueError(key)
        for key in ("addr", "peer_addr"):
            a = st[key]
            if a is not None and not (isinstance(a, list) and 2 <= len(a) <= 4
                                      and isinstance(a[0], str)
                                      and all(isinstance(v, int) for v in a[1:])
                                      and 0 <= a[1] < 65536):
                raise ValueError(key)
        if not isinstance(st.get("backlog", 0), int) or not isinstance(st["listening"], bool):
            raise ValueError("backlog")
        if not isinstance(st["options"], dict):
            raise ValueError("options")
        for value in st["options"].values():
            if not isinstance(value, (int, type(None))):
                bytes.fromhex(value)
        if "repair" in st:
            tcp_repair.decode(st["repair"])

    def check(self, f, plan):
        pass

    def open(self, plan, f):
        st = f.kind_state
        fate = _fate(f)
        if fate == "repair" and getattr(plan, "tcp_established", False):
            return plan.own(tcp_repair.restore(f, _options_to_set(f)))
        if fate in ("repair", "reset"):
            return plan.own(_reset_socket(f))
        s = socket.socket(st["family"], st["type"] | socket.SOCK_CLOEXEC, st["protocol"])
        try:
            for name, level, opt, value in _options_to_set(f):
                s.setsockopt(level, opt, value)
            if st["addr"] is not None:
                _bind(f, s)
            if fate == "listen":
                s.listen(st.get("backlog") or socket.SOMAXCONN)
            elif st["type"] == socket.SOCK_DGRAM and st["peer_addr"] is not None:
                s.connect(tuple(st["peer_addr"]))
            return plan.own(s.detach())
        finally:
            s.close()

    def warnings(self, f):
        st = f.kind_state
        fate = _fate(f)
        out = []
        if st.get("pending"):
            out.append(f"{st['pending']} connections waiting to be accepted are lost "
                       "(their clients see the connection reset)")
        if st.get("queued"):
            out.append(f"{st['queued']} bytes of datagrams waiting to be read are lost")
        if fate == "repair":
            out.append("established connection: restart --tcp-established brings it back "
                       "alive; otherwise it comes back reset (ECONNRESET)")
        elif fate == "reset":
            why = ("dump with --tcp-established to carry it" if st.get("state") ==
                   TCP_ESTABLISHED else f"rcore cannot carry a connection in state "
                   f"{TCP_STATES.get(st.get('state'), st.get('state'))}")
            lost = ""
            if st.get("recv_queued") or st.get("send_queued"):
                lost = (f" ({st.get('recv_queued', 0)} bytes not read yet and "
                        f"{st.get('send_queued', 0)} not delivered are lost)")
            out.append(f"connection comes back reset{lost} (reads fail with ECONNRESET, "
                       f"writes with EPIPE) so that the program reconnects; {why}")
        return out

    def describe(self, f):
        st = f.kind_state
        out = []
        if st["type"] == socket.SOCK_STREAM and st.get("state") not in (None, TCP_LISTEN):
            out.append(TCP_STATES.get(st["state"], str(st["state"])))
        if st["listening"]:
            out.append(f"backlog {st.get('backlog')}")
            if st.get("pending"):
                out.append(f"{st['pending']} waiting to be accepted")
        if st.get("queued"):
            out.append(f"{st['queued']} bytes queued")
        repair = st.get("repair")
        if repair and "recv" in repair:
            out.append(f"{len(repair['recv']) // 2} bytes to read, "
                       f"{len(repair['send']) // 2} bytes to send")
        elif st.get("recv_queued") or st.get("send_queued"):
            out.append(f"{st.get('recv_queued', 0)} bytes to read, "
                       f"{st.get('send_queued', 0)} bytes to send")
        if repair and "error" in repair:
            out.append(f"repair state not captured: {repair['error']}")
        out += [f"{name} {_shown(st['options'][name])}" for name, _, _, _ in _options_to_set(f)]
        return "".join(", " + o for o in out)

    def action(self, f, plan):
        return {"listen": "a new socket listening on the same address and port",
                "bound": "a new socket bound to the same address and port",
                "connected": "a new UDP socket bound and connected to the same addresses",
                "alone": "a new socket",
                "repair": "with restart --tcp-established: the connection alive again "
                          "(TCP_REPAIR); otherwise reset",
                "reset": "a TCP socket reset by its peer (ECONNRESET, then EPIPE)"}[_fate(f)]


def _fate(f):
    st = f.kind_state
    if st["listening"]:
        return "listen"
    if st["type"] == socket.SOCK_STREAM and st.get("state") not in (TCP_CLOSE, None):
        return "repair" if "repair" in st else "reset"
    if st["type"] == socket.SOCK_DGRAM and st["peer_addr"] is not None:
        return "connected"
    return "bound" if st["addr"] is not None else "alone"


def _bind(f, s):
    st = f.kind_state
    try:
        s.bind(tuple(st["addr"]))
    except OSError as err:
        hint = ""
        if err.errno == errno.EADDRINUSE and st["type"] == socket.SOCK_STREAM and \
                not st["options"].get("SO_REUSEADDR"):
            # Connections the dead process closed stay in TIME_WAIT for 60 s and
            # hold the port against any socket (even with SO_REUSEADDR) unless
            # their own socket had SO_REUSEADDR, which this program did not set.
            hint = (" (the program does not set SO_REUSEADDR: connections it closed "
                    "hold the port for up to 60 s after its death)")
        raise Incompatible(f"fd {f.fd}: cannot bind {_where(st['addr'])} again: "
                           f"{err.strerror}{hint}") from None


def _diag(ctx, family, protocol):
    key = ("inet diag", family, protocol)
    if key not in ctx.kind_data:
        ctx.kind_data[key] = sockdiag.read_inet_sockets(family, protocol)
    return ctx.kind_data[key]


def _addr(get):
    try:
        addr = get()
    except OSError:
        return None
    return list(addr) if addr[1] else None


def _where(addr):
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def _options_to_set(f):
    """(name, level, option, value to set) of f's options that differ from a
    new socket's of its kind."""
    st = f.kind_state
    fresh = socket.socket(st["family"], st["type"], st.get("protocol", 0))
    try:
        out = []
        for name, level, opt, size in _options(st["family"], st["type"]):
            value = st["options"].get(name)
            if value is None or value == _getopt(fresh, level, opt, size):
                continue
            if name in BUFFERS:
                if _fate(f) in ("repair", "reset"):
                    continue            # a connection's buffers grow by themselves
                value //= 2             # the kernel doubles what is set
            out.append((name, level, opt, _setopt_value(value)))
        return out
    finally:
        fresh.close()


def _shown(value):
    if isinstance(value, int):
        return value
    raw = bytes.fromhex(value)
    return raw.rstrip(b"\0").decode("ascii", "replace") if raw[:1].isalpha() else value


def _reset_socket(f):
    """A TCP socket of f's family that its peer has reset: connected through
    loopback to a listener of rcore's, whose end closes with SO_LINGER 0 (a
    RST).  Reads fail once with ECONNRESET, then see end of file; writes fail
    with EPIPE; poll reports POLLERR|POLLHUP, so an event loop notices."""
    family = f.kind_state["family"]
    with socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as lst:
        lst.bind((LOOPBACK[family], 0))
        lst.listen(1)
        s = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.connect(lst.getsockname())
            peer, _ = lst.accept()
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, SO_LINGER.pack(1, 0))
            peer.close()
            poller = select.poll()
            poller.register(s, select.POLLERR | select.POLLHUP)
            if not poller.poll(2000):
                raise Incompatible(f"fd {f.fd}: could not make a reset TCP socket")
            return s.detach()
        finally:
            s.close()


KIND = Inet()
