"""Scan a mail host's TLS ports from the controller: sslyze as a library, plus a hybrid-PQ probe.

All ports of a host go into ONE sslyze Scanner run (it scans them in parallel). The result is a
list of tasks.verdict.PortScan, judged by tasks.verdict.judge_host.

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
import struct
import time
from dataclasses import dataclass, field

from sslyze import (
    ProtocolWithOpportunisticTlsEnum,
    Scanner,
    ScanCommand,
    ServerNetworkConfiguration,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanResult,
)
from sslyze.errors import ServerHostnameCouldNotBeResolved

from tasks.verdict import MAIL_PORTS, AcceptedSuite, PortScan

OPT_TLS = {"smtp": ProtocolWithOpportunisticTlsEnum.SMTP, "imap": ProtocolWithOpportunisticTlsEnum.IMAP,
           "pop3": ProtocolWithOpportunisticTlsEnum.POP3}
SUITE_COMMANDS = {  # scan command -> protocol name as tasks.policy spells it
    ScanCommand.SSL_2_0_CIPHER_SUITES: "SSLv2", ScanCommand.SSL_3_0_CIPHER_SUITES: "SSLv3",
    ScanCommand.TLS_1_0_CIPHER_SUITES: "TLSv1", ScanCommand.TLS_1_1_CIPHER_SUITES: "TLSv1.1",
    ScanCommand.TLS_1_2_CIPHER_SUITES: "TLSv1.2", ScanCommand.TLS_1_3_CIPHER_SUITES: "TLSv1.3",
}
COMMANDS = set(SUITE_COMMANDS) | {ScanCommand.SESSION_RENEGOTIATION, ScanCommand.ELLIPTIC_CURVES,
                                  ScanCommand.CERTIFICATE_INFO}
# Connectivity errors that mean "nothing listens here" rather than "TLS is broken here".
CLOSED_ERRORS = {"ServerRejectedConnection", "ConnectionToServerTimedOut"}
X25519MLKEM768 = 0x11EC
HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")


@dataclass
class HostScan:
    address: str
    ports: list[PortScan] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the sslyze run (all ports)
    pq_seconds: float = 0.0


def _request(address: str, ip: str, port: int) -> ServerScanRequest:
    starttls = MAIL_PORTS[port][1]
    config = ServerNetworkConfiguration(
        tls_server_name_indication=address,
        tls_opportunistic_encryption=OPT_TLS[starttls] if starttls else None,
        network_timeout=10, network_max_retries=2)
    return ServerScanRequest(server_location=ServerNetworkLocation(hostname=address, port=port, ip_address=ip),
                             network_configuration=config, scan_commands=COMMANDS)


def _port_scan(result: ServerScanResult) -> PortScan:
    port = result.server_location.port
    scan = PortScan(port=port, service=MAIL_PORTS[port][0], state="open")
    if result.scan_result is None:
        trace = result.connectivity_error_trace
        kind = trace.exc_type.__name__ if trace else "unknown"
        scan.state = "closed" if kind in CLOSED_ERRORS else (
            "no-tls" if kind == "ServerRejectedOpportunisticTlsNegotiation" else "error")
        scan.error = f"{kind}: {''.join(trace.format_exception_only()).strip()}" if trace else kind
        return scan
    attempts = result.scan_result
    for command, proto in SUITE_COMMANDS.items():
        suites = getattr(attempts, command.value).result
        if suites is None:
            scan.error = f"{command.value} did not complete"
            continue
        if suites.accepted_cipher_suites:
            scan.protocols.append(proto)
        for a in suites.accepted_cipher_suites:
            key = a.ephemeral_key
            scan.suites.append(AcceptedSuite(
                protocol=proto, name=a.cipher_suite.name, openssl_name=a.cipher_suite.openssl_name,
                kex_type=key.type_name if key else None, group=getattr(key, "curve_name", None),
                key_bits=key.size if key else None))
    reneg = attempts.session_renegotiation.result
    if reneg is not None:
        scan.secure_renegotiation = reneg.supports_secure_renegotiation
        scan.client_renegotiation = reneg.is_vulnerable_to_client_renegotiation_dos
    curves = attempts.elliptic_curves.result
    if curves is not None and curves.supported_curves is not None:
        scan.curves = [c.name for c in curves.supported_curves]
    cert = attempts.certificate_info.result
    if cert is not None and cert.certificate_deployments:
        key = cert.certificate_deployments[0].received_certificate_chain[0].public_key()
        scan.cert_key_type = type(key).__name__.removesuffix("PublicKey").removeprefix("_")
        scan.cert_key_bits = getattr(key, "key_size", None) or getattr(getattr(key, "curve", None), "key_size", None)
    return scan


def resolve(address: str) -> str:
    """The IP sslyze and the probe connect to (the address itself when it already is one)."""
    return socket.getaddrinfo(address, None, proto=socket.IPPROTO_TCP)[0][4][0]


def scan_host(address: str, ports: tuple[int, ...] = tuple(MAIL_PORTS), pq: bool = True) -> HostScan:
    """Scan `ports` of `address` in one sslyze run; unresolvable -> every port in state 'error'."""
    host = HostScan(address)
    try:
        ip = resolve(address)
    except (OSError, ServerHostnameCouldNotBeResolved) as exc:
        host.ports = [PortScan(p, MAIL_PORTS[p][0], "error", f"cannot resolve {address}: {exc}") for p in ports]
        return host
    start = time.monotonic()
    scanner = Scanner()
    scanner.queue_scans([_request(address, ip, p) for p in ports])
    by_port = {r.server_location.port: _port_scan(r) for r in scanner.get_results()}
    host.seconds = time.monotonic() - start
    host.ports = [by_port[p] for p in ports]
    start = time.monotonic()
    for scan in host.ports:
        if pq and scan.state == "open":
            scan.pq_hybrid, scan.pq_note = probe_pq_hybrid(ip, scan.port)
    host.pq_seconds = time.monotonic() - start
    return host


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
    """Read CRLF lines until done(line) is true; returns that line. Byte-wise: TLS follows."""
    line = b""
    while True:
        c = _recv_exact(sock, 1)
        line += c
        if c == b"\n":
            text = line.decode(errors="replace").rstrip("\r\n")
            if done(text):
                return text
            line = b""


def _starttls(sock: socket.socket, service: str) -> None:
    """Run the plaintext dialogue up to the TLS handshake; raise ConnectionError when refused."""
    if service == "smtp":
        _read_lines_until(sock, lambda l: l[:4] == "220 ")
        sock.sendall(b"EHLO audit.mailtls.invalid\r\n")
        _read_lines_until(sock, lambda l: l[3:4] == " ")
        sock.sendall(b"STARTTLS\r\n")
        reply = _read_lines_until(sock, lambda l: l[3:4] == " ")
        ok = reply.startswith("220")
    elif service == "imap":
        _read_lines_until(sock, lambda l: l.startswith("* "))
        sock.sendall(b"a STARTTLS\r\n")
        ok = _read_lines_until(sock, lambda l: l.startswith("a ")).startswith("a OK")
    else:
        _read_lines_until(sock, lambda l: True)
        sock.sendall(b"STLS\r\n")
        ok = _read_lines_until(sock, lambda l: True).startswith("+OK")
    if not ok:
        raise ConnectionError(f"{service} STARTTLS refused")


def pq_client_hello(group: int = X25519MLKEM768) -> bytes:
    """A TLS 1.3 ClientHello record offering only `group`, with an empty key_share."""
    def ext(kind: int, body: bytes) -> bytes:
        return struct.pack("!HH", kind, len(body)) + body

    sigalgs = b"".join(struct.pack("!H", a) for a in (0x0804, 0x0805, 0x0806, 0x0403, 0x0503, 0x0603,
                                                      0x0807, 0x0808, 0x0401, 0x0501, 0x0601))
    exts = (ext(43, b"\x02\x03\x04")  # supported_versions: TLS 1.3
            + ext(10, struct.pack("!HH", 2, group))  # supported_groups
            + ext(51, b"\x00\x00")  # key_share: none, so the server must ask (HRR)
            + ext(13, struct.pack("!H", len(sigalgs)) + sigalgs))
    suites = struct.pack("!HHHH", 6, 0x1301, 0x1302, 0x1303)
    body = b"\x03\x03" + os.urandom(32) + b"\x20" + os.urandom(32) + suites + b"\x01\x00"
    body += struct.pack("!H", len(exts)) + exts
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


def parse_pq_answer(record: bytes, group: int = X25519MLKEM768) -> tuple[bool, str]:
    """Judge the server's first TLS record: (supported, explanation)."""
    if record[:1] == b"\x15":
        return False, f"server refused the group (TLS alert {record[6] if len(record) > 6 else '?'})"
    if record[:1] != b"\x16" or record[5:6] != b"\x02":
        return False, "unexpected answer to the probe"
    random = record[11:43]
    if random != HRR_RANDOM:
        return False, "server answered without HelloRetryRequest"
    pos = 43
    pos += 1 + record[pos]  # session id
    pos += 3  # cipher suite, compression
    end = pos + 2 + struct.unpack("!H", record[pos:pos + 2])[0]
    pos += 2
    while pos + 4 <= end:
        kind, size = struct.unpack("!HH", record[pos:pos + 4])
        if kind == 51:
            chosen = struct.unpack("!H", record[pos + 4:pos + 6])[0]
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
    with sock:
        try:
            if starttls:
                _starttls(sock, starttls)
            sock.sendall(pq_client_hello())
        except OSError as exc:
            return None, f"not checked: probe failed before the handshake ({exc})"
        try:
            head = _recv_exact(sock, 5)
            record = head + _recv_exact(sock, struct.unpack("!H", head[3:5])[0])
        except OSError as exc:  # OpenSSL servers without the group may just hang up
            return False, f"no HelloRetryRequest: server ended the handshake ({exc})"
    return parse_pq_answer(record)
