"""tests/peers.py on loopback: its ClientHello parser against ClientHellos made by our own
builder (tasks/audit/wire.py) and by OpenSSL (Python's ssl, a MemoryBIO client), the peek that
leaves the bytes for OpenSSL, and each peer kind taking a real message over smtplib. The
integration test's figures are only as good as these."""

from __future__ import annotations

import smtplib
import socket
import ssl
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import peers  # noqa: E402

from tasks.audit import wire  # noqa: E402

HANG = 30  # a bound that only keeps a regression from hanging the suite


def openssl_hello(**settings: object) -> bytes:
    """The first flight of a Python ssl client (the controller's OpenSSL), as it goes out."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    for key, value in settings.items():
        setattr(ctx, key, value)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(incoming, outgoing, server_hostname="peer.test")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def test_our_builders_client_hello_parses_to_what_it_offered():
    share = (wire.X25519, b"\x11" * 32)
    message = wire.client_hello((wire.X25519MLKEM768, wire.X25519, 0x17), shares=(share,))
    record = wire.record(message)
    hello = peers.parse_client_hello(record + b"trailing application bytes")
    assert hello.wire_bytes == len(record) and hello.records == 1
    assert hello.group_names == ("X25519MLKEM768", "x25519", "secp256r1")
    assert hello.key_share_names == ("x25519",)
    assert hello.versions == (0x0304,)
    assert not hello.needs_retry((wire.X25519, 0x17))
    assert hello.needs_retry((0x17,))  # a P-256-only server must ask again


def test_a_client_hello_split_over_two_records_counts_both():
    message = wire.client_hello((wire.X25519,), shares=((wire.X25519, b"\x22" * 32),))
    records = wire.record(message[:100]) + wire.record(message[100:])
    hello = peers.parse_client_hello(records)
    assert hello.records == 2 and hello.wire_bytes == len(records) == len(message) + 10
    assert hello.key_share_names == ("x25519",)
    with pytest.raises(peers.IncompleteHello):
        peers.parse_client_hello(records[:-1])
    with pytest.raises(peers.IncompleteHello):
        peers.parse_client_hello(records[: 5 + 100])  # the first record only


def test_openssls_own_client_hello():
    data = openssl_hello()
    hello = peers.parse_client_hello(data)
    assert hello.wire_bytes == len(data) and hello.records == 1
    assert {"x25519", "secp256r1", "secp384r1"} <= set(hello.group_names)
    assert hello.key_share_names == ("x25519",)  # OpenSSL 3.0's one share: its first group
    assert 0x0304 in hello.versions
    tls12 = peers.parse_client_hello(openssl_hello(maximum_version=ssl.TLSVersion.TLSv1_2))
    assert tls12.versions == () and tls12.key_shares == ()
    assert not tls12.needs_retry((wire.X25519,))  # TLS 1.2 has no retry


@pytest.mark.parametrize(
    "data",
    [b"\x17\x03\x03\x00\x10" + b"\0" * 16, wire.record(b"\x02\x00\x00\x00"), b"\x16\3\1\0\0"],
)
def test_what_is_no_client_hello_is_malformed(data):
    with pytest.raises(wire.Malformed) as exc:
        peers.parse_client_hello(data)
    assert not isinstance(exc.value, peers.IncompleteHello)


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(client, server) ends of a loopback TCP connection: MSG_WAITALL with MSG_PEEK waits on
    TCP, as the peers use it, not on a Unix socketpair."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        return client, server.accept()[0]


def test_the_peek_waits_for_the_whole_hello_and_leaves_it_queued():
    """A ClientHello in two TCP writes (the second after the peek started): the peek returns
    it whole, and a read afterwards still gets every byte, as OpenSSL will."""
    data = openssl_hello()
    a, b = tcp_pair()
    with a, b:
        b.settimeout(HANG)
        a.sendall(data[:7])
        later = threading.Timer(0.2, lambda: a.sendall(data[7:]))
        later.start()
        hello = peers.peek_client_hello(b, seconds=HANG)
        later.join()
        assert hello.wire_bytes == len(data)
        assert b.gettimeout() == HANG  # given back
        assert wire.recv_exact(b, len(data)) == data


def test_the_peek_gives_up_at_its_deadline():
    a, b = tcp_pair()
    with a, b:
        a.sendall(openssl_hello()[:50])  # and never the rest
        with pytest.raises(wire.ConnectionClosed):
            peers.peek_client_hello(b, seconds=0.3)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> peers.Certificates:
    return peers.Certificates.make(tmp_path_factory.mktemp("peers"))


def send(peer: peers.Peer, subject: str, ctx: ssl.SSLContext | None) -> None:
    """One message over smtplib as Postfix sends it: EHLO, STARTTLS when given a context, EHLO."""
    msg = f"From: a@client.test\r\nTo: b@{peer.name}\r\nSubject: {subject}\r\n\r\n.dot\r\nbody\r\n"
    with smtplib.SMTP(peer.address, peer.port, timeout=HANG) as smtp:
        smtp.ehlo("client.test")
        if ctx:
            smtp.starttls(context=ctx)
            smtp.ehlo("client.test")
        smtp.sendmail("a@client.test", ["b@" + peer.name], msg)


def client_context(**settings: object) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_ciphers("ALL:@SECLEVEL=1")  # offer what Postfix's `medium` list offers: RSA too
    for key, value in settings.items():
        setattr(ctx, key, value)
    return ctx


@pytest.mark.parametrize(
    "kind, version, cipher",
    [
        ("fs13", "TLSv1.3", "TLS_AES_256_GCM_SHA384"),
        ("fs12", "TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384"),
        ("rsa", "TLSv1.2", "AES256-GCM-SHA384"),
        ("recorder", "TLSv1.3", "TLS_AES_256_GCM_SHA384"),
    ],
)
def test_each_tls_peer_takes_a_message_in_its_own_stance(certs, kind, version, cipher):
    with peers.Peer(kind, "127.0.0.1", 0, certs) as peer:
        send(peer, f"unit {kind}", client_context())
        got = peer.wait(f"unit {kind}", timeout=HANG)
    assert got.tls == peers.Tls(version, cipher)
    assert got.recipients == (f"<b@{kind}.peer.test>",) and got.sender == "<a@client.test>"
    assert b"\r\n.dot\r\nbody\r\n" in got.data  # dot-unstuffed
    if kind == "recorder":
        assert got.hello is not None and got.hello.key_share_names == ("x25519",)
        assert peer.hellos == [got.hello]
    else:
        assert got.hello is None


def test_a_peer_refuses_a_client_outside_its_stance(certs):
    with peers.Peer("fs13", "127.0.0.1", 0, certs) as peer:
        with pytest.raises((ssl.SSLError, OSError)):
            send(peer, "unit tls12", client_context(maximum_version=ssl.TLSVersion.TLSv1_2))
        with pytest.raises(TimeoutError, match="no 'unit tls12'.*failed handshakes"):
            peer.wait("unit tls12", timeout=0.5)
    assert len(peer.failed_handshakes) == 1


def test_the_plain_peer_offers_no_starttls(certs):
    with peers.Peer("plain", "127.0.0.1", 0, certs) as peer:
        with pytest.raises(smtplib.SMTPNotSupportedError):
            send(peer, "unit plain tls", client_context())
        send(peer, "unit plain", None)
        got = peer.wait("unit plain", timeout=HANG)
    assert got.tls is None and got.subject == "unit plain"
