"""Scan a mail host's TLS ports from the controller: accepted suites and groups by folding
(tasks/audit/fold.py), sslyze for the rest, then our own probes (tasks/audit/probes.py) for what
sslyze does not measure.

All ports of a host go into ONE sslyze Scanner run (it scans them in parallel), and beside it
the folds of every port that gets as far as a TLS handshake, FOLD_WORKERS connections at a time. scanner="sslyze" has sslyze
enumerate the suites too, one handshake each: the reference the folds are held to in tests. The
result is a list of tasks.audit.verdict.PortScan, judged by tasks.audit.verdict.judge_host.

    >>> hs = scan_host("10.213.0.2")            # doctest: +SKIP
    >>> [(p.port, p.state) for p in hs.ports]   # doctest: +SKIP
    [(25, 'open'), (587, 'closed'), ...]
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache, partial
from operator import attrgetter
from typing import Any

from nassl.ephemeral_key_info import EcDhEphemeralKeyInfo, OpenSslEvpPkeyEnum
from nassl.ssl_client import OpenSslDigestNidEnum, SslClient
from sslyze import (
    ClientAuthRequirementEnum,
    ProtocolWithOpportunisticTlsEnum,
    ScanCommand,
    Scanner,
    ServerNetworkConfiguration,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanResult,
    ServerTlsProbingResult,
    TlsVersionEnum,
)
from sslyze.errors import (
    ConnectionToServerFailed,
    ServerHostnameCouldNotBeResolved,
    ServerRejectedTlsHandshake,
)
from sslyze.plugins.elliptic_curves_plugin import SupportedEllipticCurvesScanResult
from sslyze.plugins.session_resumption.implementation import TlsResumptionSupportEnum
from sslyze.scanner.scan_command_attempt import ScanCommandAttemptStatusEnum
from sslyze.server_connectivity import ServerConnectivityInfo

from tasks.assets import FILES
from tasks.audit.fold import fold_groups, fold_suites, info_for, reached
from tasks.audit.injection import probe_starttls_injection
from tasks.audit.probes import (
    _ip,
    _retry,
    probe_pq_hybrid,
    probe_resumption,
    probe_server_order,
)
from tasks.audit.verdict import AcceptedSuite, Certificate, PortScan
from tasks.policy import PORTS

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
SUITE_VERSIONS = {  # scan command -> the version its fold offers
    ScanCommand.SSL_2_0_CIPHER_SUITES: TlsVersionEnum.SSL_2_0,
    ScanCommand.SSL_3_0_CIPHER_SUITES: TlsVersionEnum.SSL_3_0,
    ScanCommand.TLS_1_0_CIPHER_SUITES: TlsVersionEnum.TLS_1_0,
    ScanCommand.TLS_1_1_CIPHER_SUITES: TlsVersionEnum.TLS_1_1,
    ScanCommand.TLS_1_2_CIPHER_SUITES: TlsVersionEnum.TLS_1_2,
    ScanCommand.TLS_1_3_CIPHER_SUITES: TlsVersionEnum.TLS_1_3,
}
# What tasks/audit/fold.py enumerates (the fast scanner); sslyze keeps the rest, where one or a
# few handshakes answer (certificate and its validation, renegotiation, resumption, ...).
FOLDED = frozenset(SUITE_COMMANDS) | {ScanCommand.ELLIPTIC_CURVES}
REST = frozenset(
    {
        ScanCommand.SESSION_RENEGOTIATION,
        ScanCommand.CERTIFICATE_INFO,
        ScanCommand.SESSION_RESUMPTION,
        ScanCommand.TLS_COMPRESSION,
        ScanCommand.TLS_EXTENDED_MASTER_SECRET,
    }
)
COMMANDS = FOLDED | REST
# What the fold scanner leaves to sslyze: its SESSION_RESUMPTION takes some twenty connections a
# port, our own probe (probes.probe_resumption) four.
FOLD_REST = REST - {ScanCommand.SESSION_RESUMPTION}
SCANNERS = ("fold", "sslyze")  # fold: FOLDED by folding, REST by sslyze; sslyze: all by sslyze
# Fold connections open at once per host, whatever its ports: Dovecot forks a login process per
# connection, and a burst over its limits costs timeouts that are then retried.
FOLD_WORKERS = 4
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


@dataclass
class HostScan:
    address: str
    ports: list[PortScan] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the enumeration (sslyze and folds, all ports, retries)
    scanner: str = "fold"
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


def _configuration(address: str, port: int) -> ServerNetworkConfiguration:
    """How every connection to `port` is made: SNI, the port's STARTTLS, timeouts."""
    starttls = PORTS[port].starttls
    return ServerNetworkConfiguration(
        tls_server_name_indication=address,
        tls_opportunistic_encryption=OPT_TLS[starttls] if starttls else None,
        network_timeout=10,
        network_max_retries=2,
    )


