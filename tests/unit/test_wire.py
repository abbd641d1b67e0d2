"""The audit's own probes against hostile servers on loopback (safety review, round 3): a greeting
trickled one byte at a time without a newline, truncated or inconsistent TLS records. Each must
end in a named "could not tell" result within its bound, never hang or raise."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
from loopback import Loopback

from tasks.audit import probes, wire
from tasks.audit.psk_probe import ProbeError, probe_psk_modes
from tasks.policy import PORTS, Port

# A generous bound that only keeps a regression from hanging the suite: the assertions are on
# the result, not on the time.
HANG = 60

T = TypeVar("T")


@pytest.fixture
def hostile(monkeypatch):
    """hostile(behave, starttls) -> port: a server, known to the probes as a mail port."""
    made = []

    def make(behave, starttls: str | None = None) -> int:
        server = Loopback(behave)
        made.append(server)
        monkeypatch.setitem(
            PORTS, server.port, Port(server.port, "dovecot", "hostile", starttls, ())
        )
        return server.port

    yield make
    for server in made:
        server.close()


def trickle(conn: socket.socket) -> None:
    """A greeting one byte a second, never a newline, never an end."""
    while True:
        conn.sendall(b"2")
        time.sleep(0.5)


def answer(record: bytes, starttls: bool = False) -> Callable[[socket.socket], None]:
    """Answer the first thing the client sends with `record`, then close."""

    def behave(conn: socket.socket) -> None:
        if starttls:
            conn.sendall(b"220 hostile ESMTP\r\n")
            conn.recv(512)  # EHLO
            conn.sendall(b"250 hostile\r\n")
            conn.recv(512)  # STARTTLS
            conn.sendall(b"220 go ahead\r\n")
        conn.recv(4096)  # the ClientHello
        conn.sendall(record)

    return behave


def bounded(call: Callable[[], T]) -> T:
    """call() in a thread; fail if it has not returned after HANG seconds."""
    values: list[T] = []
    errors: list[Exception] = []

    def run() -> None:
        try:
            values.append(call())
        except Exception as exc:  # what the probe raised is the result under test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), f"still waiting after {HANG} s"
    if errors:
        raise errors[0]
    return values[0]


def _hrr(extensions: bytes, ext_length: int | None = None) -> bytes:
    """A ServerHello record with the HelloRetryRequest random and these raw extensions."""
    body = b"\x03\x03" + wire.HRR_RANDOM + b"\x00" + b"\x13\x01\x00"
    body += struct.pack("!H", len(extensions) if ext_length is None else ext_length) + extensions
    handshake = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + struct.pack("!H", len(handshake)) + handshake


TRUNCATED = [
    _hrr(b"\x00\x33\x00\x02", ext_length=40),  # extension lengths past the record's end
    _hrr(b"\x00\x33\x00\x02\x11"),  # key_share cut inside the group
    _hrr(b"")[:20],  # the record's header promises more than is sent
    b"\x16\x03\x03\x00\x00",  # an empty handshake record
    b"\x16\x03\x03\x00\x05\x02\x00\x00\x01",  # a ServerHello cut after its header
    b"\x17" * 64,  # garbage
]


def test_a_trickled_greeting_ends_the_pq_probe_with_a_named_result(hostile):
    port = hostile(trickle, "smtp")
    value, note = bounded(lambda: probes.probe_pq_hybrid("127.0.0.1", port, timeout=2))
    assert value is None and note.startswith("not checked"), note


@pytest.mark.parametrize("record", TRUNCATED)
def test_a_malformed_answer_to_the_pq_probe_is_not_checked_not_a_crash(hostile, record):
    port = hostile(answer(record))
    value, note = bounded(lambda: probes.probe_pq_hybrid("127.0.0.1", port, timeout=2))
    assert value in (None, False), (value, note)
    assert note, note


def test_a_truncated_hello_retry_request_is_named(hostile):
    port = hostile(answer(TRUNCATED[0], starttls=True), "smtp")
    value, note = bounded(lambda: probes.probe_pq_hybrid("127.0.0.1", port, timeout=2))
    assert value is None and "malformed" in note, note


def test_a_trickled_greeting_ends_the_resumption_probe(hostile):
    port = hostile(trickle, "smtp")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(OSError):
        bounded(lambda: probes._tls_connect(ctx, "127.0.0.1", port, "x", timeout=2))


def test_an_endless_greeting_line_is_refused(hostile):
    def flood(conn: socket.socket) -> None:
        while True:
            conn.sendall(b"2" * 1024)

    port = hostile(flood, "smtp")
    value, note = bounded(lambda: probes.probe_pq_hybrid("127.0.0.1", port, timeout=2))
    assert value is None and "line of over" in note, note


@pytest.mark.parametrize("record", TRUNCATED)
def test_malformed_answers_to_the_psk_probe_are_a_probe_error(hostile, record):
    port = hostile(answer(record))
    with pytest.raises(ProbeError):
        bounded(lambda: probe_psk_modes("127.0.0.1", port, timeout=2))


def test_a_trickled_greeting_ends_the_psk_probe(hostile):
    port = hostile(trickle, "smtp")
    with pytest.raises((ProbeError, OSError)):
        bounded(
            lambda: probe_psk_modes(
                "127.0.0.1", port, lambda sock: wire.starttls(sock, "smtp"), timeout=2
            )
        )


def test_deadline_bounds_a_handshake_after_wrap_socket(hostile):
    """wrap_socket() detaches the socket the deadline was set on: the deadline must still end a
    handshake that a server stalls (a record that never completes) well before
    the socket's own timeout."""

    def stall(conn: socket.socket) -> None:
        conn.recv(4096)  # the ClientHello
        conn.sendall(b"\x16\x03\x03")  # a handshake record's first bytes, never the rest
        time.sleep(HANG)

    port = hostile(stall)
    sock = socket.create_connection(("127.0.0.1", port), timeout=HANG)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    start = time.monotonic()
    with pytest.raises(OSError), wire.deadline(sock, 0.5):
        ctx.wrap_socket(sock).close()
    # The socket timeout (HANG) would end it otherwise: an order of magnitude between them.
    assert time.monotonic() - start < HANG / 4
