"""Unix sockets: pairs and connections inside the process with their queued
messages and credentials, bound and listening sockets on their paths or
abstract names, and what becomes of a connection to a process outside."""

import errno
import os
import socket
import stat
import struct

from ..errors import Incompatible, Unsupported
from ..linux import libc, procfs, sockdiag
from . import sockets

PEEK_BUFFER = 1 << 22               # larger than any unix socket buffer can hold
UCRED = struct.Struct("=iII")       # struct ucred {pid, uid, gid}
TCP_ESTABLISHED = 1                 # a connected socket's state in unix_diag
RCV_SHUTDOWN, SEND_SHUTDOWN = 1, 2  # include/net/sock.h, as unix_diag gives them


class Unix(sockets.Family):
    """Captured, besides the common fields: `name` (hex of the bound name,
    b"\\0..." abstract; a relative path made absolute against the cwd),
    `peer_ino` (sock_diag UNIX_DIAG_PEER: the inode of the other end, 0 if it
    is gone or not accepted yet), `peer_name` (hex, to reconnect a datagram
    socket to a daemon outside), `state`, `backlog` and `pending` (of a
    listener), `shutdown`, `passcred` (SO_PASSCRED), and `queue`: the messages
    waiting to be read, peeked without taking them out (MSG_PEEK with
    SO_PEEK_OFF, put back as it was), each [hex data, [pid, uid, gid] or None];
    `fds_in_flight`: descriptors passed in them (SCM_RIGHTS; not carried).

    Restart: both ends in the process -> a socketpair of the type; one end
    connected to a bound datagram socket of the process -> connected to it
    again (a pair shut down for reading or writing is shut down again); the other end closed -> a pair whose other end is closed after the
    queue is put back (end of file after the data); listening or bound ->
    bound on the same path or abstract name (a stale socket file is removed
    only when it is a socket nobody listens on), listening with the same
    backlog.  A stream connection to a process outside the checkpoint cannot
    come back: it comes back reset (reads fail with ECONNRESET, then see end
    of file; writes fail with EPIPE), so that the program reconnects; a
    datagram socket connected to one outside (e.g. /dev/log) is connected to
    the same name again.  Queued messages go back with their credentials
    (SCM_CREDENTIALS, once the new process exists: the pid must exist).
    Restore: kept if still open; refused if closed since."""

    def capture_socket(self, ctx, f, s):
        diags = ctx.kind_data.get("unix diag")
        if diags is None:
            diags = ctx.kind_data["unix diag"] = sockdiag.read_unix_sockets()
        d = diags.get(f.inode)
        if d is None:
            raise ValueError(f"sock_diag does not list unix socket {f.inode} (is the "
                             "process in another network namespace?)")
        name = d.name
        if name[:1] != b"\0":
            name = name.split(b"\0", 1)[0]     # a path, bound with its NUL or not
        if name and name[:1] != b"\0" and not name.startswith(b"/"):
            name = os.fsencode(os.path.join(procfs.read_link(ctx.pid, "cwd"), os.fsdecode(name)))
        st = f.kind_state
        peer = diags.get(d.peer)
        st.update(name=name.hex(), peer_ino=d.peer, peer_name=_peer_name(s).hex(),
                  state=d.state, shutdown=d.shutdown,
                  peer_inside=d.peer in _socket_inodes(ctx),
                  peer_fd=_socket_inodes(ctx).get(d.peer),
                  mutual=bool(peer and peer.peer == f.inode), peer_named=bool(peer and peer.name),
                  passcred=bool(s.getsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED)))
        if st["listening"]:
            st.update(backlog=d.wqueue, pending=len(d.pending))
        else:
            st["queue"], st["fds_in_flight"] = _peek_queue(s, st["type"])

    def decode(self, f):
        st = f.kind_state
        bytes.fromhex(st["name"])
        bytes.fromhex(st["peer_name"])
        for key in ("type", "peer_ino", "state", "shutdown"):
            if not isinstance(st[key], int):
                raise ValueError(key)
        for key in ("listening", "peer_inside", "mutual", "peer_named", "passcred"):
            if not isinstance(st.get(key, False), bool):
                raise ValueError(key)
        for data, creds in st.get("queue", []):
            bytes.fromhex(data)
            if creds is not None and (len(creds) != 3
                                      or not all(isinstance(c, int) for c in creds)):
                raise ValueError("queue credentials")
        if st["listening"] and not isinstance(st.get("backlog"), int):
            raise ValueError("backlog")

    def check(self, f, plan):
        if f.kind_state["type"] not in (socket.SOCK_STREAM, socket.SOCK_DGRAM,
                                        socket.SOCK_SEQPACKET):
            raise Unsupported(f"fd {f.fd} ({sockets.describe_socket(f)}): unknown socket type")

    def open(self, plan, f):
        built = plan.kind_data.get("unix")
        if built is None:
            built = plan.kind_data["unix"] = _build_all(plan)
        return built[f.inode]

    def warnings(self, f):
        st = f.kind_state
        out = []
        what = _fate(f)
        if what == "reset":
            peer = f" ({st['peer']})" if st.get("peer") else ""
            out.append(f"its peer{peer} is a process outside the checkpoint: it comes back reset "
                       "(reads fail with ECONNRESET, then see end of file; writes fail "
                       "with EPIPE), so that the program connects again")
        if st.get("pending"):
            out.append(f"{st['pending']} connections waiting to be accepted are lost "
                       "(their clients see the connection closed)")
        if st.get("fds_in_flight"):
            out.append(f"{st['fds_in_flight']} descriptors passed in its queued messages "
                       "(SCM_RIGHTS) are lost")
        if st.get("queue") and what in ("reset", "alone"):
            out.append(f"{_queued(f)} bytes queued in it are lost (no end to send them from)")
        return out

    def describe(self, f):
        st = f.kind_state
        out = []
        if st.get("peer_fd") is not None:
            out.append(f"{'paired with' if st.get('mutual') else 'connected to'} "
                       f"fd {st['peer_fd']}")
        if st["listening"]:
            out.append(f"backlog {st['backlog']}")
        elif _queued(f):
            out.append(f"{_queued(f)} bytes queued in {len(st['queue'])} messages")
        if st.get("passcred"):
            out.append("SO_PASSCRED")
        return "".join(", " + o for o in out)

    def action(self, f, plan):
        return {"listen": "bound and listening again on the same name",
                "pair": "a new connected pair with the queued messages",
                "connect": "connected again to the same socket of the process",
                "reconnect": "connected again by name to the socket outside",
                "closed": "a socket whose peer is closed, with the queued messages",
                "reset": "reset: its peer is outside the checkpoint (ECONNRESET, EPIPE)",
                "bound": "bound again on the same name",
                "alone": "a new unconnected socket"}[_fate(f)]