def _request(address: str, ip: str, port: int, commands=COMMANDS) -> ServerScanRequest:
    return ServerScanRequest(
        server_location=ServerNetworkLocation(hostname=address, port=port, ip_address=ip),
        network_configuration=_configuration(address, port),
        scan_commands=set(commands),
    )


# A TLS 1.2 ClientHello whose signature_algorithms offer only SHA-1 (internet.nl's "hash
# function for key exchange" test, NCSC 3.3.5): a server that answers signs its key exchange
# with SHA-1. TLS 1.3 has no SHA-1 signature scheme: a port without TLS 1.2 is not probed.
SHA1_SIGALGS = [
    (OpenSslDigestNidEnum.SHA1, OpenSslEvpPkeyEnum.EC),
    (OpenSslDigestNidEnum.SHA1, OpenSslEvpPkeyEnum.RSA),
    (OpenSslDigestNidEnum.SHA1, OpenSslEvpPkeyEnum.DSA),
]
# What sslyze would have found first: the probe names its own TLS version.
_PROBED_TLS12 = ServerTlsProbingResult(
    highest_tls_version_supported=TlsVersionEnum.TLS_1_2,
    cipher_suite_supported="",
    client_auth_requirement=ClientAuthRequirementEnum.DISABLED,
    supports_ecdh_key_exchange=True,
)


def probe_sha1_key_exchange(address: str, ip: str, port: int) -> tuple[bool | None, str]:
    """(True, note) if the server signs a TLS 1.2 key exchange with SHA-1 when that is all the
    client offers, (False, note) if it refuses the handshake, (None, why) if it could not tell
    (STARTTLS as the port speaks it; sslyze's own client, bounded by its network timeout)."""
    request = _request(address, ip, port, ())
    info = ServerConnectivityInfo(
        server_location=request.server_location,
        network_configuration=request.network_configuration,
        tls_probing_result=_PROBED_TLS12,
    )
    conn = info.get_preconfigured_tls_connection(
        override_tls_version=TlsVersionEnum.TLS_1_2, should_use_legacy_openssl=False
    )
    client = conn.ssl_client
    if not isinstance(client, SslClient):  # the legacy build has no signature_algorithms
        return None, "no modern OpenSSL client"
    client.set_signature_algorithms(SHA1_SIGALGS)
    try:
        conn.connect()
        nid = client.get_peer_signature_nid()
        return nid == OpenSslDigestNidEnum.SHA1, f"signed with {nid.name}"
    except ServerRejectedTlsHandshake as exc:
        return False, f"refused ({exc.error_message})"
    except (ConnectionToServerFailed, OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


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
        port=port, service=PORTS[port].service, state="open", ip=ip, retries=max(g.runs - 1, 0)
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
                    dh_group=dh_group(key.prime) if hasattr(key, "prime") else None,
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


# The RFC 7919 groups the deploy does not ship (files/dh has 2048-4096 bits), by the X of each
# in the RFC's appendix A; rfc7919_prime() makes their primes. A server may still serve them.
RFC7919_X = {6144: 15705020, 8192: 10965728}


def rfc7919_prime(bits: int, x: int) -> int:
    """The prime of RFC 7919's `bits`-bit group (its appendix A): p = 2^b - 2^(b-64) +
    {[2^(b-130) e] + X} * 2^64 - 1, [.] the floor; e to b - 130 bits, from its series."""
    guard = 64
    total, term, n = 0, 1 << (bits - 130 + guard), 0
    while term:
        total, n = total + term, n + 1
        term //= n
    return 2**bits - 2 ** (bits - 64) + ((total >> guard) + x) * 2**64 - 1


@cache
def _known_primes() -> dict[int, str]:
    """The primes of the RFC 7919 groups: those the deploy ships (files/dh/ffdheBITS.pem), and
    the larger ones (RFC7919_X)."""
    from cryptography.hazmat.primitives.serialization import load_pem_parameters

    out = {rfc7919_prime(bits, x): f"ffdhe{bits}" for bits, x in RFC7919_X.items()}
    for pem in sorted((FILES / "dh").glob("ffdhe*.pem")):
        numbers = load_pem_parameters(pem.read_bytes()).parameter_numbers()
        out[numbers.p] = pem.stem
    return out


def dh_group(prime: bytes) -> str:
    """The name of the RFC 7919 group with this prime (big-endian bytes, as sslyze gives it),
    else 'custom' (a group of one's own, `openssl dhparam`).

    >>> from cryptography.hazmat.primitives.serialization import load_pem_parameters
    >>> p = load_pem_parameters((FILES / "dh" / "ffdhe3072.pem").read_bytes()).parameter_numbers().p
    >>> dh_group(p.to_bytes(384, "big")), dh_group(b"\\x17")
    ('ffdhe3072', 'custom')
    >>> dh_group(rfc7919_prime(8192, RFC7919_X[8192]).to_bytes(1024, "big"))
    'ffdhe8192'
    """
    return _known_primes().get(int.from_bytes(prime, "big"), "custom")


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
    commands: frozenset = COMMANDS,
) -> dict[tuple[str, int], _Gathered]:
    """All targets in one sslyze run, then what did not complete again (fewer connections).

    A port outside `expected` (None: all expected) that times out on connect is taken as
    filtered at once: waiting out a firewall's DROP three times would only slow the audit.
    """
    gathered = {t: _Gathered() for t in targets}
    pending = {t: set(commands) for t in targets}
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


