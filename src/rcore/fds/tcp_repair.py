"""Established TCP connections kept alive across a checkpoint (dump and restart
--tcp-established): TCP_REPAIR, as CRIU's sk-tcp.c and soccr do.

Dump (target frozen), on rcore's copy of the socket (pidfd_getfd: the same
socket): a socket filter that drops every incoming packet is attached first
(NetworkLock: the kernel must not acknowledge data the checkpoint will not
hold; CRIU blocks the traffic with iptables, which this machine may not have),
then repair mode on, the sequence numbers of both queues (TCP_QUEUE_SEQ), their
bytes (peeked, the send queue through TCP_REPAIR_QUEUE), window
(TCP_REPAIR_WINDOW), options (mss, window scales, SACK, timestamps) read, and
repair mode off again before the target can run.  With --kill, the target
stays stopped from the checkpoint to its death, and the copy is closed in
repair mode afterwards: the kernel then drops the connection without a FIN or
RST, so the peer knows nothing of it.  Without --kill the filter is removed
before the target runs again (and on any error).

Restart, before the process exists: a socket in repair mode, sequence numbers
set, bound and "connected" (no SYN in repair mode), options, queues and window
put back, repair mode off: the peer sees a window probe and the connection
goes on.  Needs CAP_NET_ADMIN, the same addresses, and the old socket gone."""

import fcntl
import os
import signal
import socket
import struct

from ..errors import Incompatible, Unsupported
from ..linux import libc, sockdiag

TCP_INFO_HEAD = struct.Struct("=8B")            # tcpi_state ... tcpi_options, wscales
REPAIR_WINDOW = struct.Struct("=5I")            # struct tcp_repair_window
REPAIR_OPT = struct.Struct("=II")               # struct tcp_repair_opt {code, value}
U32 = struct.Struct("=I")
TCP_TIME_WAIT, TCP_CLOSE = 6, 7


class NetworkLock:
    """Copies of the target's connections, with every incoming packet dropped
    while the checkpoint holds their state.  release(): the target lives on
    (filters removed); close_silently(): the target is dead (repair mode, then
    close: no FIN, no RST).  A guard process holds the copies too: if rcore
    dies before it is done (SIGKILL), the guard turns repair mode off and
    removes the filters, so that the target is never left with them."""

    def __init__(self):
        self.held = []
        self.captured = 0           # connections whose state was read
        self._guard = None

    def hold(self, s):
        if self._guard is None:
            self._guard = _Guard()
        fd = os.dup(s.fileno())
        try:
            if libc.socket_filter_length(fd):
                raise Unsupported("it has a socket filter of its own, which rcore would "
                                  "replace")
            self._guard.give(fd)
            libc.attach_filter(fd, libc.DROP_FILTER)
        except BaseException:
            os.close(fd)
            raise
        self.held.append(fd)
        self.captured += 1

    def release(self):
        while self.held:
            fd = self.held.pop()
            try:
                _setopt(fd, socket.SOL_SOCKET, libc.SO_DETACH_FILTER, 0)
            except OSError:
                pass
            os.close(fd)
        self._done()

    def close_silently(self):
        while self.held:
            fd = self.held.pop()
            try:
                _setopt(fd, socket.IPPROTO_TCP, libc.TCP_REPAIR, libc.TCP_REPAIR_ON)
            except OSError:
                pass
            os.close(fd)
        self._done()

    def _done(self):
        if self._guard is not None:
            self._guard.done()
            self._guard = None


class _Guard:
    """A child process that receives each copy (SCM_RIGHTS) before rcore touches
    the socket, and undoes the repair mode and the filter on all of them if
    rcore's end of their socket pair closes without a word (rcore died).
    Signals from the terminal do not end it before it has done so."""

    def __init__(self):
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.pid = os.fork()
        if self.pid == 0:
            mine.close()
            _guard_main(theirs)         # never returns
        theirs.close()
        self.sock = mine

    def give(self, fd):
        self.sock.sendmsg([b"fd"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                     struct.pack("=i", fd))])

    def done(self):
        try:
            self.sock.send(b"done")
        finally:
            self.sock.close()
            os.waitpid(self.pid, 0)


def _guard_main(sock):
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)
        held = []
        while True:
            msg, anc, _, _ = sock.recvmsg(16, socket.CMSG_SPACE(4))
            if msg == b"done":
                os._exit(0)
            if not msg:
                break                   # rcore is gone: undo what it did
            held += [struct.unpack("=i", data[:4])[0] for _, _, data in anc]
        for fd in held:
            for level, opt, value in ((socket.IPPROTO_TCP, libc.TCP_REPAIR,
                                       libc.TCP_REPAIR_OFF_NO_WP),
                                      (socket.SOL_SOCKET, libc.SO_DETACH_FILTER, 0)):
                try:
                    _setopt(fd, level, opt, value)
                except OSError:
                    pass
    finally:
        os._exit(0)


