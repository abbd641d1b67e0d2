"""Bounds on what a server may make the audit wait for or read: the server is the one audited,
and a hostile or broken one must cost a named "incomplete" result, not a hung or crashed run.

A socket timeout bounds each read, not a dialogue: a server that sends one byte a second never
trips it. `deadline()` bounds the whole of one: when its time is up the socket is shut down, so
whatever reads from it (our own parsers, or OpenSSL inside Python's ssl) gets end-of-file or an
error at once.

    >>> import socket
    >>> a, b = socket.socketpair()
    >>> def wait():            # b sends nothing: the deadline ends the wait
    ...     try:
    ...         return a.recv(1)
    ...     except OSError:    # under gevent (pyinfra's): the waiting read is cancelled
    ...         return b""
    >>> with deadline(a, 0.1):
    ...     wait()
    b''
    >>> a.close(); b.close()
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

# A TLS record is at most 2^14 bytes of plaintext plus 2048 of expansion (RFC 8446 5.2); a
# STARTTLS dialogue line is at most 512 bytes (RFC 5321 4.5.3.1.5; IMAP and POP3 are shorter
# in practice): anything longer is not a server following the protocol.
MAX_RECORD = 2**14 + 2048
MAX_LINE = 4096
MAX_LINES = 100


class Malformed(ValueError):
    """What the server sent does not parse (short, oversized, inconsistent)."""


@contextlib.contextmanager
def deadline(sock: socket.socket, seconds: float) -> Iterator[None]:
    """Shut `sock` down after `seconds`, whatever is reading from it then."""

    def expire() -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
