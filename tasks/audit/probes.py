"""Our own probes of one port, for what sslyze does not measure: TLS 1.3 and 1.2 resumption
and ticket lifetimes (Python's ssl), resumption offered with psk_ke alone (psk_probe.py),
whether a client preferring DHE still gets ECDHE, and the hybrid post-quantum group.

Hybrid PQ: nassl's OpenSSL (1.1/1.0) cannot offer X25519MLKEM768, and the controller's own
OpenSSL is 3.0. probe_pq_hybrid() instead sends a hand-built TLS 1.3 ClientHello that lists
only X25519MLKEM768 with no key share: a server that supports the group must answer with a
HelloRetryRequest selecting it (RFC 8446 4.1.4); any other answer means it does not. No key
material is needed, and the handshake is dropped right after the server's first message.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time

from tasks.audit import wire
from tasks.audit.psk_probe import ProbeError, probe_psk_modes
from tasks.audit.verdict import PortScan, Resumed
from tasks.audit.wire import X25519MLKEM768, Malformed, deadline
from tasks.policy import PORTS


def _ip(scan: PortScan) -> str:
    """The address `scan` was made on (always set on a port that answered)."""
    if scan.ip is None:
        raise ValueError(f"port {scan.port}: no address scanned")
    return scan.ip


def _retry(probe, delays=(1.0, 3.0)):
    """Run a (value, note) probe; while it returns None (could not tell), retry after a pause."""
    value, note = probe()
    for delay in delays:
        if value is not None:
            break
        time.sleep(delay)
        value, note = probe()
    return value, note


# --- our own probes: what sslyze does not measure ----------------------------------------------


def _client_context(
    version: ssl.TLSVersion, ciphers: str | None = None, tickets: bool = True
) -> ssl.SSLContext:
    """tickets=False: the client asks for no session ticket, so only the server's session
    cache (session IDs) can resume it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the certificate is judged from sslyze's CERTIFICATE_INFO
    ctx.minimum_version = ctx.maximum_version = version
    if not tickets:
        ctx.options |= ssl.OP_NO_TICKET
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def _tls_connect(
    ctx: ssl.SSLContext, ip: str, port: int, server_name: str, session=None, timeout: float = 10
) -> ssl.SSLSocket:
    """Connect, run the STARTTLS dialogue if the port has one, handshake, and read what the server
    sends first (a TLS 1.3 server's tickets come after the handshake)."""
    sock = socket.create_connection((ip, port), timeout=timeout)
    # The whole dialogue, handshake included, within 2 x timeout: a server trickling bytes
    # never trips the per-read timeout.
    with deadline(sock, 2 * timeout):
        try:
            service = PORTS[port].starttls
            if service:
                wire.starttls(sock, service)
            tls = ctx.wrap_socket(sock, server_hostname=server_name, session=session)
        except BaseException:
            sock.close()
            raise
        tls.settimeout(3)
        try:
            if service:  # the server waits for us after STARTTLS: ask something harmless
                tls.sendall(b"a NOOP\r\n" if service == "imap" else b"NOOP\r\n")
            tls.recv(512)
        except OSError:
            pass  # nothing to read is fine: only the session matters here
    return tls


def _resume_once(
    ip: str, port: int, server_name: str, version: ssl.TLSVersion, tickets: bool = True
) -> tuple[bool | None, bool, int | None]:
    """(resumed, ticket issued, lifetime hint) from two connections sharing one client context."""
    ctx = _client_context(version, tickets=tickets)
    with _tls_connect(ctx, ip, port, server_name) as first:
        session = first.session
    with _tls_connect(ctx, ip, port, server_name, session=session) as second:
        resumed = second.session_reused
    if session is None:  # no session from the first handshake: nothing could be resumed
        return False, False, None
    return (
        resumed,
        session.has_ticket,
        (session.ticket_lifetime_hint if session.has_ticket else None),
    )


def probe_resumption(scan: PortScan, server_name: str) -> None:
    """TLS 1.3 resumption and the lifetime hints (TLS 1.2 and 1.3) of `scan`'s port, with Python's
    ssl (OpenSSL offers psk_dhe_ke). The TLS 1.2 results that sslyze's SESSION_RESUMPTION gave
    are kept; where it did not run (the fold scanner), this probe makes them: tickets with a
    client that asks for them; session IDs from that same pair where the server issued no
    ticket, else with a client that asks for none."""
    res: Resumed = scan.resumption
    for proto, version, tickets in (
        ("TLSv1.2", ssl.TLSVersion.TLSv1_2, True),
        # Only where a ticket was issued: without one, the first pair resumed by session ID.
        ("TLSv1.2", ssl.TLSVersion.TLSv1_2, False),
        ("TLSv1.3", ssl.TLSVersion.TLSv1_3, True),
    ):
        if proto not in scan.protocols:
            continue
        if not tickets and (res.tls12_session_id is not None or not res.tls12_ticket_issued):
            continue
        outcome, why = None, ""
        for delay in (0.0, 1.0, 3.0):
            time.sleep(delay)
            try:
                outcome = _resume_once(_ip(scan), scan.port, server_name, version, tickets)
                break
            except (OSError, ssl.SSLError, ConnectionError) as exc:
                why = f"{type(exc).__name__}: {exc}"
        if outcome is None:
            scan.incomplete.append(f"{proto} resumption probe did not complete ({why})")
            continue
        resumed, issued, hint = outcome
        if not tickets:
            res.tls12_session_id = bool(resumed)
        elif proto == "TLSv1.2":
            if not issued and res.tls12_session_id is None:
                res.tls12_session_id = bool(resumed)
            res.tls12_ticket_issued, res.tls12_lifetime_hint = issued, hint
            if res.tls12_ticket is None:
                res.tls12_ticket = resumed and issued
        else:
            res.tls13, res.tls13_lifetime_hint = resumed, hint
            res.tls13_psk_ke_only = _psk_ke(scan, server_name)


