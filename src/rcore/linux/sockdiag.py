"""sock_diag netlink (NETLINK_SOCK_DIAG): what /proc/PID/fdinfo and
/proc/net/* do not say about a socket -- the peer of a unix socket, its queue
lengths, the backlog of a listener.

Structures from include/uapi/linux/{netlink,rtnetlink,sock_diag,unix_diag,
inet_diag}.h, declared once here.  A dump lists every socket of rcore's network
namespace (the target's, unless it has its own); callers look sockets up by
inode number."""

import os
import socket
import struct

from ..record import field, record

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3

NLMSGHDR = struct.Struct("=IHHII")              # nlmsg_len, type, flags, seq, pid
RTATTR = struct.Struct("=HH")                   # rta_len, rta_type

# unix_diag.h
# struct unix_diag_req {family, protocol, pad, states, ino, show, cookie[2]}
UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")
UNIX_DIAG_MSG = struct.Struct("=BBBBIII")       # family, type, state, pad, ino, cookie[2]
UDIAG_SHOW_NAME, UDIAG_SHOW_VFS, UDIAG_SHOW_PEER, UDIAG_SHOW_ICONS = 0x1, 0x2, 0x4, 0x8
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_NAME, UNIX_DIAG_VFS, UNIX_DIAG_PEER, UNIX_DIAG_ICONS, UNIX_DIAG_RQLEN = 0, 1, 2, 3, 4
UNIX_DIAG_SHUTDOWN = 6

# inet_diag.h: struct inet_diag_req_v2 and inet_diag_msg, with inet_diag_sockid
# {__be16 sport, dport; __be32 src[4], dst[4]; __u32 if; __u32 cookie[2]}
INET_DIAG_REQ_V2 = struct.Struct("=BBBBI2H16s16sIII")
# struct inet_diag_msg {family, state, timer, retrans, sockid, expires, rqueue, wqueue,
# uid, inode}, the sockid spelt out
INET_DIAG_MSG = struct.Struct("=BBBB2H16s16s8I")
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
ALL_STATES = 0xFFFFFFFF


@record
class UnixDiag:
    """One unix socket: type, state (TCP_* numbers: 1 established, 7 close, 10
    listen), name (bytes; b"\\0..." abstract), peer inode (0: none), queues
    (rqueue: bytes queued to read, or for a listener the connections waiting;
    wqueue: bytes sent not yet read by the peer, or the listener's backlog),
    pending: inodes of connections waiting in a listener's queue, shutdown bits."""
    ino: int
    type: int
    state: int
    name: bytes = b""
    peer: int = 0
    rqueue: int = 0
    wqueue: int = 0
    pending: list = field(default_factory=list)
    shutdown: int = 0


@record
class InetDiag:
    """One TCP or UDP socket: state, rqueue (listener: connections waiting to
    be accepted), wqueue (listener: its backlog), local and peer (host, port)."""
    ino: int
    state: int
    rqueue: int
    wqueue: int
    local: tuple = None
    peer: tuple = None


def _request(sock, msg_type, payload):
    sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(payload), msg_type,
                            NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + payload)
    while True:
        data = sock.recv(1 << 16)
        off = 0
        while off + NLMSGHDR.size <= len(data):
            length, kind, _, _, _ = NLMSGHDR.unpack_from(data, off)
            if length < NLMSGHDR.size:
                return
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                err = -struct.unpack_from("=i", data, off + NLMSGHDR.size)[0]
                if err:
                    raise OSError(err, f"sock_diag: {os.strerror(err)}")
                return
            yield data[off + NLMSGHDR.size: off + length]
            off += (length + 3) & ~3


def _attributes(data, off):
    while off + RTATTR.size <= len(data):
        length, kind = RTATTR.unpack_from(data, off)
        if length < RTATTR.size:
            return
        yield kind, data[off + RTATTR.size: off + length]
        off += (length + 3) & ~3


def _host(family, raw):
    return socket.inet_ntop(family, raw[:4] if family == socket.AF_INET else raw)


def _netlink():
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                         NETLINK_SOCK_DIAG)


def read_unix_sockets():
    """{inode: UnixDiag} of every unix socket."""
    show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_ICONS
    req = UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, ALL_STATES, 0, show, INET_DIAG_NOCOOKIE,
                             INET_DIAG_NOCOOKIE)
    out = {}
    with _netlink() as sock:
        for msg in _request(sock, SOCK_DIAG_BY_FAMILY, req):
            _, kind, state, _, ino, _, _ = UNIX_DIAG_MSG.unpack_from(msg)
            d = UnixDiag(ino, kind, state)
            for attr, value in _attributes(msg, UNIX_DIAG_MSG.size):
                if attr == UNIX_DIAG_NAME:
                    d.name = bytes(value)
                elif attr == UNIX_DIAG_PEER:
                    d.peer = struct.unpack_from("=I", value)[0]
                elif attr == UNIX_DIAG_RQLEN:
                    d.rqueue, d.wqueue = struct.unpack_from("=II", value)
                elif attr == UNIX_DIAG_ICONS:
                    d.pending = list(struct.unpack_from(f"={len(value) // 4}I", value))
                elif attr == UNIX_DIAG_SHUTDOWN:
                    d.shutdown = value[0]
            out[ino] = d
    return out


def read_inet_sockets(family, protocol):
    """{inode: InetDiag} of every socket of family (AF_INET, AF_INET6) and
    protocol (IPPROTO_TCP, IPPROTO_UDP)."""
    zero = bytes(16)
    req = INET_DIAG_REQ_V2.pack(family, protocol, 0, 0, ALL_STATES, 0, 0, zero, zero, 0,
                                INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE)
    out = {}
    with _netlink() as sock:
        for msg in _request(sock, SOCK_DIAG_BY_FAMILY, req):
            fields = INET_DIAG_MSG.unpack_from(msg)
            state, rqueue, wqueue, ino = fields[1], fields[12], fields[13], fields[15]
            out[ino] = InetDiag(ino, state, rqueue, wqueue,
                                (_host(family, fields[6]), socket.ntohs(fields[4])),
                                (_host(family, fields[7]), socket.ntohs(fields[5])))
    return out
