"""Scan a mail host's TLS ports from the controller: sslyze as a library, plus a hybrid-PQ probe.

All ports of a host go into ONE sslyze Scanner run (it scans them in parallel). The result is a
list of tasks.audit.verdict.PortScan, judged by tasks.audit.verdict.judge_host.

    >>> hs = scan_host("10.213.0.2")            # doctest: +SKIP
    >>> [(p.port, p.state) for p in hs.ports]   # doctest: +SKIP
    [(25, 'open'), (587, 'closed'), ...]

Hybrid PQ: nassl's OpenSSL (1.1/1.0) cannot offer X25519MLKEM768, and the controller's own
OpenSSL is 3.0. probe_pq_hybrid() instead sends a hand-built TLS 1.3 ClientHello that lists
only X25519MLKEM768 with no key share: a server that supports the group must answer with a
HelloRetryRequest selecting it (RFC 8446 4.1.4); any other answer means it does not. No key
material is needed, and the handshake is dropped right after the server's first message.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sslyze import (
    ProtocolWithOpportunisticTlsEnum,
    ScanCommand,
    Scanner,
    ServerNetworkConfiguration,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanResult,
)
from sslyze.errors import ServerHostnameCouldNotBeResolved
from sslyze.plugins.session_resumption.implementation import TlsResumptionSupportEnum
from sslyze.scanner.scan_command_attempt import ScanCommandAttemptStatusEnum

from tasks.audit.bounded import MAX_LINE, MAX_LINES, MAX_RECORD, Malformed, deadline
from tasks.audit.psk_probe import ProbeError, probe_psk_modes
from tasks.audit.verdict import MAIL_PORTS, AcceptedSuite, Certificate, PortScan, Resumed

OPT_TLS = {
    "smtp": ProtocolWithOpportunisticTlsEnum.SMTP,
    "imap": ProtocolWithOpportunisticTlsEnum.IMAP,
    "pop3": ProtocolWithOpportunisticTlsEnum.POP3,
}
SUITE_COMMANDS = {  # scan command -> protocol name as tasks.policy spells it
    ScanCommand.SSL_2_0_CIPHER_SUITES: "SSLv2",
    ScanCommand.SSL_3_0_CIPHER_SUITES: "SSLv3",
    ScanCommand.TLS_1_0_CIPHER_SUITES: "TLSv1",
    ScanCommand.TLS_1_1_CIPHER_SUITES: "TLSv1.1",
    ScanCommand.TLS_1_2_CIPHER_SUITES: "TLSv1.2",
    ScanCommand.TLS_1_3_CIPHER_SUITES: "TLSv1.3",
}
COMMANDS = frozenset(SUITE_COMMANDS) | {
    ScanCommand.SESSION_RENEGOTIATION,
    ScanCommand.ELLIPTIC_CURVES,
    ScanCommand.CERTIFICATE_INFO,
    ScanCommand.SESSION_RESUMPTION,
    ScanCommand.TLS_COMPRESSION,
    ScanCommand.TLS_EXTENDED_MASTER_SECRET,
}
# Connectivity errors that mean "nothing listens here" rather than "TLS is broken here".
CLOSED_ERRORS = {"ServerRejectedConnection", "ConnectionToServerTimedOut"}
# Not worth a retry: a refused TCP connection or STARTTLS is an answer, not a hiccup.
FINAL_ERRORS = {"ServerRejectedConnection", "ServerRejectedOpportunisticTlsNegotiation"}
# Dovecot forks a login process per handshake and sslyze opens several at once: a timeout or a
# reset under that load is retried, after a pause and one connection per port at a time, before
# anything is judged. Only what still fails after these counts as incomplete.
RETRY_DELAYS = (3.0, 10.0)
FIRST_RUN_LIMITS = {
    "per_server_concurrent_connections_limit": 5,
    "concurrent_server_scans_limit": 10,
}
RETRY_LIMITS = {"per_server_concurrent_connections_limit": 1, "concurrent_server_scans_limit": 2}
X25519MLKEM768 = 0x11EC
HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")


@dataclass
class HostScan:
    address: str
    ports: list[PortScan] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the sslyze runs (all ports, retries included)
    pq_seconds: float = 0.0
    probe_seconds: float = 0.0  # resumption and server-order probes
    ips: list[str] = field(default_factory=list)


@dataclass
class _Gathered:
    """What the sslyze runs found for one (ip, port), merged across retries."""

    results: dict[str, Any] = field(default_factory=dict)  # command value -> sslyze result
    errors: dict[str, str] = field(default_factory=dict)  # command value -> last error
    connectivity: tuple[str, str] | None = None  # (exception type, text) when never connected
    runs: int = 0


def _request(address: str, ip: str, port: int, commands=COMMANDS) -> ServerScanRequest:
    starttls = MAIL_PORTS[port][1]
    config = ServerNetworkConfiguration(
        tls_server_name_indication=address,
        tls_opportunistic_encryption=OPT_TLS[starttls] if starttls else None,
        network_timeout=10,
        network_max_retries=2,
    )
    return ServerScanRequest(
        server_location=ServerNetworkLocation(hostname=address, port=port, ip_address=ip),
        network_configuration=config,
        scan_commands=set(commands),
    )


def _trace_text(trace) -> str:
    if trace is None:
        return "unknown error"
    return f"{trace.exc_type.__name__}: {''.join(trace.format_exception_only()).strip()}"


def absorb(g: _Gathered, result: ServerScanResult, commands, final_errors=FINAL_ERRORS) -> set:
    """Merge one sslyze result into `g`; return the commands still to retry."""
    g.runs += 1
    if result.scan_result is None:
        trace = result.connectivity_error_trace
        kind = trace.exc_type.__name__ if trace else "unknown"
        g.connectivity = (kind, _trace_text(trace))
        return set() if kind in final_errors else set(commands)
    g.connectivity = None
    pending = set()
    for command in commands:
        attempt = getattr(result.scan_result, command.value)
        if attempt.status == ScanCommandAttemptStatusEnum.COMPLETED:
            g.results[command.value] = attempt.result
            g.errors.pop(command.value, None)
        elif attempt.status == ScanCommandAttemptStatusEnum.ERROR:
            g.errors[command.value] = (
                f"{attempt.error_reason.value if attempt.error_reason else 'ERROR'}: "
                f"{_trace_text(attempt.error_trace)}"
            )
            pending.add(command)
    return pending


def _resumed(value) -> bool | None:
    if value in (
        TlsResumptionSupportEnum.FULLY_SUPPORTED,
        TlsResumptionSupportEnum.PARTIALLY_SUPPORTED,
    ):
        return True
    return False if value == TlsResumptionSupportEnum.NOT_SUPPORTED else None


def _certificate(deployment) -> Certificate:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    chain = deployment.received_certificate_chain
    leaf = chain[0]
    key = leaf.public_key()
    try:
        names = leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    cns = [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    hash_alg = leaf.signature_hash_algorithm
    return Certificate(
        subject=leaf.subject.rfc4514_string(),
        names=list(names) or [str(c) for c in cns],
        key_type=type(key).__name__.removesuffix("PublicKey").removeprefix("_"),
        key_bits=getattr(key, "key_size", None)
        or getattr(getattr(key, "curve", None), "key_size", None),
        signature_hash=hash_alg.name if hash_alg else None,
        not_after=leaf.not_valid_after_utc.isoformat(),
        chain_length=len(chain),
        chain_in_order=deployment.received_chain_has_valid_order,
        trusted=any(r.was_validation_successful for r in deployment.path_validation_results),
    )


def port_scan(port: int, ip: str | None, g: _Gathered) -> PortScan:
    """Build a PortScan from what sslyze returned (after the retries). Pure: fake results work."""
    scan = PortScan(
        port=port, service=MAIL_PORTS[port][0], state="open", ip=ip, retries=max(g.runs - 1, 0)
    )
    if g.connectivity is not None:
        kind, text = g.connectivity
        scan.state = (
            "closed"
            if kind in CLOSED_ERRORS
            else ("no-tls" if kind == "ServerRejectedOpportunisticTlsNegotiation" else "error")
        )
        scan.error = text
        return scan
    scan.incomplete = [f"{name} did not complete ({why})" for name, why in sorted(g.errors.items())]
    r = g.results
    for command, proto in SUITE_COMMANDS.items():
        suites = r.get(command.value)
        if suites is None:
            continue
        if suites.accepted_cipher_suites:
            scan.protocols.append(proto)
        for a in suites.accepted_cipher_suites:
            key = a.ephemeral_key
            scan.suites.append(
                AcceptedSuite(
                    protocol=proto,
                    name=a.cipher_suite.name,
                    openssl_name=a.cipher_suite.openssl_name,
                    kex_type=key.type_name if key else None,
                    group=getattr(key, "curve_name", None),
                    key_bits=key.size if key else None,
                )
            )
    reneg = r.get(ScanCommand.SESSION_RENEGOTIATION.value)
    if reneg is not None:
        scan.secure_renegotiation = reneg.supports_secure_renegotiation
        scan.client_renegotiation = reneg.is_vulnerable_to_client_renegotiation_dos
    curves = r.get(ScanCommand.ELLIPTIC_CURVES.value)
    if curves is not None and curves.supported_curves is not None:
        scan.curves = [c.name for c in curves.supported_curves]
    compression = r.get(ScanCommand.TLS_COMPRESSION.value)
    if compression is not None:
        scan.compression = compression.supports_compression
    ems = r.get(ScanCommand.TLS_EXTENDED_MASTER_SECRET.value)
    if ems is not None:
        scan.extended_master_secret = ems.supports_ems_extension
    resumption = r.get(ScanCommand.SESSION_RESUMPTION.value)
    if resumption is not None:
        scan.resumption.tls12_session_id = _resumed(resumption.session_id_resumption_result)
        scan.resumption.tls12_ticket = _resumed(resumption.tls_ticket_resumption_result)
    cert = r.get(ScanCommand.CERTIFICATE_INFO.value)
    if cert is not None and cert.certificate_deployments:
        scan.certificate = _certificate(cert.certificate_deployments[0])
        scan.cert_key_type, scan.cert_key_bits = (
            scan.certificate.key_type,
            scan.certificate.key_bits,
        )
    return scan


def _ip(scan: PortScan) -> str:
    """The address `scan` was made on (always set on a port that answered)."""
    if scan.ip is None:
        raise ValueError(f"port {scan.port}: no address scanned")
    return scan.ip


def addresses_of(address: str) -> list[str]:
    """Every address `address` resolves to (IPv4 and IPv6), in resolver order, each once."""
    infos = socket.getaddrinfo(address, None, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def run_sslyze(
    address: str,
    targets: list[tuple[str, int]],
    delays=RETRY_DELAYS,
    scanner_factory=Scanner,
    sleep=time.sleep,
    expected: tuple[int, ...] | None = None,
) -> dict[tuple[str, int], _Gathered]:
    """All targets in one sslyze run, then what did not complete again (fewer connections).

    A port outside `expected` (None: all expected) that times out on connect is taken as
    filtered at once: waiting out a firewall's DROP three times would only slow the audit.
    """
    gathered = {t: _Gathered() for t in targets}
    pending = {t: set(COMMANDS) for t in targets}
    for attempt, delay in enumerate((0.0, *delays)):
        if not pending:
            break
        if delay:
            sleep(delay)
        scanner = scanner_factory(**(RETRY_LIMITS if attempt else FIRST_RUN_LIMITS))
        scanner.queue_scans(
            [_request(address, ip, port, cmds) for (ip, port), cmds in pending.items()]
        )
        results = {
            (r.server_location.ip_address, r.server_location.port): r for r in scanner.get_results()
        }
        pending = {
            t: left
            for t, cmds in pending.items()
            if (
                left := absorb(
                    gathered[t],
                    results[t],
                    cmds,
                    FINAL_ERRORS
                    if expected is None or t[1] in expected
                    else FINAL_ERRORS | {"ConnectionToServerTimedOut"},
                )
            )
        }
    return gathered


def scan_host(
    address: str,
    ports: tuple[int, ...] = tuple(MAIL_PORTS),
    pq: bool = True,
    server_order: bool = False,
    expected: tuple[int, ...] | None = None,
) -> HostScan:
    """Scan `ports` on every address of `address`; unresolvable -> every port in state 'error'.

    server_order: also probe whether a client preferring DHE still gets ECDHE (legacy-dhe).
    expected: the ports that must answer (the others are not waited for when filtered).
    """
    host = HostScan(address)
    try:
        host.ips = addresses_of(address)
    except (OSError, ServerHostnameCouldNotBeResolved) as exc:
        host.ports = [
            PortScan(p, MAIL_PORTS[p][0], "error", f"cannot resolve {address}: {exc}")
            for p in ports
        ]
        return host
    targets = [(ip, p) for ip in host.ips for p in ports]
    start = time.monotonic()
    gathered = run_sslyze(address, targets, expected=expected)
    host.seconds = time.monotonic() - start
    host.ports = [port_scan(p, ip, gathered[(ip, p)]) for ip, p in targets]
    start = time.monotonic()
    for scan in host.ports:
        if scan.state == "open":
            probe_resumption(scan, address)
            if server_order:
                scan.server_order, scan.server_order_note = _retry(
                    partial(probe_server_order, _ip(scan), scan.port)
                )
                if scan.server_order is None and "TLSv1.2" in scan.protocols:
                    scan.incomplete.append(
                        f"server order probe did not complete ({scan.server_order_note})"
                    )
    host.probe_seconds = time.monotonic() - start
    start = time.monotonic()
    for scan in host.ports:
        if pq and scan.state == "open":
            scan.pq_hybrid, scan.pq_note = _retry(partial(probe_pq_hybrid, _ip(scan), scan.port))
            if scan.pq_hybrid is None:
                scan.incomplete.append(f"hybrid PQ probe did not complete ({scan.pq_note})")
    host.pq_seconds = time.monotonic() - start
    return host


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


def _client_context(version: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the certificate is judged from sslyze's CERTIFICATE_INFO
    ctx.minimum_version = ctx.maximum_version = version
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
            service = MAIL_PORTS[port][1]
            if service:
                _starttls(sock, service)
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
    ip: str, port: int, server_name: str, version: ssl.TLSVersion
) -> tuple[bool | None, bool, int | None]:
    """(resumed, ticket issued, lifetime hint) from two connections sharing one client context."""
    ctx = _client_context(version)
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
    ssl (OpenSSL offers psk_dhe_ke). sslyze's SESSION_RESUMPTION gave the TLS 1.2 results."""
    res: Resumed = scan.resumption
    for proto, version in (
        ("TLSv1.2", ssl.TLSVersion.TLSv1_2),
        ("TLSv1.3", ssl.TLSVersion.TLSv1_3),
    ):
        if proto not in scan.protocols:
            continue
        outcome, why = None, ""
        for delay in (0.0, 1.0, 3.0):
            time.sleep(delay)
            try:
                outcome = _resume_once(_ip(scan), scan.port, server_name, version)
                break
            except (OSError, ssl.SSLError, ConnectionError) as exc:
                why = f"{type(exc).__name__}: {exc}"
        if outcome is None:
            scan.incomplete.append(f"{proto} resumption probe did not complete ({why})")
            continue
        resumed, issued, hint = outcome
        if proto == "TLSv1.2":
            res.tls12_ticket_issued, res.tls12_lifetime_hint = issued, hint
            if res.tls12_ticket is None:
                res.tls12_ticket = resumed and issued
        else:
            res.tls13, res.tls13_lifetime_hint = resumed, hint
            res.tls13_psk_ke_only = _psk_ke(scan, server_name)


