"""Does a server resume TLS 1.3 without a fresh (EC)DHE? A minimal TLS 1.3 client that can offer
only psk_ke, which no stock client does (OpenSSL always offers psk_dhe_ke, and psk_ke only next to
it, with -allow_no_dhe_kex).

    >>> probe_psk_modes("10.213.0.2", 465)                       # doctest: +SKIP
    {'ticket': True, 'psk_dhe_ke': 'resumed', 'psk_ke': 'full handshake'}

One full handshake (X25519, TLS_AES_128_GCM_SHA256) takes a session ticket; two more connections
offer it, once with psk_dhe_ke (the control: it must resume, which proves the PSK and binder are
right) and once with psk_ke alone. The answer is read from the ServerHello: a pre_shared_key
extension means the server resumed. Nothing is verified about the certificate: this measures
key exchange only, and no application data is sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tasks.audit import wire
from tasks.audit.wire import Malformed, deadline

PSK_KE, PSK_DHE_KE = 0, 1


class ProbeError(Exception):
    """The probe could not tell (connection, protocol or server error)."""


class MalformedAnswer(ProbeError):
    """What the server sent does not parse: the probe could not tell, it was not refused."""


# --- key schedule (RFC 8446 section 7.1), SHA-256 only --------------------------------------------


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def _expand_label(secret: bytes, label: str, context: bytes, length: int) -> bytes:
    full = b"tls13 " + label.encode()
    info = struct.pack("!H", length) + bytes([len(full)]) + full + bytes([len(context)]) + context
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([i]), hashlib.sha256).digest()
        out, i = out + block, i + 1
    return out[:length]


def _derive(secret: bytes, label: str, transcript: bytes) -> bytes:
    return _expand_label(secret, label, hashlib.sha256(transcript).digest(), 32)


def _finished(secret: bytes, transcript: bytes) -> bytes:
    return hmac.new(
        _expand_label(secret, "finished", b"", 32),
        hashlib.sha256(transcript).digest(),
        hashlib.sha256,
    ).digest()


# --- records ------------------------------------------------------------------------------------


class _Keys:
    def __init__(self, secret: bytes):
        self.aead = AESGCM(_expand_label(secret, "key", b"", 16))
        self.iv, self.seq = _expand_label(secret, "iv", b"", 12), 0

    def _nonce(self) -> bytes:
        nonce = bytes(a ^ b for a, b in zip(self.iv, self.seq.to_bytes(12, "big"), strict=True))
        self.seq += 1
        return nonce

    def open(self, header: bytes, body: bytes) -> tuple[int, bytes]:
        inner = self.aead.decrypt(self._nonce(), body, header).rstrip(b"\0")
        return inner[-1], inner[:-1]

    def seal(self, kind: int, data: bytes) -> bytes:
        header = struct.pack("!BHH", 23, 0x0303, len(data) + 1 + 16)
        return header + self.aead.encrypt(self._nonce(), data + bytes([kind]), header)


def _record(sock: socket.socket) -> tuple[int, bytes, bytes]:
    """The next record; an alert or the server hanging up is the server's answer (ProbeError)."""
    try:
        kind, header, body = wire.read_record(sock)
    except wire.ConnectionClosed as exc:
        raise ProbeError(str(exc)) from exc
    if kind == wire.ALERT:
        raise ProbeError(f"TLS alert {body[1] if len(body) > 1 else '?'}")
    return kind, header, body


class _Messages:
    """Handshake messages out of (decrypted) records; a message may span records."""

    def __init__(self):
        self.buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        out = []
        while len(self.buffer) >= 4:
            size = int.from_bytes(self.buffer[1:4], "big")
            if len(self.buffer) < 4 + size:
                break
            out.append(self.buffer[: 4 + size])
            self.buffer = self.buffer[4 + size :]
        return out


# --- messages -----------------------------------------------------------------------------------


@dataclass
class Ticket:
    ticket: bytes
    psk: bytes
    age_add: int
    received: float


def client_hello(
    share: bytes, server_name: str | None, modes: tuple[int, ...], ticket: Ticket | None = None
) -> bytes:
    """A ClientHello handshake message (X25519 share, TLS_AES_128_GCM_SHA256 only); with
    `ticket`, its pre_shared_key and binder, last."""
    psk, binder_len = b"", 0
    if ticket:
        age = (int((time.time() - ticket.received) * 1000) + ticket.age_add) % 2**32
        identity = struct.pack("!H", len(ticket.ticket)) + ticket.ticket + struct.pack("!I", age)
        binders = b"\x20" + bytes(32)
        psk = wire.ext(
            41,
            struct.pack("!H", len(identity)) + identity + struct.pack("!H", len(binders)) + binders,
        )
        binder_len = 2 + len(binders)
    msg = wire.client_hello(
        (wire.X25519,),
        shares=((wire.X25519, share),),
        suites=(wire.AES128_GCM_SHA256,),
        psk_modes=modes,
        server_name=server_name,
        last=psk,
    )
    if ticket:  # the binder signs the ClientHello up to the binders (RFC 8446 4.2.11.2)
        early = _extract(b"", ticket.psk)
        binder = _finished(_derive(early, "res binder", b""), msg[:-binder_len])
        msg = msg[:-32] + binder
    return msg