def _setopt(fd, level, opt, value):
    with socket.socket(fileno=os.dup(fd)) as s:
        s.setsockopt(level, opt, value)


def _ioctl_int(s, request):
    return struct.unpack("=i", fcntl.ioctl(s.fileno(), request, b"\0" * 4))[0]


def capture(lock, s):
    """The repair state of established connection s (rcore's copy of the
    target's socket).  Repair mode is on only inside this call."""
    try:
        lock.hold(s)
    except Unsupported as err:
        return {"error": str(err)}
    try:
        s.setsockopt(socket.IPPROTO_TCP, libc.TCP_REPAIR, libc.TCP_REPAIR_ON)
    except PermissionError:
        return {"error": "TCP_REPAIR needs CAP_NET_ADMIN"}
    try:
        head = TCP_INFO_HEAD.unpack(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[:8])
        options = head[5]
        st = {"options": options, "snd_wscale": head[6] & 0xF, "rcv_wscale": head[6] >> 4,
              "mss": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG),
              "timestamp": (U32.unpack(s.getsockopt(socket.IPPROTO_TCP, libc.TCP_TIMESTAMP,
                                                    4))[0]
                            if options & libc.TCPI_OPT_TIMESTAMPS else 0),
              "window": list(REPAIR_WINDOW.unpack(
                  s.getsockopt(socket.IPPROTO_TCP, libc.TCP_REPAIR_WINDOW, REPAIR_WINDOW.size))),
              "unsent": _ioctl_int(s, libc.SIOCOUTQNSD)}
        for name, queue, length in (("recv", libc.TCP_RECV_QUEUE, _ioctl_int(s, libc.SIOCINQ)),
                                    ("send", libc.TCP_SEND_QUEUE, _ioctl_int(s, libc.SIOCOUTQ))):
            s.setsockopt(socket.IPPROTO_TCP, libc.TCP_REPAIR_QUEUE, queue)
            st[name + "_seq"] = U32.unpack(s.getsockopt(socket.IPPROTO_TCP,
                                                        libc.TCP_QUEUE_SEQ, 4))[0]
            data = s.recv(length + 1, socket.MSG_PEEK | socket.MSG_DONTWAIT) if length else b""
            if len(data) != length:
                return {"error": f"the {name} queue holds {len(data)} bytes, not {length}"}
            st[name] = data.hex()
        return st
    finally:
        # Repair mode off without a window probe: nothing changed for the peer.
        s.setsockopt(socket.IPPROTO_TCP, libc.TCP_REPAIR, libc.TCP_REPAIR_OFF_NO_WP)


def decode(st):
    if "error" in st:
        return
    for key in ("options", "snd_wscale", "rcv_wscale", "mss", "timestamp", "unsent",
                "recv_seq", "send_seq"):
        if not isinstance(st[key], int) or not 0 <= st[key] < 1 << 32:
            raise ValueError(f"repair {key}")
    if len(st["window"]) != 5 or not all(isinstance(v, int) for v in st["window"]):
        raise ValueError("repair window")
    bytes.fromhex(st["recv"])
    bytes.fromhex(st["send"])
    if st["unsent"] > len(st["send"]) // 2:
        raise ValueError("repair unsent")


