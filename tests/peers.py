"""SMTP peers on the controller for the outbound tests: what a test host's Postfix smtp client
delivers real mail to, each peer a listening socket and a thread, with a TLS stance of its own.

- `fs13`: TLS 1.3 only; `fs12`: TLS 1.2 at most, ECDHE-ECDSA AEAD suites only (ECDSA
  certificate): the two forward-secret kinds a client meets;
- `rsa`: TLS 1.2 at most, RSA key exchange only (AES-GCM): a session that is encrypted but not
  forward-secret, which the outbound ledger must tell apart;
- `plain`: no STARTTLS advertised: the client delivers in plaintext;
- `recorder`: TLS 1.2-1.3 like a default server, and before OpenSSL sees the handshake it peeks
  at the client's first ClientHello on the wire (`peek_client_hello`): its size, supported_groups
  and key_share groups, the figures the outbound change is about (one packet or two).

Enough ESMTP for Postfix (EHLO/HELO, STARTTLS, MAIL, RCPT, DATA, RSET, NOOP, QUIT; any
recipient is accepted) and nothing more: no PIPELINING, no SIZE, no AUTH. Every received message
is kept in memory with what its session negotiated. Peers issue no session tickets, so every
session is a full handshake and every ClientHello a first one (Postfix caches sessions).

    >>> certs = Certificates.make(Path(tmp))                               # doctest: +SKIP
    >>> peer = Peer("recorder", "10.213.4.1", 10029, certs).start()          # doctest: +SKIP
    >>> peer.wait("outbound 1f2e recorder", timeout=60).hello.key_share_names  # doctest: +SKIP
    ('x25519',)
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from pathlib import Path

from selfsigned import self_signed

from tasks.audit import wire

KINDS = ("fs13", "fs12", "rsa", "plain", "recorder")
# The groups a ClientHello names, by TLS code point (IANA TLS Supported Groups).
GROUP_NAMES = {
    0x11EC: "X25519MLKEM768",
    0x11EB: "SecP256r1MLKEM768",
    0x11ED: "SecP384r1MLKEM1024",
    0x001D: "x25519",
    0x001E: "x448",
    0x0017: "secp256r1",
    0x0018: "secp384r1",
    0x0019: "secp521r1",
    0x0100: "ffdhe2048",
    0x0101: "ffdhe3072",
    0x0102: "ffdhe4096",
    0x0103: "ffdhe6144",
    0x0104: "ffdhe8192",
}
SUPPORTED_GROUPS, KEY_SHARE, SUPPORTED_VERSIONS = 10, 51, 43
# Bounds: a session that stalls this long is dropped (Postfix's own smtp timeouts are 300 s),
# a message over MAX_MESSAGE bytes refused; a ClientHello is at most a few records.
TIMEOUT = 30.0
MAX_MESSAGE = 10 * 2**20
MAX_LINE = 4096
MAX_HELLO_RECORDS = 4
POLL = 0.01


class IncompleteHello(wire.Malformed):
    """The bytes end before the ClientHello does: more are on their way."""


@dataclass(frozen=True)
class ClientHello:
    """The first ClientHello of a session as it was on the wire."""

    wire_bytes: int  # the record(s) carrying it, 5-byte record headers included
    records: int
    groups: tuple[int, ...]  # supported_groups, in the client's order
    key_shares: tuple[int, ...]  # the groups the client sent a key share for
    versions: tuple[int, ...]  # supported_versions (empty: a TLS 1.2-only client)

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(GROUP_NAMES.get(g, f"0x{g:04x}") for g in self.groups)

    @property
    def key_share_names(self) -> tuple[str, ...]:
        return tuple(GROUP_NAMES.get(g, f"0x{g:04x}") for g in self.key_shares)

    def needs_retry(self, server_groups: tuple[int, ...]) -> bool:
        """Whether a server that supports only `server_groups` must answer with a
        HelloRetryRequest: no key share was sent for any of them (a second round trip)."""
        return bool(self.versions) and not set(self.key_shares) & set(server_groups)

    def __str__(self) -> str:
        return (
            f"{self.wire_bytes} bytes in {self.records} record(s), "
            f"supported_groups {' '.join(self.group_names) or '-'}, "
            f"key_share {' '.join(self.key_share_names) or '-'}"
        )


def _u16s(data: bytes) -> tuple[int, ...]:
    return tuple(struct.unpack(f"!{len(data) // 2}H", data[: len(data) // 2 * 2]))


def parse_client_hello(data: bytes) -> ClientHello:
    """The ClientHello at the start of `data` (TLS records as sent: one, or a handshake
    message split over several). IncompleteHello when `data` ends before the message does,
    Malformed when it is not a ClientHello or its lengths do not add up."""
    message, pos, records = b"", 0, 0
    while True:
        if len(data) < pos + 5:
            raise IncompleteHello(f"{len(data)} bytes, a record header is still to come")
        kind, size = data[pos], struct.unpack("!H", data[pos + 3 : pos + 5])[0]
        if kind != wire.HANDSHAKE or size == 0 or size > wire.MAX_RECORD:
            raise wire.Malformed(f"record type {kind} of {size} bytes: not a ClientHello")
        if len(data) < pos + 5 + size:
            raise IncompleteHello(f"{len(data)} bytes, the record ends at {pos + 5 + size}")
        message += data[pos + 5 : pos + 5 + size]
        pos, records = pos + 5 + size, records + 1
        if message[0] != 1:
            raise wire.Malformed(f"handshake type {message[0]}, not a ClientHello")
        if len(message) >= 4 and len(message) >= 4 + int.from_bytes(message[1:4], "big"):
            break
        if records >= MAX_HELLO_RECORDS:
            raise wire.Malformed(f"a ClientHello over more than {MAX_HELLO_RECORDS} records")
    body = message[4 : 4 + int.from_bytes(message[1:4], "big")]
    try:
        at = 2 + 32  # legacy_version, random
        at += 1 + body[at]  # legacy_session_id
        at += 2 + struct.unpack("!H", body[at : at + 2])[0]  # cipher_suites
        at += 1 + body[at]  # legacy_compression_methods
        extensions: dict[int, bytes] = {}
        if at < len(body):
            end = at + 2 + struct.unpack("!H", body[at : at + 2])[0]
            if end > len(body):
                raise wire.Malformed("extensions run past the ClientHello")
            at += 2
            while at + 4 <= end:
                kind, size = struct.unpack("!HH", body[at : at + 4])
                extensions[kind] = body[at + 4 : at + 4 + size]
                at += 4 + size
        groups = _u16s(extensions.get(SUPPORTED_GROUPS, b"\0\0")[2:])
        shares, raw = [], extensions.get(KEY_SHARE, b"\0\0")[2:]
        while len(raw) >= 4:
            group, size = struct.unpack("!HH", raw[:4])
            shares.append(group)
            raw = raw[4 + size :]
        versions = extensions.get(SUPPORTED_VERSIONS, b"\0")
        return ClientHello(pos, records, groups, tuple(shares), _u16s(versions[1:]))
    except (IndexError, struct.error) as exc:
        raise wire.Malformed(f"a {len(body)}-byte ClientHello that does not parse ({exc})") from exc


def peek_client_hello(sock: socket.socket, seconds: float = TIMEOUT) -> ClientHello:
    """The ClientHello waiting on `sock`, read with MSG_PEEK: the bytes stay queued for OpenSSL,
    which then reads the very same ones. On a blocking socket MSG_WAITALL waits for exactly the
    bytes a record header promises; under gevent (pyinfra's, once anything in the process
    imported pyinfra_cli) a peek returns what is there, so a short one is tried again after
    POLL. `wire.deadline` and `seconds` bound the whole wait either way."""
    timeout = sock.gettimeout()
    sock.settimeout(None)
    end, want = time.monotonic() + seconds, 5
    try:
        with wire.deadline(sock, seconds):
            while True:
                data = sock.recv(want, socket.MSG_PEEK | socket.MSG_WAITALL)
                if len(data) < want:
                    if not data or time.monotonic() >= end:
                        raise wire.ConnectionClosed(
                            f"{len(data)} bytes of a ClientHello, then nothing for {seconds} s"
                            if data
                            else "closed before the ClientHello"
                        )
                    time.sleep(POLL)
                    continue
                try:
                    return parse_client_hello(data)
                except IncompleteHello:
                    want = _next_size(data)
    finally:
        sock.settimeout(timeout)


def _next_size(data: bytes) -> int:
    """How many bytes `data` must grow to for its last record, or the next header, to be whole."""
    pos = 0
    while pos + 5 <= len(data):
        pos += 5 + struct.unpack("!H", data[pos + 3 : pos + 5])[0]
    return pos if pos > len(data) else pos + 5


# --- certificates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """Throwaway self-signed pairs (RSA 2048, ECDSA P-256) in a directory of the test's."""

    rsa: tuple[Path, Path]  # (certificate, key)
    ecdsa: tuple[Path, Path]

    @classmethod
    def make(cls, directory: Path, name: str = "peer.test") -> Certificates:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        pairs = {}
        now = datetime.now(UTC)
        for kind, key in (
            ("rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            ("ecdsa", ec.generate_private_key(ec.SECP256R1())),
        ):
            cert, key_pem = self_signed(
                key, name, now - timedelta(hours=1), now + timedelta(days=2)
            )
            cert_path, key_path = directory / f"{kind}.crt", directory / f"{kind}.key"
            cert_path.write_bytes(cert)
            key_path.write_bytes(key_pem)
            key_path.chmod(0o600)
            pairs[kind] = (cert_path, key_path)
        return cls(rsa=pairs["rsa"], ecdsa=pairs["ecdsa"])


def server_context(kind: str, certs: Certificates) -> ssl.SSLContext | None:
    """The TLS stance of a peer kind; None for `plain` (no STARTTLS)."""
    if kind == "plain":
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_TICKET  # TLS 1.2: no resumption by ticket
    ctx.num_tickets = 0  # TLS 1.3: none issued
    pair = certs.rsa
    if kind == "fs13":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    elif kind == "fs12":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")
        pair = certs.ecdsa
    elif kind == "rsa":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        # RSA key exchange passes OpenSSL 3's default security level 2 (a 2048-bit key);
        # level 3 and up would refuse it. Said explicitly, as a Debian policy change would bite.
        ctx.set_ciphers("AES256-GCM-SHA384:AES128-GCM-SHA256:@SECLEVEL=2")
    elif kind != "recorder":
        raise ValueError(f"unknown peer kind {kind!r}; expected one of {KINDS}")
    ctx.load_cert_chain(*pair)
    return ctx


# --- the SMTP server -------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    version: str
    cipher: str


@dataclass(frozen=True)
class Delivery:
    """One message as the peer received it, and the session it came in."""

    peer: str
    client: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    message_id: str
    tls: Tls | None  # None: delivered in plaintext
    hello: ClientHello | None  # the recorder's, else None
    data: bytes


class _Lines:
    """CRLF lines from a socket, with no read-ahead left behind at STARTTLS (`pending`)."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, b""

    @property
    def pending(self) -> bool:
        return bool(self.buf)

    def readline(self, limit: int = MAX_LINE) -> bytes:
        while b"\n" not in self.buf:
            if len(self.buf) > limit:
                raise ConnectionError(f"a line of over {limit} bytes")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise wire.ConnectionClosed("the client closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.removesuffix(b"\r")


@dataclass
class Peer:
    """One SMTP peer of `kind` listening on address:port, served by a thread; start() it."""

    kind: str
    address: str
    port: int
    certs: Certificates
    name: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    hellos: list[ClientHello] = field(default_factory=list)  # every one the recorder saw
    failed_handshakes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.kind}.peer.test"
        self.ctx = server_context(self.kind, self.certs)
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._server: socket.socket | None = None

    def start(self) -> Peer:
        self._server = socket.create_server((self.address, self.port))
        self.port = self._server.getsockname()[1]  # the one given, or the kernel's for 0
        self._server.settimeout(0.2)  # how soon close() is noticed
        threading.Thread(target=self._serve, name=f"peer-{self.kind}", daemon=True).start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._server:
            self._server.close()

    def __enter__(self) -> Peer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait(self, subject: str, timeout: float) -> Delivery:
        """The delivery with this subject, once it arrived; TimeoutError naming the peer when it
        has not within `timeout` seconds."""
        end = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((d for d in self.deliveries if d.subject == subject), None)
                if found:
                    return found
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{self.name} ({self.address}:{self.port}): no {subject!r} after "
                        f"{timeout:.0f} s; got {[d.subject for d in self.deliveries]}, "
                        f"failed handshakes {self.failed_handshakes}, errors {self.errors}"
                    )
                self._changed.wait(left)

    def _serve(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                conn, addr = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            threading.Thread(target=self._one, args=(conn, addr[0]), daemon=True).start()

    def _one(self, conn: socket.socket, client: str) -> None:
        conn.settimeout(TIMEOUT)
        try:
            self._session(conn, client)
        except (OSError, ConnectionError, wire.Malformed) as exc:
            with self._changed:
                self.errors.append(f"{client}: {type(exc).__name__}: {exc}")
                self._changed.notify_all()

    def _session(self, conn: socket.socket, client: str) -> None:
        sock: socket.socket = conn
        lines = _Lines(sock)
        tls: Tls | None = None
        hello: ClientHello | None = None
        sender: str | None = None
        recipients: list[str] = []

        def reply(code: int, *text: str) -> None:
            last = len(text) - 1
            sock.sendall(
                b"".join(
                    f"{code}{' ' if i == last else '-'}{t}\r\n".encode() for i, t in enumerate(text)
                )
            )

        try:
            reply(220, f"{self.name} ESMTP mailtls test peer ({self.kind})")
            while True:
                line = lines.readline().decode("utf-8", "replace")
                verb, _, arg = line.partition(" ")
                verb = verb.upper()
                if verb == "EHLO":
                    sender, recipients = None, []
                    offer = ["STARTTLS"] if self.ctx and tls is None else []
                    reply(250, self.name, "8BITMIME", *offer, "ENHANCEDSTATUSCODES")
                elif verb == "HELO":
                    sender, recipients = None, []
                    reply(250, f"{self.name}")
                elif verb == "STARTTLS" and self.ctx and tls is None:
                    if lines.pending:  # RFC 3207: nothing may follow STARTTLS before the handshake
                        reply(501, "5.5.1 STARTTLS must be the last command of its packet")
                        continue
                    reply(220, "2.0.0 Ready to start TLS")
                    if self.kind == "recorder":
                        hello = peek_client_hello(sock)
                        with self._changed:
                            self.hellos.append(hello)
                    try:
                        sock = self.ctx.wrap_socket(sock, server_side=True)
                    except (ssl.SSLError, OSError) as exc:
                        with self._changed:
                            self.failed_handshakes.append(f"{client}: {exc}")
                            self._changed.notify_all()
                        return
                    assert isinstance(sock, ssl.SSLSocket)
                    tls = Tls(sock.version() or "?", (sock.cipher() or ("?",))[0])
                    lines, sender, recipients = _Lines(sock), None, []
                elif verb == "MAIL" and arg.upper().startswith("FROM:"):
                    sender, recipients = arg[5:].split()[0] if arg[5:].split() else "", []
                    reply(250, "2.1.0 Ok")
                elif verb == "RCPT" and arg.upper().startswith("TO:") and sender is not None:
                    recipients.append(arg[3:].strip())
                    reply(250, "2.1.5 Ok")
                elif verb == "DATA" and recipients:
                    reply(354, "End data with <CR><LF>.<CR><LF>")
                    data = self._data(lines)
                    headers = BytesHeaderParser().parsebytes(data)
                    delivery = Delivery(
                        self.kind,
                        client,
                        sender or "",
                        tuple(recipients),
                        str(headers.get("Subject", "")),
                        str(headers.get("Message-ID", "")),
                        tls,
                        hello,
                        data,
                    )
                    with self._changed:
                        self.deliveries.append(delivery)
                        self._changed.notify_all()
                    sender, recipients = None, []
                    reply(250, "2.0.0 Ok: queued")
                elif verb == "RSET":
                    sender, recipients = None, []
                    reply(250, "2.0.0 Ok")
                elif verb == "NOOP":
                    reply(250, "2.0.0 Ok")
                elif verb == "QUIT":
                    reply(221, "2.0.0 Bye")
                    return
                elif verb in ("MAIL", "RCPT", "DATA"):
                    reply(503, "5.5.1 Bad sequence of commands")
                else:
                    reply(502, "5.5.2 Command not recognized")
        finally:
            sock.close()  # the TLS socket once there is one: it owns the connection
            conn.close()

    @staticmethod
    def _data(lines: _Lines) -> bytes:
        """The message up to the lone dot, dot-unstuffed, CRLF line ends; at most MAX_MESSAGE."""
        out: list[bytes] = []
        size = 0
        while (line := lines.readline(limit=MAX_MESSAGE)) != b".":
            size += len(line) + 2
            if size > MAX_MESSAGE:
                raise ConnectionError(f"a message of over {MAX_MESSAGE} bytes")
            out.append(line[1:] if line.startswith(b".") else line)
        return b"\r\n".join(out) + b"\r\n"
