"""Sockets: what every socket shares, and the dispatch to its family's module
(unix.py; inet.py for TCP and UDP over IPv4 and IPv6).  Other families
(netlink, packet...) are captured enough to say what they were, and refused."""

import errno
import importlib
import socket

from ..errors import Incompatible, Unsupported
from ..linux import libc
from .kind import Kind


class Family(Kind):
    """What a family module implements, beyond Kind: capture_socket(ctx, f, s)
    with s rcore's copy of the target's socket (the same socket: options,
    names and queues read on it are the target's)."""

    def capture_socket(self, ctx, f, s):
        pass


class Socket(Kind):
    """Captured on a copy of the descriptor (pidfd_getfd): `family`, `type`,
    `listening` (SO_ACCEPTCONN), `local` and `peer` addresses in words (None:
    not bound or not connected); then the family module captures its own.
    Restart and info: as the family module says.  Other families are refused;
    --skip-unsupported makes them a disconnected descriptor, except a socket
    that takes new work (listening, or a datagram socket bound without a peer):
    the process would run on reachable nowhere, so it is refused all the same.
    Restore: kept if still open; refused if closed since."""
    new_description = True

    def capture(self, ctx, f, fdinfo):
        if not ctx.with_data:
            return                      # restore compares the common fields only
        s = socket.socket(fileno=ctx.copy_fd(f.fd))
        try:
            f.kind_state = {
                "family": s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN),
                "type": s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE),
                "listening": bool(s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)),
                "local": _address(s.getsockname), "peer": _address(s.getpeername),
                "filter": libc.socket_filter(s.fileno()).hex()}
            family_of(f).capture_socket(ctx, f, s)
        finally:
            s.close()

    def decode(self, f):
        for key in ("family", "type"):
            if not isinstance(f.kind_state.get(key, 0), int):
                raise ValueError(key)
        program = bytes.fromhex(f.kind_state.get("filter", ""))
        if len(program) % 8 or len(program) > 4096 * 8:        # BPF_MAXINSNS
            raise ValueError("filter")
        family_of(f).decode(f)

    def check(self, f, plan):
        family_of(f).check(f, plan)

    def open(self, plan, f):
        fd = family_of(f).open(plan, f)
        program = bytes.fromhex(f.kind_state.get("filter", ""))
        if fd is not None and program:
            # The program's own socket filter (classic BPF, as SO_GET_FILTER
            # gave it back): the kernel checks it again here.
            try:
                libc.attach_filter(fd, program)
            except OSError as err:
                raise Incompatible(f"fd {f.fd}: its socket filter cannot be attached "
                                   f"again: {err.strerror}") from None
        return fd

    def warnings(self, f):
        return family_of(f).warnings(f)

    def skippable(self, f):
        return "listening" in f.kind_state and not takes_new_work(f)

    def why_not_skippable(self, f):
        if "listening" not in f.kind_state:
            return "rcore could not tell whether it is a server socket"
        return ("it is a server socket: the process would run on, answering no one "
                f"({describe_socket(f)})")

    def describe(self, f):
        program = f.kind_state.get("filter")
        return describe_socket(f) + family_of(f).describe(f) + (
            f", socket filter of {len(program) // 16} instructions" if program else "")

    def action(self, f, plan):
        return family_of(f).action(f, plan)


class Other(Family):
    """A family rcore does not rebuild (netlink, packet, vsock...)."""

    def check(self, f, plan):
        raise Unsupported(f"fd {f.fd} ({describe_socket(f)}): rcore cannot rebuild "
                          "sockets of this family")

    def action(self, f, plan):
        return "refused (sockets of this family are not rebuilt)"


OTHER = Other()
# Address family -> the module of this package implementing it, imported on
# first use (as fds.MODULES: a process with only unix sockets never loads inet).
FAMILIES = {socket.AF_UNIX: "unix", socket.AF_INET: "inet", socket.AF_INET6: "inet"}


def family_of(f):
    module = FAMILIES.get(f.kind_state.get("family"))
    return OTHER if module is None else \
        importlib.import_module(f"{__package__}.{module}").KIND


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