def _psk_ke(scan: PortScan, server_name: str) -> str | None:
    """What a client offering only psk_ke gets (None: no ticket to offer); retried like the rest."""
    service = PORTS[scan.port].starttls
    why = ""
    for delay in (0.0, 1.0, 3.0):
        time.sleep(delay)
        try:
            result = probe_psk_modes(
                _ip(scan),
                scan.port,
                (lambda sock: wire.starttls(sock, service)) if service else None,
                server_name,
            )
            return result.get("psk_ke")
        except (ProbeError, OSError, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"
    scan.incomplete.append(f"TLSv1.3 psk_ke probe did not complete ({why})")
    return None


def probe_server_order(ip: str, port: int, timeout: float = 10) -> tuple[bool | None, str]:
    """Offer DHE before ECDHE in TLS 1.2: (True, ...) when the server still picks ECDHE."""
    ctx = _client_context(
        ssl.TLSVersion.TLSv1_2,
        "DHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256:"
        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256",
    )
    try:
        with _tls_connect(ctx, ip, port, ip, timeout=timeout) as tls:
            cipher = tls.cipher()
    except ssl.SSLError as exc:
        return None, f"no TLS 1.2 handshake with DHE and ECDHE offered ({exc.reason or exc})"
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if cipher is None:
        return None, "no cipher negotiated"
    chosen = cipher[0]
    if chosen.startswith("ECDHE-"):
        return True, f"client preferring DHE got {chosen}"
    return False, f"client preferring DHE got {chosen}"


# --- hybrid PQ probe -------------------------------------------------------------------------


def pq_client_hello(group: int = X25519MLKEM768) -> bytes:
    """A TLS 1.3 ClientHello record offering only `group`, with no key share."""
    return wire.record(wire.client_hello((group,)))


def parse_pq_answer(record: bytes, group: int = X25519MLKEM768) -> tuple[bool, str]:
    """Judge the server's first TLS record: (supported, explanation). Raises Malformed when a
    HelloRetryRequest is cut short or its lengths do not add up."""
    if record[:1] == bytes([wire.ALERT]):
        return (
            False,
            f"server refused the group (TLS alert {record[6] if len(record) > 6 else '?'})",
        )
    if record[:1] != bytes([wire.HANDSHAKE]) or record[5:6] != b"\x02":
        return False, "unexpected answer to the probe"
    try:
        hello = wire.server_hello(record[5:])
    except Malformed as exc:
        raise Malformed(f"malformed answer to the probe ({len(record)} bytes: {exc})") from exc
    if not hello.retry:
        return False, "server answered without HelloRetryRequest"
    share = hello.extensions.get(51)
    if share is None:
        return False, "HelloRetryRequest without key_share"
    if len(share) < 2:
        raise Malformed(f"malformed answer to the probe (a {len(share)}-byte key_share)")
    chosen = struct.unpack("!H", share[:2])[0]
    if chosen == group:
        return True, "HelloRetryRequest selected X25519MLKEM768"
    return False, f"HelloRetryRequest selected group 0x{chosen:04x}"


def probe_pq_hybrid(ip: str, port: int, timeout: float = 5) -> tuple[bool | None, str]:
    """Does `ip:port` accept X25519MLKEM768? (True/False, why); (None, why) when the probe failed."""
    starttls = PORTS[port].starttls
    try:
        sock = socket.create_connection((ip, port), timeout=timeout)
    except OSError as exc:
        return None, f"not checked: probe could not connect ({exc})"
    # The dialogue and the answer within 4 x timeout (a trickle never trips the read timeout).
    with sock, deadline(sock, 4 * timeout):
        try:
            if starttls:
                wire.starttls(sock, starttls)
            sock.sendall(pq_client_hello())
        except OSError as exc:
            return None, f"not checked: probe failed before the handshake ({exc})"
        try:
            _, header, body = wire.read_record(sock)
            record = header + body
        except Malformed as exc:
            return None, f"not checked: the server sent {exc}"
        except OSError as exc:  # OpenSSL servers without the group may just hang up
            return False, f"no HelloRetryRequest: server ended the handshake ({exc})"
    try:
        return parse_pq_answer(record)
    except Malformed as exc:
        return None, f"not checked: {exc}"