def _psk_ke(scan: PortScan, server_name: str) -> str | None:
    """What a client offering only psk_ke gets (None: no ticket to offer); retried like the rest."""
    service = MAIL_PORTS[scan.port][1]
    why = ""
    for delay in (0.0, 1.0, 3.0):
        time.sleep(delay)
        try:
            result = probe_psk_modes(
                _ip(scan),
                scan.port,
                (lambda sock: _starttls(sock, service)) if service else None,
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


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")  # an OSError, like timeouts
        data += chunk
    return data


def _read_lines_until(sock: socket.socket, done) -> str:
    """Read CRLF lines until done(line) is true; returns that line. Byte-wise: TLS follows.
    A line over MAX_LINE bytes or more than MAX_LINES lines is no mail server's dialogue."""
    line, lines = b"", 0
    while True:
        c = _recv_exact(sock, 1)
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


def _starttls(sock: socket.socket, service: str) -> None:
    """Run the plaintext dialogue up to the TLS handshake; raise ConnectionError when refused."""
    if service == "smtp":
        _read_lines_until(sock, lambda line: line[:4] == "220 ")
        sock.sendall(b"EHLO audit.mailtls.invalid\r\n")
        _read_lines_until(sock, lambda line: line[3:4] == " ")
        sock.sendall(b"STARTTLS\r\n")
        reply = _read_lines_until(sock, lambda line: line[3:4] == " ")
        ok = reply.startswith("220")
    elif service == "imap":
        _read_lines_until(sock, lambda line: line.startswith("* "))
        sock.sendall(b"a STARTTLS\r\n")
        ok = _read_lines_until(sock, lambda line: line.startswith("a ")).startswith("a OK")
    else:
        _read_lines_until(sock, lambda line: True)
        sock.sendall(b"STLS\r\n")
        ok = _read_lines_until(sock, lambda line: True).startswith("+OK")
    if not ok:
        raise ConnectionError(f"{service} STARTTLS refused")


def pq_client_hello(group: int = X25519MLKEM768) -> bytes:
    """A TLS 1.3 ClientHello record offering only `group`, with an empty key_share."""

    def ext(kind: int, body: bytes) -> bytes:
        return struct.pack("!HH", kind, len(body)) + body

    sigalgs = b"".join(
        struct.pack("!H", a)
        for a in (
            0x0804,
            0x0805,
            0x0806,
            0x0403,
            0x0503,
            0x0603,
            0x0807,
            0x0808,
            0x0401,
            0x0501,
            0x0601,
        )
    )
    exts = (
        ext(43, b"\x02\x03\x04")  # supported_versions: TLS 1.3
        + ext(10, struct.pack("!HH", 2, group))  # supported_groups
        + ext(51, b"\x00\x00")  # key_share: none, so the server must ask (HRR)
        + ext(13, struct.pack("!H", len(sigalgs)) + sigalgs)
    )
    suites = struct.pack("!HHHH", 6, 0x1301, 0x1302, 0x1303)
    body = b"\x03\x03" + os.urandom(32) + b"\x20" + os.urandom(32) + suites + b"\x01\x00"
    body += struct.pack("!H", len(exts)) + exts
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


def parse_pq_answer(record: bytes, group: int = X25519MLKEM768) -> tuple[bool, str]:
    """Judge the server's first TLS record: (supported, explanation). Raises Malformed when a
    HelloRetryRequest is cut short or its lengths do not add up."""
    try:
        return _parse_pq_answer(record, group)
    except (IndexError, struct.error) as exc:
        raise Malformed(f"malformed answer to the probe ({len(record)} bytes: {exc})") from exc


def _parse_pq_answer(record: bytes, group: int) -> tuple[bool, str]:
    if record[:1] == b"\x15":
        return (
            False,
            f"server refused the group (TLS alert {record[6] if len(record) > 6 else '?'})",
        )
    if record[:1] != b"\x16" or record[5:6] != b"\x02":
        return False, "unexpected answer to the probe"
    random = record[11:43]
    if random != HRR_RANDOM:
        return False, "server answered without HelloRetryRequest"
    pos = 43
    pos += 1 + record[pos]  # session id
    pos += 3  # cipher suite, compression
    end = pos + 2 + struct.unpack("!H", record[pos : pos + 2])[0]
    if end > len(record):
        raise IndexError("extensions run past the record")
    pos += 2
    while pos + 4 <= end:
        kind, size = struct.unpack("!HH", record[pos : pos + 4])
        if kind == 51:
            chosen = struct.unpack("!H", record[pos + 4 : pos + 6])[0]
            if chosen == group:
                return True, "HelloRetryRequest selected X25519MLKEM768"
            return False, f"HelloRetryRequest selected group 0x{chosen:04x}"
        pos += 4 + size
    return False, "HelloRetryRequest without key_share"


def probe_pq_hybrid(ip: str, port: int, timeout: float = 5) -> tuple[bool | None, str]:
    """Does `ip:port` accept X25519MLKEM768? (True/False, why); (None, why) when the probe failed."""
    starttls = MAIL_PORTS[port][1]
    try:
        sock = socket.create_connection((ip, port), timeout=timeout)
    except OSError as exc:
        return None, f"not checked: probe could not connect ({exc})"
    # The dialogue and the answer within 4 x timeout (a trickle never trips the read timeout).
    with sock, deadline(sock, 4 * timeout):
        try:
            if starttls:
                _starttls(sock, starttls)
            sock.sendall(pq_client_hello())
        except OSError as exc:
            return None, f"not checked: probe failed before the handshake ({exc})"
        try:
            head = _recv_exact(sock, 5)
            size = struct.unpack("!H", head[3:5])[0]
            if size > MAX_RECORD:
                return None, f"not checked: the server sent a {size}-byte TLS record"
            record = head + _recv_exact(sock, size)
        except OSError as exc:  # OpenSSL servers without the group may just hang up
            return False, f"no HelloRetryRequest: server ended the handshake ({exc})"
    try:
        return parse_pq_answer(record)
    except Malformed as exc:
        return None, f"not checked: {exc}"
