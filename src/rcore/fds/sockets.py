"""Sockets: not rebuilt yet; captured enough to say what they were and to keep
--skip-unsupported from hiding a server that no longer listens."""

import errno
import socket

from ..errors import Unsupported
from .kind import Kind


class Socket(Kind):
    """Captured (on a copy of the descriptor, pidfd_getfd): `family`, `type`,
    `listening` (SO_ACCEPTCONN), `local` and `peer` addresses (None: not bound
    or not connected).
    Restart: refused.  --skip-unsupported makes it a disconnected descriptor,
    except a socket that takes new work (listening, or a datagram socket bound
    without a peer): the process would run on reachable nowhere, so it is
    refused all the same.
    Restore: kept if still open; refused if closed since."""
    names = ("socket",)

    def capture(self, ctx, f, fdinfo):
        if not ctx.with_data:
            return                      # restore compares the common fields only
        s = socket.socket(fileno=ctx.copy_fd(f.fd))
        try:
            f.kind_state = {
                "family": s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN),
                "type": s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE),
                "listening": bool(s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)),
                "local": _address(s.getsockname), "peer": _address(s.getpeername)}
        finally:
            s.close()

    def decode(self, f):
        for key in ("family", "type"):
            if not isinstance(f.kind_state.get(key, 0), int):
                raise ValueError(key)

    def check(self, f, plan):
        raise Unsupported(f"fd {f.fd} ({describe_socket(f)}): rcore cannot rebuild sockets yet")

    def skippable(self, f):
        return "listening" in f.kind_state and not takes_new_work(f)

    def why_not_skippable(self, f):
        if "listening" not in f.kind_state:
            return "rcore could not tell whether it is a server socket"
        return ("it is a server socket: the process would run on, answering no one "
                f"({describe_socket(f)})")

    def describe(self, f):
        return describe_socket(f)


def takes_new_work(f):
    st = f.kind_state
    if st.get("listening"):
        return True
    return st.get("type") == socket.SOCK_DGRAM and st.get("local") and not st.get("peer")


def describe_socket(f):
    st = f.kind_state
    if "family" not in st:
        return f.path
    family = _name(socket.AddressFamily, st["family"], "family")
    kind = _name(socket.SocketKind, st["type"], "type")
    what = f"{family} {kind}" + (" listening" if st.get("listening") else "")
    if st.get("local"):
        what += f" on {st['local']}"
    if st.get("peer"):
        what += f" to {st['peer']}"
    return what


def _name(enum, value, what):
    try:
        return enum(value).name
    except ValueError:
        return f"{what} {value}"


def _address(get):
    try:
        addr = get()
    except OSError as err:
        if err.errno == errno.ENOTCONN:
            return None
        raise
    if isinstance(addr, tuple):
        if addr[1] == 0:
            return None                     # not bound
        return f"{addr[0]}:{addr[1]}" if len(addr) == 2 else f"[{addr[0]}]:{addr[1]}"
    if isinstance(addr, bytes):
        return "@" + addr[1:].decode("utf-8", "replace") if addr[:1] == b"\0" else None
    return addr or None


KIND = Socket()