def restore(f, options):
    """A socket holding f's connection again (rcore's fd), out of repair mode.
    options: (name, level, option, value) to set first."""
    st, rep = f.kind_state, f.kind_state["repair"]
    if "error" in rep:
        raise Unsupported(f"fd {f.fd}: the connection's state was not captured: "
                          f"{rep['error']}")
    s = socket.socket(st["family"], socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        # Options first: repair mode lets the socket share its port with the
        # listener (sk_reuse = SK_FORCE_REUSE), which SO_REUSEADDR set later undoes.
        for _, level, opt, value in options:
            s.setsockopt(level, opt, value)
        try:
            s.setsockopt(socket.IPPROTO_TCP, libc.TCP_REPAIR, libc.TCP_REPAIR_ON)
        except PermissionError:
            raise Unsupported(f"fd {f.fd}: --tcp-established needs CAP_NET_ADMIN "
                              "(TCP_REPAIR)") from None
        _check_gone(f)
        recv, send = bytes.fromhex(rep["recv"]), bytes.fromhex(rep["send"])
        _buffers_as_before(s, st["options"], recv, send)
        _queue_seq(s, libc.TCP_RECV_QUEUE, rep["recv_seq"] - len(recv))
        _queue_seq(s, libc.TCP_SEND_QUEUE, rep["send_seq"] - len(send))
        try:
            s.bind(tuple(st["addr"]))
            s.connect(tuple(st["peer_addr"]))
        except OSError as err:
            raise Incompatible(f"fd {f.fd}: cannot put the connection {st['local']} -> "
                               f"{st['peer']} back: {err.strerror}") from None
        opts = [(libc.TCPOPT_MAXSEG, rep["mss"])]
        if rep["options"] & libc.TCPI_OPT_SACK:
            opts.append((libc.TCPOPT_SACK_PERM, 0))
        if rep["options"] & libc.TCPI_OPT_WSCALE:
            opts.append((libc.TCPOPT_WINDOW, rep["snd_wscale"] | rep["rcv_wscale"] << 16))
        if rep["options"] & libc.TCPI_OPT_TIMESTAMPS:
            opts.append((libc.TCPOPT_TIMESTAMP, 0))
        s.setsockopt(socket.IPPROTO_TCP, libc.TCP_REPAIR_OPTIONS,
                     b"".join(REPAIR_OPT.pack(c, v) for c, v in opts))
        if rep["options"] & libc.TCPI_OPT_TIMESTAMPS:
            s.setsockopt(socket.IPPROTO_TCP, libc.TCP_TIMESTAMP, U32.pack(rep["timestamp"]))
        if recv:
            s.setsockopt(socket.IPPROTO_TCP, libc.TCP_REPAIR_QUEUE, libc.TCP_RECV_QUEUE)
            _send_all(s, recv)
        # Sent but not acknowledged: queued in repair mode, as already sent (the
        # peer may acknowledge it); never sent: sent the ordinary way.
        sent = len(send) - rep["unsent"]
        if sent:
            s.setsockopt(socket.IPPROTO_TCP, libc.TCP_REPAIR_QUEUE, libc.TCP_SEND_QUEUE)
            _send_all(s, send[:sent])
        s.setsockopt(socket.IPPROTO_TCP, libc.TCP_REPAIR_WINDOW,
                     REPAIR_WINDOW.pack(*rep["window"]))
        s.setsockopt(socket.IPPROTO_TCP, libc.TCP_REPAIR, libc.TCP_REPAIR_OFF)
        _send_all(s, send[sent:])
        return s.detach()
    finally:
        s.close()


def _check_gone(f):
    """Repair mode would let a second socket take the same addresses: refuse
    while the checkpointed connection still exists (its process still runs)."""
    st = f.kind_state
    local, peer = tuple(st["addr"][:2]), tuple(st["peer_addr"][:2])
    for d in sockdiag.read_inet_sockets(st["family"], socket.IPPROTO_TCP).values():
        if (d.local, d.peer) == (local, peer) and d.state not in (TCP_TIME_WAIT, TCP_CLOSE):
            raise Incompatible(f"fd {f.fd}: the connection {st['local']} -> {st['peer']} "
                               "still exists (is the checkpointed process still running?)")


def _queue_seq(s, queue, seq):
    s.setsockopt(socket.IPPROTO_TCP, libc.TCP_REPAIR_QUEUE, queue)
    s.setsockopt(socket.IPPROTO_TCP, libc.TCP_QUEUE_SEQ, U32.pack(seq & 0xFFFFFFFF))


def _send_all(s, data):
    """Queue data without waiting (nothing drains the socket before the process
    runs; the buffers are as large as the old socket's)."""
    while data:
        try:
            data = data[s.send(data[:1 << 16], socket.MSG_DONTWAIT):]
        except BlockingIOError:
            raise Incompatible(f"{len(data)} bytes of the connection's queues do not fit "
                               "in its buffers") from None


def _buffers_as_before(s, options, recv, send):
    """The old socket held its queues in buffers grown to its traffic (the
    captured SO_RCVBUF/SO_SNDBUF); a new one starts small and its queue
    writes would wait for room forever: give it the old sizes (root may
    exceed rmem_max/wmem_max; the sizes are then fixed, not tuned)."""
    for data, name, force in ((recv, "SO_RCVBUF", libc.SO_RCVBUFFORCE),
                              (send, "SO_SNDBUF", libc.SO_SNDBUFFORCE)):
        want = options.get(name, 0)
        if data and want > s.getsockopt(socket.SOL_SOCKET, getattr(socket, name)):
            s.setsockopt(socket.SOL_SOCKET, force, want // 2)
