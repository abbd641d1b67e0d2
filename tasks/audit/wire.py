"""The TLS and STARTTLS wire as our own probes speak it (scan.py's hybrid-group probe and
psk_probe.py): records, the one ClientHello builder, ServerHello parsing, the plaintext
dialogues before STARTTLS, and the bounds on all of it. The server is the one audited: a
hostile or broken one must cost a named "incomplete" result, not a hung or crashed run.

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
import hashlib
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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
    """Shut `sock`'s connection down after `seconds`, whatever is reading from it then. Also
    once ssl's wrap_socket() has detached `sock` (the SSLSocket takes its descriptor): the timer
    holds a duplicate descriptor, and shutdown() acts on the connection, not the descriptor."""
    guard = sock.dup()

    def expire() -> None:
        with contextlib.suppress(OSError):  # also when `guard` is closed already
            guard.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        guard.close()


class ConnectionClosed(ConnectionError):
    """The server closed the connection mid-message (an OSError, like a timeout)."""


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionClosed("connection closed by the server")
        data += chunk
    return data


# --- records and handshake messages (RFC 8446) -----------------------------------------------

HANDSHAKE, ALERT, CHANGE_CIPHER_SPEC = 22, 21, 20
X25519, X25519MLKEM768 = 0x001D, 0x11EC
AES128_GCM_SHA256 = 0x1301
TLS13_SUITES = (0x1301, 0x1302, 0x1303)
# ed25519, ed448, RSA-PSS, ECDSA and RSA PKCS#1 with SHA-256/384/512: what a server may sign with.
SIGALGS = (0x0804, 0x0805, 0x0806, 0x0403, 0x0503, 0x0603, 0x0807, 0x0808, 0x0401, 0x0501, 0x0601)
# A ServerHello with this random is a HelloRetryRequest (RFC 8446 4.1.3).
HRR_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()


def read_record(sock: socket.socket) -> tuple[int, bytes, bytes]:
    """(content type, 5-byte header, body) of the next record; Malformed when oversized."""
    header = recv_exact(sock, 5)
    size = struct.unpack("!H", header[3:5])[0]
    if size > MAX_RECORD:
        raise Malformed(f"a {size}-byte TLS record")
    return header[0], header, recv_exact(sock, size)


def record(payload: bytes, kind: int = HANDSHAKE) -> bytes:
    """`payload` as one plaintext record (legacy version TLS 1.0, as clients send the first)."""
    return bytes([kind]) + b"\x03\x01" + struct.pack("!H", len(payload)) + payload


def ext(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


def client_hello(
    groups: tuple[int, ...],
    shares: tuple[tuple[int, bytes], ...] = (),
    suites: tuple[int, ...] = TLS13_SUITES,
    psk_modes: tuple[int, ...] | None = None,
    server_name: str | None = None,
    last: bytes = b"",
) -> bytes:
    """A TLS 1.3 ClientHello handshake message (record() sends it) offering `groups`, with a
    key share for each of `shares` (none: a server that takes a group must ask, with a
    HelloRetryRequest), `psk_modes` and SNI for a `server_name` that is not an address.
    `last`: extensions that must come last (pre_shared_key, RFC 8446 4.2.11).

    >>> hello = client_hello((X25519MLKEM768,))
    >>> hello[0], ext(10, struct.pack("!HH", 2, X25519MLKEM768)) in hello
    (1, True)
    """
    sigalgs = b"".join(struct.pack("!H", a) for a in SIGALGS)
    key_shares = b"".join(struct.pack("!HH", g, len(k)) + k for g, k in shares)
    exts = (
        ext(43, b"\x02\x03\x04")  # supported_versions: TLS 1.3
        + ext(
            10, struct.pack("!H", 2 * len(groups)) + b"".join(struct.pack("!H", g) for g in groups)
        )
        + ext(51, struct.pack("!H", len(key_shares)) + key_shares)
        + ext(13, struct.pack("!H", len(sigalgs)) + sigalgs)
    )
    if psk_modes is not None:
        exts += ext(45, bytes([len(psk_modes), *psk_modes]))
    if server_name and not server_name.replace(".", "").replace(":", "").isdigit():
        name = server_name.encode()
        exts += ext(0, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name)
    exts += last
    body = (
        b"\x03\x03"
        + os.urandom(32)
        + b"\x20"
        + os.urandom(32)
        + struct.pack("!H", 2 * len(suites))
        + b"".join(struct.pack("!H", s) for s in suites)
        + b"\x01\x00"
        + struct.pack("!H", len(exts))
        + exts
    )
    return b"\x01" + len(body).to_bytes(3, "big") + body


@dataclass(frozen=True)
class ServerHello:
    random: bytes
    suite: int
    extensions: dict[int, bytes]

    @property
    def retry(self) -> bool:
        """A HelloRetryRequest: the server asks for another key share."""
        return self.random == HRR_RANDOM


def server_hello(msg: bytes) -> ServerHello:
    """A ServerHello (or HelloRetryRequest) handshake message, parsed; Malformed when it is
    cut short or its lengths do not add up."""
    try:
        if msg[0] != 2:
            raise Malformed(f"expected ServerHello, got handshake type {msg[0]}")
        random = msg[6:38]
        pos = 38
        pos += 1 + msg[pos]  # legacy session id
        suite = struct.unpack("!H", msg[pos : pos + 2])[0]
        pos += 3  # cipher suite, compression
        end = pos + 2 + struct.unpack("!H", msg[pos : pos + 2])[0]
        if end > len(msg):
            raise Malformed("extensions run past the message")
        pos += 2
        exts = {}
        while pos + 4 <= end:
            kind, size = struct.unpack("!HH", msg[pos : pos + 4])
            exts[kind] = msg[pos + 4 : pos + 4 + size]
            pos += 4 + size
    except (IndexError, struct.error) as exc:
        raise Malformed(f"a {len(msg)}-byte ServerHello that does not parse ({exc})") from exc
    return ServerHello(random, suite, exts)


# --- the plaintext dialogues before STARTTLS ------------------------------------------------


def read_lines_until(sock: socket.socket, done: Callable[[str], bool]) -> str:
    """Read CRLF lines until done(line) is true; returns that line. Byte-wise: TLS follows.
    A line over MAX_LINE bytes or more than MAX_LINES lines is no mail server's dialogue."""
    line, lines = b"", 0
    while True:
        c = recv_exact(sock, 1)
        line += c
        if len(line) > MAX_LINE:
            raise ConnectionError(f"the server sent a line of over {MAX_LINE} bytes")
        if c == b"\n":
            text = line.decode(errors="replace").rstrip("\r\n")
            if done(text):
                return text
            line, lines = b"", lines + 1
            if lines > MAX_LINES:
                raise ConnectionError(f"the server sent over {MAX_LINES} lines before answering")


def starttls(sock: socket.socket, service: str) -> None:
    """Run the plaintext dialogue of `service` (smtp, imap, pop3) up to the TLS handshake;
    raise ConnectionError when the server refuses."""
    if service == "smtp":
        read_lines_until(sock, lambda line: line[:4] == "220 ")
        sock.sendall(b"EHLO audit.mailtls.invalid\r\n")
        read_lines_until(sock, lambda line: line[3:4] == " ")
        sock.sendall(b"STARTTLS\r\n")
        reply = read_lines_until(sock, lambda line: line[3:4] == " ")
        ok = reply.startswith("220")
    elif service == "imap":
        read_lines_until(sock, lambda line: line.startswith("* "))
        sock.sendall(b"a STARTTLS\r\n")
        ok = read_lines_until(sock, lambda line: line.startswith("a ")).startswith("a OK")
    else:
        read_lines_until(sock, lambda line: True)
        sock.sendall(b"STLS\r\n")
        ok = read_lines_until(sock, lambda line: True).startswith("+OK")
    if not ok:
        raise ConnectionError(f"{service} STARTTLS refused")
