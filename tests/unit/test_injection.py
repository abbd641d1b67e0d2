"""The STARTTLS command injection probe (tasks/audit/injection.py) against fake mail servers on
loopback, for smtp, imap and pop3: one that runs what was buffered behind STARTTLS inside TLS
(vulnerable, CVE-2011-0411), one that discards it (correct), one that refuses the pipelined
STARTTLS but not a plain one, one that refuses STARTTLS, and ones that stall the dialogue."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from loopback import Loopback
from selfsigned import self_signed

from tasks.audit.injection import PIPELINED, probe_starttls_injection

# Only keeps a regression from hanging the suite; the bounded tests assert their own limits.
HANG = 60

T = TypeVar("T")

GREETING = {
    "smtp": b"220 fake.test ESMTP\r\n",
    "imap": b"* OK [CAPABILITY IMAP4rev1 STARTTLS] fake.test ready\r\n",
    "pop3": b"+OK fake.test ready\r\n",
}
GO_AHEAD = {
    "smtp": b"220 2.0.0 Ready to start TLS\r\n",
    "imap": b"a OK Begin TLS negotiation now\r\n",
    "pop3": b"+OK Begin TLS negotiation\r\n",
}
REFUSED = {
    "smtp": b"454 4.7.0 TLS not available due to local problem\r\n",
    "imap": b"a NO STARTTLS unavailable\r\n",
    "pop3": b"-ERR TLS not available\r\n",
}
NO_PIPELINING = {
    "smtp": b"554 5.5.1 Error: command pipelining after STARTTLS\r\n",
    "imap": b"a BAD command pipelined after STARTTLS\r\n",
    "pop3": b"-ERR command pipelined after STLS\r\n",
}
# The reply to the injected command (RSET, b NOOP, NOOP) and, inside TLS, to anything else.
ANSWER = {
    "smtp": b"250 2.0.0 Ok\r\n",
    "imap": b"b OK NOOP completed\r\n",
    "pop3": b"+OK\r\n",
}
SERVICES = ("smtp", "imap", "pop3")


@pytest.fixture(scope="module")
def server_ctx(tmp_path_factory) -> ssl.SSLContext:
    """A server context with a throwaway self-signed certificate."""
    d: Path = tmp_path_factory.mktemp("injection")
    now = datetime.datetime.now(datetime.UTC)
    cert, key = self_signed(
        ec.generate_private_key(ec.SECP256R1()),
        "fake.test",
        now - datetime.timedelta(days=1),
        now + datetime.timedelta(days=1),
    )
    (d / "c.pem").write_bytes(cert)
    (d / "k.pem").write_bytes(key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "c.pem", d / "k.pem")
    return ctx


def read_line(conn: socket.socket, data: bytes = b"") -> tuple[bytes, bytes]:
    """(the first line, what came after it in the same reads): a buffering server's input."""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("client closed")
        data += chunk
    line, _, rest = data.partition(b"\n")
    return line + b"\n", rest