def _handshake(
    sock: socket.socket,
    server_name: str | None,
    modes: tuple[int, ...],
    ticket: Ticket | None = None,
    want_ticket: bool = False,
) -> tuple[bool, bool, Ticket | None]:
    """One TLS 1.3 handshake: (resumed, server sent a key share, new ticket if asked). What does
    not parse (short or inconsistent messages, records that do not decrypt) is MalformedAnswer."""
    try:
        return _handshake_steps(sock, server_name, modes, ticket, want_ticket)
    except (Malformed, IndexError, struct.error, InvalidTag) as exc:
        raise MalformedAnswer(f"malformed answer ({type(exc).__name__}: {exc})") from exc


def _handshake_steps(
    sock: socket.socket,
    server_name: str | None,
    modes: tuple[int, ...],
    ticket: Ticket | None,
    want_ticket: bool,
) -> tuple[bool, bool, Ticket | None]:
    key = X25519PrivateKey.generate()
    share = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    hello = client_hello(share, server_name, modes, ticket)
    sock.sendall(wire.record(hello))
    kind, _, body = _record(sock)
    while kind == 20:  # middlebox-compatibility ChangeCipherSpec
        kind, _, body = _record(sock)
    if kind != 22:
        raise ProbeError(f"unexpected record type {kind}")
    msgs = _Messages().feed(body)
    if not msgs:
        raise ProbeError("ServerHello split across records")
    if msgs[0][0] != 2:
        raise ProbeError(f"expected ServerHello, got handshake type {msgs[0][0]}")
    answer = wire.server_hello(msgs[0])
    if answer.suite != wire.AES128_GCM_SHA256:
        raise ProbeError(f"server chose suite 0x{answer.suite:04x}")
    if answer.retry:
        raise ProbeError("HelloRetryRequest")
    exts = answer.extensions
    resumed, has_share = 41 in exts, 51 in exts
    if not want_ticket:
        return resumed, has_share, None
    # Full handshake through to the server's tickets.
    transcript = hello + msgs[0]
    if not has_share:
        raise ProbeError("no key share in a full handshake")
    server_share = exts[51][4:]
    shared = key.exchange(X25519PublicKey.from_public_bytes(server_share))
    early = _extract(b"", ticket.psk if (ticket and resumed) else bytes(32))
    hs = _extract(_derive(early, "derived", b""), shared)
    c_hs, s_hs = _derive(hs, "c hs traffic", transcript), _derive(hs, "s hs traffic", transcript)
    master = _extract(_derive(hs, "derived", b""), bytes(32))
    server = _Keys(s_hs)
    parser = _Messages()
    for m in msgs[1:]:
        transcript += m
    finished = False
    while not finished:
        kind, header, body = _record(sock)
        if kind == 20:
            continue
        inner_type, plain = server.open(header, body)
        for m in parser.feed(plain):
            transcript += m
            finished = m[0] == 20
    s_ap = _derive(master, "s ap traffic", transcript)  # we send no application data: no c ap
    fin = b"\x14\x00\x00\x20" + _finished(c_hs, transcript)
    sock.sendall(_Keys(c_hs).seal(22, fin))
    transcript += fin
    res_master = _derive(master, "res master", transcript)
    app = _Keys(s_ap)
    parser = _Messages()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        kind, header, body = _record(sock)
        inner_type, plain = app.open(header, body)
        if inner_type != 22:
            continue  # a greeting (465, 993): not ours to read
        for m in parser.feed(plain):
            if m[0] == 4:  # NewSessionTicket
                age_add = struct.unpack("!I", m[8:12])[0]
                nlen = m[12]
                nonce = m[13 : 13 + nlen]
                pos = 13 + nlen
                tlen = struct.unpack("!H", m[pos : pos + 2])[0]
                psk = _expand_label(res_master, "resumption", nonce, 32)
                return (
                    resumed,
                    has_share,
                    Ticket(m[pos + 2 : pos + 2 + tlen], psk, age_add, time.time()),
                )
    return resumed, has_share, None


@contextlib.contextmanager
def _connect(ip: str, port: int, starttls, timeout: float) -> Iterator[socket.socket]:
    """A connection whose whole use (dialogue, handshake) ends within 3 x timeout."""
    sock = socket.create_connection((ip, port), timeout=timeout)
    with sock, deadline(sock, 3 * timeout):
        if starttls:
            starttls(sock)
        yield sock


def probe_psk_modes(
    ip: str, port: int, starttls=None, server_name: str | None = None, timeout: float = 10
) -> dict:
    """{'ticket': bool, 'psk_dhe_ke': outcome, 'psk_ke': outcome}; outcome is 'resumed',
    'resumed without (EC)DHE', 'full handshake' or 'refused: ...'. `starttls(sock)` runs the
    plaintext dialogue for STARTTLS ports. Raises ProbeError when the first handshake fails."""
    with _connect(ip, port, starttls, timeout) as sock:
        try:
            _, _, ticket = _handshake(sock, server_name, (PSK_DHE_KE,), want_ticket=True)
        except (OSError, ValueError) as exc:
            raise ProbeError(f"{type(exc).__name__}: {exc}") from exc
    result: dict[str, bool | str] = {"ticket": ticket is not None}
    if ticket is None:
        return result
    for name, modes in (("psk_dhe_ke", (PSK_DHE_KE,)), ("psk_ke", (PSK_KE,))):
        try:
            with _connect(ip, port, starttls, timeout) as sock:
                resumed, has_share, _ = _handshake(sock, server_name, modes, ticket)
            result[name] = (
                "full handshake"
                if not resumed
                else "resumed"
                if has_share
                else "resumed without (EC)DHE"
            )
        except MalformedAnswer:
            raise
        except ProbeError as exc:
            result[name] = f"refused: {exc}"
        except OSError as exc:
            raise ProbeError(f"{type(exc).__name__}: {exc}") from exc
    return result