def _has_ecdh(results: dict[str, Any]) -> bool:
    """Did the folds find an elliptic-curve key exchange (TLS 1.3, or an ECDHE suite)?"""
    return any(
        isinstance(a.ephemeral_key, EcDhEphemeralKeyInfo)
        for command in SUITE_COMMANDS
        if (r := results.get(command.value)) is not None
        for a in r.accepted_cipher_suites
    )


def _highest(results: dict[str, Any]) -> TlsVersionEnum | None:
    found = [
        version
        for command, version in SUITE_VERSIONS.items()
        if (r := results.get(command.value)) is not None and r.accepted_cipher_suites
    ]
    return max(found, key=attrgetter("value")) if found else None


def _fold_into(g: _Gathered, command: ScanCommand, fold) -> None:
    """Run one fold; its result, or why it did not complete, goes where sslyze's would."""
    try:
        g.results[command.value] = fold()
    except Exception as exc:  # as sslyze does with a plugin's error: incomplete, not a crash
        g.errors[command.value] = f"fold: {type(exc).__name__}: {exc}"


def run_folds(
    address: str,
    targets: list[tuple[str, int]],
    workers: int = FOLD_WORKERS,
) -> dict[tuple[str, int], _Gathered]:
    """FOLDED for every target that answers TLS, by folding: the suites of each version, then
    the groups at the highest version found, `workers` connections at a time for the whole
    host. A target that does not answer gets nothing (sslyze's run says why)."""
    gathered = {t: _Gathered() for t in targets}
    infos = {(ip, p): info_for(address, ip, p, _configuration(address, p)) for ip, p in targets}
    tls13 = ScanCommand.TLS_1_3_CIPHER_SUITES
    with ThreadPoolExecutor(workers) as pool:
        first = dict(zip(targets, pool.map(lambda t: reached(infos[t]), targets), strict=True))
        reachable = [t for t, result in first.items() if result is not None]
        for t in reachable:
            gathered[t].runs = 1
            gathered[t].results[tls13.value] = first[t]
        jobs = [(t, c, v) for t in reachable for c, v in SUITE_VERSIONS.items() if c != tls13]
        list(
            pool.map(
                lambda job: _fold_into(
                    gathered[job[0]], job[1], partial(fold_suites, infos[job[0]], job[2])
                ),
                jobs,
            )
        )

        def groups(t: tuple[str, int]) -> None:
            g = gathered[t]
            version = _highest(g.results)
            if version is None or not _has_ecdh(g.results):
                g.results[ScanCommand.ELLIPTIC_CURVES.value] = SupportedEllipticCurvesScanResult(
                    supports_ecdh_key_exchange=False, supported_curves=None, rejected_curves=None
                )
                return
            _fold_into(g, ScanCommand.ELLIPTIC_CURVES, partial(fold_groups, infos[t], version))

        list(pool.map(groups, reachable))
    return gathered