class FakeMail:
    """A loopback mail server in a thread. mode: "vulnerable" (runs the commands buffered after
    STARTTLS inside TLS), "correct" (discards them), "no-pipelining" (refuses a STARTTLS with
    something behind it, accepts one alone), "tls-eats-buffer" (fails the handshake behind
    injected bytes, as Dovecot does), "no-tls" (fails every handshake after STARTTLS),
    "refuse" (refuses STARTTLS), "silent" (sends
    nothing), "trickle" (a greeting one byte at a time, never a line end), "trickle-handshake"
    (accepts STARTTLS, then sends its TLS handshake one byte at a time)."""

    def __init__(self, service: str, mode: str, ctx: ssl.SSLContext):
        self.service, self.mode, self.ctx = service, mode, ctx
        self.buffered: list[bytes] = []  # what followed each STARTTLS line in the same read
        self.answered: list[bytes] = []  # replies to buffered commands, sent inside TLS
        self.inside: list[bytes] = []  # commands the client itself sent inside TLS
        # Each read bounded: a fake left behind by a failing probe must not live on.
        self.loop = Loopback(self._dialogue, timeout=10)
        self.port, self.stop = self.loop.port, self.loop.stop

    def _dialogue(self, conn: socket.socket) -> None:
        service = self.service
        if self.mode == "silent":
            self.stop.wait(10)
            return
        if self.mode == "trickle":
            while not self.stop.is_set():
                conn.sendall(b"2")
                time.sleep(0.1)
            return
        conn.sendall(GREETING[service])
        if service == "smtp":
            read_line(conn)  # EHLO
            conn.sendall(b"250-fake.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
        _, rest = read_line(conn)  # the STARTTLS line, and what came with it
        self.buffered.append(rest)
        if self.mode == "refuse":
            conn.sendall(REFUSED[service])
            return
        if self.mode == "no-pipelining" and rest:
            conn.sendall(NO_PIPELINING[service])
            return
        conn.sendall(GO_AHEAD[service])
        if self.mode == "no-tls" or (self.mode == "tls-eats-buffer" and rest):
            # Dovecot's way: the bytes behind STARTTLS are read as the start of the handshake,
            # which fails; "no-tls" fails every handshake.
            return
        if self.mode == "trickle-handshake":
            # A 16 kB handshake record, its body one byte at a time: no read ever times out.
            conn.sendall(b"\x16\x03\x03\x40\x00")
            while not self.stop.is_set():
                conn.sendall(b"\x00")
                time.sleep(0.1)
            return
        with self.ctx.wrap_socket(conn, server_side=True) as tls:
            if self.mode == "vulnerable":
                # The bug: the input buffer survives the switch to TLS, and its commands run as
                # if the client had sent them inside the session.
                while b"\n" in rest:
                    _, rest = read_line(tls, rest)
                    tls.sendall(ANSWER[service])
                    self.answered.append(ANSWER[service])
            # RFC 3207 4.2: a correct server forgets `rest` and waits for the client.
            data = b""
            while True:
                line, data = read_line(tls, data)
                self.inside.append(line)
                if line.split()[-1:] in ([b"QUIT"], [b"LOGOUT"]):
                    return
                tls.sendall(ANSWER[service])

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def fake(server_ctx):
    """fake(service, mode) -> FakeMail, closed after the test."""
    made: list[FakeMail] = []

    def make(service: str, mode: str) -> FakeMail:
        made.append(FakeMail(service, mode, server_ctx))
        return made[-1]

    yield make
    for server in made:
        server.close()


def bounded(call: Callable[[], T]) -> tuple[T, float]:
    """(call(), seconds it took), call() run in a thread; fail if it is not done after HANG."""
    values: list[T] = []
    start = time.monotonic()
    thread = threading.Thread(target=lambda: values.append(call()), daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), f"still waiting after {HANG} s"
    assert values, "the probe raised (see the thread's traceback above)"
    return values[0], time.monotonic() - start


def injected(service: str) -> bytes:
    """What the probe sends behind STARTTLS: the fakes must have found it in their buffer."""
    return PIPELINED[service].split(b"\n", 1)[1]


@pytest.mark.parametrize("service", SERVICES)
def test_a_server_that_runs_the_buffered_command_inside_tls_is_vulnerable(fake, service):
    server = fake(service, "vulnerable")
    (value, note), _ = bounded(lambda: probe_starttls_injection("127.0.0.1", server.port, service))
    # The fake really got the injected command with STARTTLS, and really answered it in TLS.
    assert server.buffered == [injected(service)]
    assert server.answered == [ANSWER[service]]
    assert value is True, note
    assert ANSWER[service].decode().strip() in note


@pytest.mark.parametrize("service", SERVICES)
def test_a_server_that_discards_the_buffer_is_not_vulnerable(fake, service):
    server = fake(service, "correct")
    (value, note), took = bounded(
        lambda: probe_starttls_injection("127.0.0.1", server.port, service, "fake.test")
    )
    assert value is False, note
    # The injection was sent (so the False means something) and nothing was answered.
    assert server.buffered == [injected(service)]
    assert server.answered == []
    # The probe sent nothing inside TLS before its wait, then said goodbye.
    time.sleep(0.2)  # the fake reads the goodbye in its own thread
    assert len(server.inside) == 1 and server.inside[0].split()[-1] in (b"QUIT", b"LOGOUT")
    assert took >= 1.5  # it did wait for an answer


@pytest.mark.parametrize("service", SERVICES)
def test_a_server_that_refuses_pipelining_after_starttls_is_not_vulnerable(fake, service):
    server = fake(service, "no-pipelining")
    (value, note), _ = bounded(lambda: probe_starttls_injection("127.0.0.1", server.port, service))
    assert value is False, note
    assert "plain one accepted" in note
    # First the pipelined STARTTLS, then the plain one on a second connection.
    assert server.buffered == [injected(service), b""]


@pytest.mark.parametrize("service", SERVICES)
def test_a_server_that_refuses_starttls_cannot_tell(fake, service):
    server = fake(service, "refuse")
    (value, note), _ = bounded(lambda: probe_starttls_injection("127.0.0.1", server.port, service))
    assert value is None
    assert REFUSED[service].decode().strip() in note
    assert len(server.buffered) == 2  # the plain STARTTLS was tried too


@pytest.mark.parametrize("mode", ["silent", "trickle"])
def test_a_stalling_server_costs_a_bounded_cannot_tell(fake, mode):
    server = fake("smtp", mode)
    (value, note), took = bounded(
        lambda: probe_starttls_injection("127.0.0.1", server.port, "smtp", timeout=1)
    )
    assert value is None
    assert "no smtp dialogue up to STARTTLS" in note
    # silent: the 1 s read timeout; trickle: the whole-dialogue deadline, 2 x 1 + 1.5 s.
    assert took < 5, f"{took:.1f} s"


@pytest.mark.parametrize("service", SERVICES)
def test_a_handshake_that_never_ends_costs_a_bounded_cannot_tell(fake, service):
    # No single read ever times out. The handshake is bounded all the same: CPython bounds a
    # whole handshake call by the socket timeout, and the probe's deadline bounds it too.
    server = fake(service, "trickle-handshake")
    (value, note), took = bounded(
        lambda: probe_starttls_injection("127.0.0.1", server.port, service, timeout=1)
    )
    assert value is None
    assert "no TLS handshake" in note
    assert took < 5, f"{took:.1f} s"


def test_no_server_cannot_tell():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again at once: nothing listens on it
    value, note = probe_starttls_injection("127.0.0.1", port, "smtp", timeout=1)
    assert value is None and "no connection" in note


def test_an_unknown_service_is_a_caller_error():
    with pytest.raises(ValueError, match="no STARTTLS dialogue"):
        probe_starttls_injection("127.0.0.1", 1, "http")


@pytest.mark.parametrize("service", SERVICES)
def test_a_server_that_fails_the_handshake_behind_injected_bytes_is_not_vulnerable(fake, service):
    server = fake(service, "tls-eats-buffer")
    (value, note), _ = bounded(
        lambda: probe_starttls_injection("127.0.0.1", server.port, service, "fake.test")
    )
    assert value is False, note
    assert "after a plain one, TLS" in note
    # The pipelined attempt, then a plain one with a handshake, on a second connection.
    assert server.buffered == [injected(service), b""]
    assert server.answered == []


@pytest.mark.parametrize("service", SERVICES)
def test_a_server_that_fails_every_handshake_cannot_tell(fake, service):
    server = fake(service, "no-tls")
    (value, note), _ = bounded(
        lambda: probe_starttls_injection("127.0.0.1", server.port, service, "fake.test")
    )
    assert value is None, note
    assert "no TLS handshake after STARTTLS" in note