def _socket_inodes(ctx):
    """{inode: lowest fd} of the sockets process ctx.pid holds, read once per walk."""
    inodes = ctx.kind_data.get("socket inodes")
    if inodes is None:
        inodes = ctx.kind_data["socket inodes"] = {}
        for fd in sorted(int(n) for n in os.listdir(procfs.path(ctx.pid, "fd"))):
            try:
                target = os.readlink(procfs.path(ctx.pid, "fd", str(fd)))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.setdefault(int(target[8:-1]), fd)
    return inodes


def _peer_name(s):
    try:
        name = s.getpeername()
    except OSError:
        return b""
    return name if isinstance(name, bytes) else os.fsencode(name)


def _peek_queue(s, kind):
    """The messages waiting in s's receive queue, peeked one by one from the
    peek offset 0 (SO_PEEK_OFF moves with each peek), without taking them out;
    the target's own peek offset is put back."""
    old = s.getsockopt(socket.SOL_SOCKET, libc.SO_PEEK_OFF)
    s.setsockopt(socket.SOL_SOCKET, libc.SO_PEEK_OFF, 0)
    queue, passed = [], 0
    ancillary = socket.CMSG_SPACE(UCRED.size) + socket.CMSG_SPACE(253 * 4)
    try:
        while True:
            try:
                data, anc, flags, _ = s.recvmsg(PEEK_BUFFER, ancillary,
                                                socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not data and kind == socket.SOCK_STREAM:
                break                           # end of file: the peer shut down
            creds = None
            for level, ctype, value in anc:
                if level == socket.SOL_SOCKET and ctype == socket.SCM_CREDENTIALS:
                    creds = list(UCRED.unpack_from(value))
                elif level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
                    fds = struct.unpack(f"={len(value) // 4}i", value[:len(value) // 4 * 4])
                    passed += len(fds)
                    for fd in fds:              # peeking installed them in rcore
                        os.close(fd)
            queue.append([data.hex(), creds])
    finally:
        s.setsockopt(socket.SOL_SOCKET, libc.SO_PEEK_OFF, old)
    return queue, passed


def _queued(f):
    return sum(len(data) // 2 for data, _ in f.kind_state.get("queue", []))


def _unix_masters(files):
    return {f.inode: f for f in files if f.kind == "socket" and f.description == f.fd
            and f.kind_state.get("family") == socket.AF_UNIX}


def _fate(f, inside=None):
    """What restart makes of f (see Unix).  inside: {inode: entry} of the
    process's unix sockets at restart (None: as the checkpoint saw it)."""
    st = f.kind_state
    if st["listening"]:
        return "listen"
    peer = st["peer_ino"]
    # Inside at restart: in any process of the checkpoint (a tree shares them).
    if peer and (peer in inside if inside is not None else st.get("peer_inside")):
        if st.get("mutual"):
            return "pair"
        return "connect" if st.get("peer_named") else "alone"
    stream = st["type"] != socket.SOCK_DGRAM
    if peer or (st["state"] == TCP_ESTABLISHED and stream and not st["shutdown"]):
        # Connected to a socket no process of the checkpoint holds.
        if not stream:
            return "reconnect" if st["peer_name"] else "alone"
        return "reset"
    if st["state"] == TCP_ESTABLISHED and stream:
        return "closed"
    return "bound" if st["name"] else "alone"


def _new(kind):
    return socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)


def _build_all(plan):
    """Every unix socket of the plan, built at once (a pair needs both ends, a
    connection its bound peer): {inode: rcore fd}."""
    inside = _unix_masters(plan.all_files)
    socks = {}
    try:
        for ino, f in inside.items():
            if ino not in socks:
                _build_one(plan, f, inside, socks)
        for ino, f in inside.items():
            fate = _fate(f, inside)
            if fate in ("connect", "reconnect"):
                peer = inside.get(f.kind_state["peer_ino"]) if fate == "connect" else None
                name = peer.kind_state["name"] if peer else f.kind_state["peer_name"]
                _connect(f, socks[ino], bytes.fromhex(name))
            if fate == "pair":
                _send_queue(plan, f, socks[f.kind_state["peer_ino"]])
            elif fate in ("bound", "connect", "reconnect") and f.kind_state.get("queue") \
                    and f.kind_state["name"] and f.kind_state["type"] == socket.SOCK_DGRAM:
                with _new(socket.SOCK_DGRAM) as sender:
                    _connect(f, sender, bytes.fromhex(f.kind_state["name"]))
                    _send_queue(plan, f, sender)
        built = {ino: plan.own(s.detach()) for ino, s in socks.items()}
    finally:
        for s in socks.values():
            s.close()
    for ino, f in inside.items():
        if _fate(f, inside) == "pair":
            _shut_down(plan, f, inside[f.kind_state["peer_ino"]], built[ino])
    return built


def _shut_down(plan, f, peer, fd):
    """shutdown() as the process had made it, once the queues are back (a
    socket shut for writing sends nothing more): sk_shutdown bits 1 (no more
    receiving: its own SHUT_RD, or the peer's SHUT_WR) and 2 (its SHUT_WR)."""
    mine, theirs = f.kind_state["shutdown"], peer.kind_state["shutdown"]
    write = bool(mine & SEND_SHUTDOWN)
    read = bool(mine & RCV_SHUTDOWN) and not theirs & SEND_SHUTDOWN
    if not (read or write):
        return
    how = socket.SHUT_RDWR if read and write else socket.SHUT_WR if write else socket.SHUT_RD

    def step():
        s = socket.socket(fileno=fd)
        try:
            s.shutdown(how)
        finally:
            s.detach()
    plan.at_commit.append(step)         # after the queues sent at commit


def _build_one(plan, f, inside, socks):
    st = f.kind_state
    fate = _fate(f, inside)
    if fate == "pair":
        socks[f.inode], socks[st["peer_ino"]] = socket.socketpair(
            socket.AF_UNIX, st["type"] | socket.SOCK_CLOEXEC)
        _passcred(inside[st["peer_ino"]], socks[st["peer_ino"]])
    elif fate in ("closed", "reset"):
        s, other = socket.socketpair(socket.AF_UNIX, st["type"] | socket.SOCK_CLOEXEC)
        socks[f.inode] = s
        _passcred(f, s)
        if fate == "closed":
            _send_queue(plan, f, other)
        else:
            s.send(b"\0")          # unread when `other` closes: s gets ECONNRESET
        other.close()
        return
    else:
        s = socks[f.inode] = _new(st["type"])
        if st["name"]:
            _bind(f, s)
        if fate == "listen":
            s.listen(st["backlog"])
    _passcred(f, socks[f.inode])


def _passcred(f, s):
    if f.kind_state.get("passcred"):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)


def _bind(f, s):
    name = bytes.fromhex(f.kind_state["name"])
    if name[:1] != b"\0":
        _remove_stale(f, name)
    try:
        s.bind(name)
    except OSError as err:
        raise Incompatible(f"fd {f.fd}: cannot bind a unix socket to "
                           f"{os.fsdecode(name)!r} again: {err.strerror}") from None


def _remove_stale(f, path):
    """A socket file left by the checkpointed process: removed if it is a socket
    nobody listens on; anything else at that path is not rcore's to remove."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise Incompatible(f"fd {f.fd}: {os.fsdecode(path)} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, f.kind_state["type"] | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)                 # a stale socket file: nothing listens on it
        return
    except OSError as err:
        if err.errno == errno.EPROTOTYPE:
            raise Incompatible(f"fd {f.fd}: {os.fsdecode(path)} is a socket of another "
                               "type in use") from None
        raise Incompatible(f"fd {f.fd}: cannot probe {os.fsdecode(path)}: "
                           f"{err.strerror}") from None
    finally:
        probe.close()
    raise Incompatible(f"fd {f.fd}: another process listens on {os.fsdecode(path)}")


def _connect(f, s, name):
    try:
        s.connect(name)
    except OSError as err:
        raise Incompatible(f"fd {f.fd}: cannot connect a unix socket to "
                           f"{os.fsdecode(name)!r} again: {err.strerror}") from None


def _send_queue(plan, f, sender):
    """Put f's queued messages back into its receive queue, sent by `sender`
    (its peer, or a socket of rcore's connected to it).  Messages with
    credentials are sent once the new process exists: the pid given in
    SCM_CREDENTIALS must be a live process (mostly the checkpointed one)."""
    queue = f.kind_state.get("queue") or []
    if not queue:
        return
    sender = socket.socket(fileno=os.dup(sender.fileno()))

    def send():
        # The queue fitted in the old socket, whose buffers the program may have
        # grown: the sender's is made large enough meanwhile (root may exceed
        # wmem_max), then put back; what is queued stays.
        size = sender.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        need = 2 * sum(len(data) // 2 + 1024 for data, _ in queue)
        if need > size:
            try:
                sender.setsockopt(socket.SOL_SOCKET, libc.SO_SNDBUFFORCE, need)
            except PermissionError:
                pass
        with sender:
            for data, creds in queue:
                anc = [] if creds is None else [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS,
                                                 UCRED.pack(*creds))]
                try:
                    sender.sendmsg([bytes.fromhex(data)], anc, socket.MSG_DONTWAIT)
                except ProcessLookupError:      # that pid is gone: the sender's own
                    sender.sendmsg([bytes.fromhex(data)], [], socket.MSG_DONTWAIT)
                except BlockingIOError:
                    raise Incompatible(f"fd {f.fd}: its queued messages no longer fit in "
                                       "the socket's buffer") from None
            if need > size:
                try:
                    sender.setsockopt(socket.SOL_SOCKET, libc.SO_SNDBUFFORCE, size // 2)
                except PermissionError:
                    pass
    if any(creds is not None for _, creds in queue):
        plan.at_commit.append(send)
    else:
        send()


KIND = Unix()