def run_fold_scan(
    address: str, targets: list[tuple[str, int]], expected: tuple[int, ...] | None
) -> dict[tuple[str, int], _Gathered]:
    """sslyze's run of FOLD_REST beside the folds of FOLDED, merged. A target sslyze reached
    that the folds did not (a hiccup on their connectivity check) is folded again after."""
    with ThreadPoolExecutor(1) as side:
        rest = side.submit(run_sslyze, address, targets, expected=expected, commands=FOLD_REST)
        folded = run_folds(address, targets)
        gathered = rest.result()
    missed = [t for t, g in gathered.items() if g.connectivity is None and not folded[t].runs]
    folded.update(run_folds(address, missed) if missed else {})
    for t, g in gathered.items():
        if g.connectivity is None:
            g.results.update(folded[t].results)
            g.errors.update(folded[t].errors)
            if not folded[t].runs:
                g.errors.update(dict.fromkeys((c.value for c in FOLDED), "fold: not reached"))
    return gathered


def _probe(address: str, server_order: bool, scan: PortScan) -> None:
    """Our own probes of one open port but the PQ one: resumption, SHA-1 key exchange, order."""
    probe_resumption(scan, address)
    if "TLSv1.2" in scan.protocols:
        scan.sha1_key_exchange, scan.sha1_key_exchange_note = _retry(
            partial(probe_sha1_key_exchange, address, _ip(scan), scan.port)
        )
    if server_order:
        scan.server_order, scan.server_order_note = _retry(
            partial(probe_server_order, _ip(scan), scan.port)
        )
        if scan.server_order is None and "TLSv1.2" in scan.protocols:
            scan.incomplete.append(
                f"server order probe did not complete ({scan.server_order_note})"
            )


def _probe_injection(address: str, target: tuple[str, int]) -> tuple[bool | None, str]:
    ip, port = target
    service = PORTS[port].starttls
    assert service is not None
    return _retry(partial(probe_starttls_injection, ip, port, service, address))


def _probe_pq(scan: PortScan) -> None:
    scan.pq_hybrid, scan.pq_note = _retry(partial(probe_pq_hybrid, _ip(scan), scan.port))
    if scan.pq_hybrid is None:
        scan.incomplete.append(f"hybrid PQ probe did not complete ({scan.pq_note})")


def scan_host(
    address: str,
    ports: tuple[int, ...] = tuple(PORTS),
    pq: bool = True,
    server_order: bool = False,
    expected: tuple[int, ...] | None = None,
    scanner: str = "fold",
) -> HostScan:
    """Scan `ports` on every address of `address`; unresolvable -> every port in state 'error'.

    server_order: also probe whether a client preferring DHE still gets ECDHE (legacy-dhe).
    expected: the ports that must answer (the others are not waited for when filtered).
    scanner: "fold" enumerates suites and groups by folding (tasks/audit/fold.py), "sslyze"
    with sslyze's one handshake per suite (the reference the folds are tested against).
    """
    if scanner not in SCANNERS:
        raise ValueError(f"scanner {scanner!r}: one of {', '.join(SCANNERS)}")
    host = HostScan(address, scanner=scanner)
    try:
        host.ips = addresses_of(address)
    except (OSError, ServerHostnameCouldNotBeResolved) as exc:
        host.ports = [
            PortScan(p, PORTS[p].service, "error", f"cannot resolve {address}: {exc}")
            for p in ports
        ]
        return host
    targets = [(ip, p) for ip in host.ips for p in ports]
    # The injection probes mostly wait (injection.WAIT for an answer that should not come):
    # they run beside the enumeration, and count only for the ports it finds open.
    starttls = [t for t in targets if PORTS[t[1]].starttls]
    with ThreadPoolExecutor(max(len(starttls), 1)) as side:
        injections = {t: side.submit(_probe_injection, address, t) for t in starttls}
        start = time.monotonic()
        if scanner == "sslyze":
            gathered = run_sslyze(address, targets, expected=expected)
        else:
            gathered = run_fold_scan(address, targets, expected)
        host.seconds = time.monotonic() - start
        host.ports = [port_scan(p, ip, gathered[(ip, p)]) for ip, p in targets]
        for scan in host.ports:
            target = (_ip(scan), scan.port) if scan.ip else None
            if scan.state == "open" and target in injections:
                found, note = injections[target].result()
                scan.starttls_injection, scan.starttls_injection_note = found, note
                if found is None:
                    scan.incomplete.append(f"STARTTLS injection probe did not complete ({note})")
    open_ports = [scan for scan in host.ports if scan.state == "open"]
    # The probes of different ports at once, FOLD_WORKERS connections for the host as the folds.
    with ThreadPoolExecutor(FOLD_WORKERS) as pool:
        start = time.monotonic()
        list(pool.map(partial(_probe, address, server_order), open_ports))
        host.probe_seconds = time.monotonic() - start
        start = time.monotonic()
        if pq:
            list(pool.map(_probe_pq, open_ports))
        host.pq_seconds = time.monotonic() - start
    return host
