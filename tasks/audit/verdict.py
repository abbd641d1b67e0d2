"""What an audit saw on each port, and the verdict against the host's resolved policy (the
same Policy the deploy applies). Pure: no I/O.

tasks/audit/scan.py fills PortScan from sslyze; judge_port() decides; tasks/audit/logreport.py reuses
classify_suite() so scans and logs call the same suite forward-secret or not.

    >>> from tasks.policy import HostCaps, resolve
    >>> policy = resolve("intermediate", HostCaps(postfix=None, dovecot=None, openssl=(3, 0, 15)))
    >>> scan = PortScan(port=25, service="smtp", state="open", protocols=["TLSv1", "TLSv1.2"],
    ...                 suites=[AcceptedSuite("TLSv1", "TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA")])
    >>> judge_port(scan, policy).failures
    ['accepts TLSv1 (floor TLSv1.2)', 'accepts TLS_RSA_WITH_AES_128_CBC_SHA (RSA key exchange, not forward-secret) on TLSv1']
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from tasks.policy import (
    MIN_DH_BITS,
    PORTS,
    PQ_HYBRID,
    PROTOCOLS,
    REQUIRED_PORTS,
    Policy,
    Resumption,
    protocols_at_least,
    ticket_window,
)

# A certificate this close to its end is a warning (expired is a failure).
CERT_WARN_DAYS = 21
# sslyze's group names for the policy's classic groups (prime256v1 is P-256 by either name).
_GROUP_ALIASES = {
    "secp256r1": "prime256v1",
    "P-256": "prime256v1",
    "P-384": "secp384r1",
    "x25519": "X25519",
}
# Old protocols sslyze can still test; below every floor.
ALL_PROTOCOLS = ("SSLv2", "SSLv3") + PROTOCOLS


@dataclass(frozen=True)
class SuiteClass:
    """How a suite agrees its keys: kex 'TLS1.3', 'ECDHE', 'DHE', 'RSA', 'anonymous', 'PSK', ..."""

    kex: str
    forward_secret: bool
    problem: str | None = None  # why not acceptable, for failure messages


_RFC_KEX = {  # RFC name part before _WITH_ -> class
    "ECDHE_RSA": "ECDHE",
    "ECDHE_ECDSA": "ECDHE",
    "DHE_RSA": "DHE",
    "DHE_DSS": "DHE",
}
_OPENSSL_PREFIX = (  # OpenSSL name prefix -> (kex, problem); first match wins
    ("ECDHE-PSK-", "PSK", "PSK key exchange"),
    ("DHE-PSK-", "PSK", "PSK key exchange"),
    ("RSA-PSK-", "PSK", "PSK key exchange"),
    ("PSK-", "PSK", "PSK key exchange"),
    ("SRP-", "SRP", "SRP key exchange"),
    ("EXP", "export", "export-grade"),
    ("ADH-", "anonymous", "anonymous, no authentication"),
    ("AECDH-", "anonymous", "anonymous, no authentication"),
    ("ECDHE-", "ECDHE", None),
    ("DHE-", "DHE", None),
    ("EDH-", "DHE", None),
    ("ECDH-", "static-ECDH", "static ECDH key exchange, not forward-secret"),
    ("DH-", "static-DH", "static DH key exchange, not forward-secret"),
)


def classify_suite(name: str) -> SuiteClass:
    """Classify a suite by its RFC or OpenSSL name.

    >>> classify_suite("ECDHE-RSA-AES128-GCM-SHA256").forward_secret
    True
    >>> classify_suite("TLS_DH_anon_WITH_AES_128_CBC_SHA").problem
    'anonymous, no authentication'
    """
    if "NULL" in re.split(r"[-_]", name.upper()):
        return SuiteClass("NULL", False, "NULL cipher, no encryption")
    if name.startswith(("TLS_", "SSL_")):
        kx, with_, _ = name[4:].partition("_WITH_")
        if not with_:  # TLS 1.3 suites name only the AEAD: (EC)DHE is built in
            return SuiteClass("TLS1.3", True)
        if "EXPORT" in kx:
            return SuiteClass("export", False, "export-grade")
        if "anon" in kx:
            return SuiteClass("anonymous", False, "anonymous, no authentication")
        if "PSK" in kx:
            return SuiteClass("PSK", False, "PSK key exchange")
        if kx in _RFC_KEX:
            return SuiteClass(_RFC_KEX[kx], True)
        if kx == "RSA":
            return SuiteClass("RSA", False, "RSA key exchange, not forward-secret")
        return SuiteClass(kx, False, f"{kx} key exchange, not forward-secret")
    for prefix, kex, problem in _OPENSSL_PREFIX:
        if name.startswith(prefix):
            return SuiteClass(kex, problem is None, problem)
    # OpenSSL names without a key-exchange prefix (AES128-SHA, DES-CBC3-SHA) are RSA key exchange.
    return SuiteClass("RSA", False, "RSA key exchange, not forward-secret")


@dataclass
class AcceptedSuite:
    """One suite the server accepted, with the ephemeral key sslyze saw (None: none or unknown)."""

    protocol: str
    name: str  # RFC name
    openssl_name: str
    kex_type: str | None = None  # sslyze's ephemeral key type: 'ECDH' or 'DH'
    group: str | None = None  # curve name for ECDH, e.g. 'X25519'
    key_bits: int | None = None
    dh_group: str | None = None  # DH: the RFC 7919 group ('ffdhe3072'), or 'custom'


@dataclass
class Certificate:
    """The leaf certificate as served, and what the chain looked like (CERTIFICATE_INFO)."""

    subject: str
    names: list[str]  # subjectAltName DNS names (or the CN when there are none)
    key_type: str  # 'RSA', 'EllipticCurve', 'Ed25519', ...
    key_bits: int | None
    signature_hash: str | None  # 'sha256', 'sha1', ...; None for Ed25519/Ed448
    not_after: str  # ISO 8601, UTC
    chain_length: int
    chain_in_order: bool | None = None
    trusted: bool = False  # validates against sslyze's trust stores


@dataclass
class Resumed:
    """Session resumption as measured on one port. None: not measured (or not applicable)."""

    tls12_session_id: bool | None = None  # a second connection resumed by session ID
    tls12_ticket: bool | None = None  # ... by a TLS 1.2 ticket
    tls12_ticket_issued: bool | None = None
    tls12_lifetime_hint: int | None = None  # seconds, from the TLS 1.2 ticket
    tls13: bool | None = None  # a second TLS 1.3 connection resumed (psk_dhe_ke with OpenSSL)
    tls13_lifetime_hint: int | None = None
    # A client offering psk_ke alone (tasks/audit/psk_probe.py): 'full handshake' is right; 'resumed
    # without (EC)DHE' means a resumed TLS 1.3 session that the ticket key alone decrypts.
    tls13_psk_ke_only: str | None = None


@dataclass
class PortScan:
    """What one port showed. state: open | closed | no-tls | error."""

    port: int
    service: str
    state: str
    error: str | None = None
    ip: str | None = None  # the address scanned (a name may resolve to several)
    incomplete: list[str] = field(
        default_factory=list
    )  # checks that still failed after the retries
    protocols: list[str] = field(default_factory=list)
    suites: list[AcceptedSuite] = field(default_factory=list)
    curves: list[str] | None = None
    secure_renegotiation: bool | None = None
    client_renegotiation: bool | None = None
    cert_key_type: str | None = None
    cert_key_bits: int | None = None
    pq_hybrid: bool | None = None  # None: not checked
    pq_note: str = "not checked"
    compression: bool | None = None
    extended_master_secret: bool | None = None
    certificate: Certificate | None = None
    server_order: bool | None = None  # a client preferring DHE got ECDHE; None: not probed
    server_order_note: str = ""
    # TLS 1.2 offering only SHA-1 signature algorithms: the server signed with SHA-1 (True),
    # refused (False); None: not probed (no TLS 1.2) or could not tell (the note says why).
    sha1_key_exchange: bool | None = None
    sha1_key_exchange_note: str = ""
    # A command sent behind STARTTLS in the same write was answered inside TLS (True:
    # CVE-2011-0411's family), not (False); None: implicit TLS, or could not tell (the note).
    starttls_injection: bool | None = None
    starttls_injection_note: str = ""
    resumption: Resumed = field(default_factory=Resumed)
    retries: int = 0  # sslyze re-runs this port needed

    @property
    def tls13(self) -> bool:
        return "TLSv1.3" in self.protocols

    def to_dict(self) -> dict:
        return asdict(self) | {"tls13": self.tls13}


@dataclass
class PortVerdict:
    port: int
    ip: str | None = None
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class Expect:
    """What the audit knows of the host beyond its policy. None: unknown, not judged."""

    pq_hybrid: bool | None = None  # tls_pq_hybrid on and the host's OpenSSL >= 3.5
    cert_name: str | None = None  # the name the certificate should carry (the host's myhostname)
    now: datetime | None = None  # for certificate expiry; None: the current time


def window(port: int, res: Resumed, policy: Resumption) -> int | None:
    """Seconds a TLS 1.2 session stays decryptable from a ticket on this port, as measured.

    From the lifetime hint the port's daemon sends (policy.ticket_window); a port that
    resumes nothing and issues no TLS 1.2 ticket has a window of 0.
    """
    if res.tls12_ticket is None and res.tls12_ticket_issued is None:
        return None
    if not (res.tls12_ticket or res.tls12_ticket_issued):
        return 0
    if res.tls12_lifetime_hint is None:
        return None
    return ticket_window(PORTS[port].daemon, res.tls12_lifetime_hint)


def judge_resumption(port: int, res: Resumed, policy: Resumption) -> tuple[list[str], list[str]]:
    """(failures, warnings) of one port's resumption against the host's tls_resumption."""
    fail: list[str] = []
    warn: list[str] = []
    if res.tls12_session_id:
        fail.append(
            "resumes TLS 1.2 by session ID: a server session cache holds master secrets "
            f"(tls_resumption={policy.name} allows none)"
        )
    postfix = PORTS[port].daemon == "postfix"
    tickets_allowed = policy.postfix_cache_timeout > 0 and postfix
    if (res.tls12_ticket or res.tls12_ticket_issued) and not tickets_allowed:
        why = (
            f"tls_resumption={policy.name}"
            if postfix
            else "its login processes can never honour them"
        )
        fail.append(f"issues TLS 1.2 session tickets ({why})")
    elif (
        tickets_allowed
        and res.tls12_lifetime_hint is not None
        and res.tls12_lifetime_hint > policy.postfix_lifetime_hint
    ):
        fail.append(
            f"TLS 1.2 ticket lifetime hint {res.tls12_lifetime_hint} s: ticket keys outlive "
            f"the policy's window ({policy.postfix_window} s, hint {policy.postfix_lifetime_hint} s)"
        )
    if res.tls13_psk_ke_only == "resumed without (EC)DHE":
        fail.append("resumes TLS 1.3 without a fresh (EC)DHE for a client offering only psk_ke")
    if res.tls13 and (policy.postfix_cache_timeout == 0 or not postfix):
        fail.append(
            f"resumes TLS 1.3 sessions (tls_resumption={policy.name}"
            + ("" if postfix else "; a login process cannot")
            + ")"
        )
    return fail, warn


def judge_certificate(cert: Certificate, expect: Expect) -> tuple[list[str], list[str]]:
    """(failures, warnings) for the leaf certificate."""
    fail, warn = [], []
    now = expect.now or datetime.now(UTC)
    end = datetime.fromisoformat(cert.not_after)
    days = (end - now).total_seconds() / 86400
    if days < 0:
        fail.append(f"certificate expired on {end:%Y-%m-%d} ({cert.subject})")
    elif days < CERT_WARN_DAYS:
        warn.append(f"certificate expires in {days:.0f} days ({end:%Y-%m-%d})")
    if cert.key_type == "RSA" and (cert.key_bits or 0) < 2048:
        fail.append(f"certificate RSA key of {cert.key_bits} bits (< 2048)")
    elif cert.key_type == "EllipticCurve" and (cert.key_bits or 0) < 256:
        fail.append(f"certificate EC key of {cert.key_bits} bits (< 256)")
    elif cert.key_type in ("DSA", "DH"):
        fail.append(f"certificate {cert.key_type} key")
    if cert.signature_hash in ("md5", "sha1"):
        fail.append(f"certificate signed with {cert.signature_hash.upper()}")
    if expect.cert_name and not name_matches(expect.cert_name, cert.names):
        warn.append(
            f"certificate names {', '.join(cert.names) or '(none)'} do not match {expect.cert_name}"
        )
    if cert.chain_in_order is False:
        warn.append("certificate chain served out of order")
    return fail, warn


def name_matches(name: str, patterns: list[str]) -> bool:
    """RFC 6125 matching, a wildcard only as the whole left-most label."""
    name = name.lower().rstrip(".")
    for pat in (p.lower().rstrip(".") for p in patterns):
        if pat == name or (
            pat.startswith("*.") and "." in name and name.split(".", 1)[1] == pat[2:]
        ):
            return True
    return False


def _group(name: str) -> str:
    return _GROUP_ALIASES.get(name, name)


def judge_port(
    scan: PortScan, policy: Policy, expected: bool = True, expect: Expect | None = None
) -> PortVerdict:
    """Judge one port's scan against `policy` and `expect`; `expected`: must this port answer
    TLS? Without `expect` the resumption and groups are not judged."""
    v = PortVerdict(scan.port, ip=scan.ip)
    if scan.state != "open":
        why = "closed" if scan.state == "closed" else f"{scan.state}: {scan.error}"
        (v.failures if expected else v.warnings).append(
            f"port {scan.port} ({scan.service}) {why}"
            + (" but the profile expects TLS here" if expected else "")
        )
        return v
    # A check that did not complete (after the retries) leaves the port unproven: fail it.
    v.failures += [f"incomplete scan: {what}" for what in scan.incomplete]
    if not scan.protocols and not any("cipher_suites" in w for w in scan.incomplete):
        v.failures.append("no TLS protocol accepted")
    floor = policy.floor(scan.port)
    allowed = protocols_at_least(floor)
    for proto in sorted(set(scan.protocols) - set(allowed), key=ALL_PROTOCOLS.index):
        v.failures.append(f"accepts {proto} (floor {floor})")
    bad: dict[str, list[str]] = {}  # message -> protocols, so one line per suite
    for s in scan.suites:
        cls = classify_suite(s.name)
        if cls.problem:
            bad.setdefault(f"accepts {s.name} ({cls.problem})", []).append(s.protocol)
        if s.kex_type == "DH" and s.key_bits is not None and s.key_bits < MIN_DH_BITS:
            bad.setdefault(
                f"{s.name} uses a {s.key_bits}-bit DH group (minimum {MIN_DH_BITS})", []
            ).append(s.protocol)
        elif cls.kex == "DHE" and (s.kex_type != "DH" or s.key_bits is None):
            # an unreadable key proves nothing: it must not escape the 2048-bit rule
            bad.setdefault(
                f"{s.name}: DH group size could not be read (minimum {MIN_DH_BITS})", []
            ).append(s.protocol)
    v.failures += [f"{msg} on {', '.join(protos)}" for msg, protos in bad.items()]
    if scan.client_renegotiation:
        v.failures.append("accepts client-initiated renegotiation")
    tls12 = bool(set(scan.protocols) - {"TLSv1.3"})
    if scan.secure_renegotiation is False and tls12:
        v.failures.append("no secure renegotiation (RFC 5746)")
    if scan.compression:
        v.failures.append("TLS compression on (CRIME)")
    if scan.starttls_injection:
        v.failures.append(
            "answers a command injected after STARTTLS (CVE-2011-0411 family): "
            f"{scan.starttls_injection_note}"
        )
    if scan.extended_master_secret is False and tls12:
        v.failures.append("no extended master secret (RFC 7627)")
    if policy.server_preference and scan.server_order is False:
        v.failures.append(
            f"server cipher order not enforced (profile {policy.name}): {scan.server_order_note}"
        )
    _judge_groups(v, scan, policy, expect)
    if expect is not None:
        fail, warn = judge_resumption(scan.port, scan.resumption, policy.resumption)
        v.failures += fail
        v.warnings += warn
    if scan.certificate is not None:
        fail, warn = judge_certificate(scan.certificate, expect or Expect())
        v.failures += fail
        v.warnings += warn
    outside = sorted(
        {s.openssl_name for s in scan.suites if s.protocol != "TLSv1.3"} - set(policy.tls12_suites)
    )
    if outside:
        v.warnings.append(f"suites outside profile {policy.name}: {', '.join(outside)}")
    if (
        scan.certificate is None
        and scan.cert_key_type == "RSA"
        and (scan.cert_key_bits or 0) < 2048
    ):
        v.warnings.append(f"certificate RSA key of {scan.cert_key_bits} bits (< 2048)")
    return v


def _judge_groups(v: PortVerdict, scan: PortScan, policy: Policy, expect: Expect | None) -> None:
    """The hybrid PQ group where the host's settings and OpenSSL promise it; the classic groups
    offered against the policy's (sslyze reports the classic ones only)."""
    want_pq = expect.pq_hybrid if expect else None
    if want_pq and scan.pq_hybrid is False:
        v.failures.append(
            f"{PQ_HYBRID} not offered (tls_pq_hybrid on, host OpenSSL supports it): {scan.pq_note}"
        )
    elif want_pq is False and scan.pq_hybrid:
        v.failures.append(f"{PQ_HYBRID} offered though the policy leaves it out")
    if scan.curves is not None and expect is not None:
        offered = {_group(c) for c in scan.curves}
        classic = [g for g in policy.groups if g != PQ_HYBRID]
        outside = sorted(offered - set(classic))
        if outside:
            v.failures.append(f"offers groups outside the policy: {', '.join(outside)}")
        missing = [g for g in classic if g not in offered]
        if missing and offered:
            v.warnings.append(f"policy groups not offered: {', '.join(missing)}")


def judge_host(
    scans: list[PortScan],
    policy: Policy,
    expected_ports: tuple[int, ...] = REQUIRED_PORTS,
    expect: Expect | None = None,
) -> list[PortVerdict]:
    """Verdicts for every scanned port (of every address), plus a failure for an expected port
    not scanned at all on an address."""
    verdicts = [judge_port(s, policy, s.port in expected_ports, expect) for s in scans]
    for ip in dict.fromkeys(s.ip for s in scans) or [None]:
        scanned = {s.port for s in scans if s.ip == ip}
        where = f" on {ip}" if ip else ""
        verdicts += [
            PortVerdict(p, ip=ip, failures=[f"port {p} was not scanned{where}"])
            for p in expected_ports
            if p not in scanned
        ]
    return verdicts
