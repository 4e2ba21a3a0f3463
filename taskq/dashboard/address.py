"""Where the dashboard listens, and which ``Host`` names its requests may carry.

A page that can purge queues must not answer requests addressed to a name it doesn't
serve (DNS rebinding), so the names are worked out once, from the address it bound.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from taskq.errors import ConfigurationError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``--host`` keeps the page on this machine ("localhost" or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def served_names(host: str, bound_address: str, extra: Iterable[str] = ()) -> list[str]:
    """The ``Host`` names a request may use: loopback, what we listen on, and what the operator added.

    A wildcard address (0.0.0.0, ::) serves every interface, so this machine's own name and
    addresses count too.
    """
    names = {*LOOPBACK_NAMES, host, bound_address, *extra}
    if ipaddress.ip_address(bound_address).is_unspecified:
        names.update((socket.gethostname(), socket.getfqdn()))
        try:
            addresses = [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)]
            names.update(address for address in addresses if isinstance(address, str))  # an int: no host
        except OSError:  # a host without a resolvable name: its addresses can still be allowed by name
            pass
    return sorted(host_header_name(name) for name in names if name)


def host_header_name(name: str) -> str:
    """How ``name`` appears in a Host header: IPv6 literals in brackets, as Starlette parses them."""
    return f"[{name}]" if ":" in name and not name.startswith("[") else name.lower()


def bind(host: str, port: int) -> socket.socket:
    """Our own listening socket, so a port in use is said before anything starts; port 0 picks a free one."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def shown_url(sock: socket.socket) -> str:
    """The page's address as a browser takes it (an IPv6 host in brackets)."""
    address = sock.getsockname()
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    return f"http://{host}:{address[1]}/"
