"""TCP_NODELAY on pyinfra's SSH connections: no delayed-ACK stall per command.

Paramiko sets no socket options, so Nagle's algorithm holds back a small SSH packet while the
previous one is unacknowledged, and the host delays that ACK. Every SSH packet is written whole,
so there is nothing for Nagle to merge anyway (what it saves: bench/README.md).

Two hooks, both public: `CONNECT_KWARGS` is host data for pyinfra's `ssh_paramiko_connect_kwargs`
(paramiko's `transport_factory`: covers the handshake; inventory.py's hosts get it), and
`for_host()` switches it on for a connection that is already open (the deploy calls it, so any
inventory benefits).

    >>> import socket
    >>> a, b = socket.socketpair()
    >>> set_nodelay(a)  # not TCP: left alone
    False
"""

from __future__ import annotations

import socket
from typing import Any

from paramiko import Transport


def set_nodelay(sock: Any) -> bool:
    """Set TCP_NODELAY on `sock` if it is a TCP socket; True when set."""
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            return False  # a ProxyCommand pipe, a Unix socket: nothing to tune
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return True
    except (AttributeError, OSError):
        return False


def transport_factory(sock: Any, **kwargs: Any) -> Transport:
    """paramiko's default Transport, on a socket with TCP_NODELAY."""
    set_nodelay(sock)
    return Transport(sock, **kwargs)


# Host data: {"ssh_paramiko_connect_kwargs": CONNECT_KWARGS}
CONNECT_KWARGS = {"transport_factory": transport_factory}


def for_host(host: Any) -> bool:
    """Set TCP_NODELAY on `host`'s open SSH connection (pyinfra's SSH connector); True when set."""
    client = getattr(getattr(host, "connector", None), "client", None)
    transport = client.get_transport() if client is not None else None
    return set_nodelay(getattr(transport, "sock", None)) if transport is not None else False
