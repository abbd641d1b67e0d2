"""What an audit saw on each port, and the verdict against a profile. Pure: no I/O.

tasks/scan.py fills PortScan from sslyze; judge_port() decides; tasks/logreport.py reuses
classify_suite() so scans and logs call the same suite forward-secret or not.

    >>> from tasks.policy import PROFILES
    >>> scan = PortScan(port=25, service="smtp", state="open", protocols=["TLSv1", "TLSv1.2"],
    ...                 suites=[AcceptedSuite("TLSv1", "TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA")])
    >>> judge_port(scan, PROFILES["intermediate"]).failures
    ['accepts TLSv1 (floor TLSv1.2)', 'accepts TLS_RSA_WITH_AES_128_CBC_SHA (RSA key exchange, not forward-secret) on TLSv1']
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from tasks.policy import MIN_DH_BITS, PROTOCOLS, Profile, protocols_at_least

# Port -> (service name, STARTTLS dialogue or None for implicit TLS). 25 is opportunistic TLS.
MAIL_PORTS: dict[int, tuple[str, str | None]] = {
    25: ("smtp", "smtp"), 587: ("submission", "smtp"), 465: ("submissions", None),
    143: ("imap", "imap"), 993: ("imaps", None), 110: ("pop3", "pop3"), 995: ("pop3s", None),
}
OPPORTUNISTIC_PORTS = frozenset({25})
# Closed is a failure on these unless the caller says otherwise (POP3 is optional).
DEFAULT_EXPECTED_PORTS = (25, 587, 465, 143, 993)
# Old protocols sslyze can still test; below every floor.
ALL_PROTOCOLS = ("SSLv2", "SSLv3") + PROTOCOLS


@dataclass(frozen=True)
class SuiteClass:
    """How a suite agrees its keys: kex 'TLS1.3', 'ECDHE', 'DHE', 'RSA', 'anonymous', 'PSK', ..."""

    kex: str
    forward_secret: bool
    problem: str | None = None  # why not acceptable, for failure messages


_RFC_KEX = {  # RFC name part before _WITH_ -> class
    "ECDHE_RSA": "ECDHE", "ECDHE_ECDSA": "ECDHE", "DHE_RSA": "DHE", "DHE_DSS": "DHE",
}
_OPENSSL_PREFIX = (  # OpenSSL name prefix -> (kex, problem); first match wins
    ("ECDHE-PSK-", "PSK", "PSK key exchange"), ("DHE-PSK-", "PSK", "PSK key exchange"),
    ("RSA-PSK-", "PSK", "PSK key exchange"), ("PSK-", "PSK", "PSK key exchange"),
    ("SRP-", "SRP", "SRP key exchange"), ("EXP", "export", "export-grade"),
    ("ADH-", "anonymous", "anonymous, no authentication"),
    ("AECDH-", "anonymous", "anonymous, no authentication"),
    ("ECDHE-", "ECDHE", None), ("DHE-", "DHE", None), ("EDH-", "DHE", None),
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


@dataclass
class PortScan:
    """What one port showed. state: open | closed | no-tls | error."""

    port: int
    service: str
    state: str
    error: str | None = None
    protocols: list[str] = field(default_factory=list)
    suites: list[AcceptedSuite] = field(default_factory=list)
    curves: list[str] | None = None
    secure_renegotiation: bool | None = None
    client_renegotiation: bool | None = None
    cert_key_type: str | None = None
    cert_key_bits: int | None = None
    pq_hybrid: bool | None = None  # None: not checked
    pq_note: str = "not checked"

    @property
    def tls13(self) -> bool:
        return "TLSv1.3" in self.protocols

    def to_dict(self) -> dict:
        return asdict(self) | {"tls13": self.tls13}


@dataclass
class PortVerdict:
    port: int
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def floor_for(port: int, profile: Profile) -> str:
    """The lowest protocol a port may accept: port 25 uses the opportunistic floor."""
    return profile.opportunistic_min_protocol if port in OPPORTUNISTIC_PORTS else profile.mandatory_min_protocol


def judge_port(scan: PortScan, profile: Profile, expected: bool = True) -> PortVerdict:
    """Judge one port's scan against `profile`; `expected`: must this port answer TLS?"""
    v = PortVerdict(scan.port)
    if scan.state != "open":
        why = "closed" if scan.state == "closed" else f"{scan.state}: {scan.error}"
        (v.failures if expected else v.warnings).append(
            f"port {scan.port} ({scan.service}) {why}" + (" but the profile expects TLS here" if expected else ""))
        return v
    floor = floor_for(scan.port, profile)
    allowed = protocols_at_least(floor)
    for proto in sorted(set(scan.protocols) - set(allowed), key=ALL_PROTOCOLS.index):
        v.failures.append(f"accepts {proto} (floor {floor})")
    bad: dict[str, list[str]] = {}  # message -> protocols, so one line per suite
    for s in scan.suites:
        cls = classify_suite(s.name)
        if cls.problem:
            bad.setdefault(f"accepts {s.name} ({cls.problem})", []).append(s.protocol)
        if s.kex_type == "DH" and s.key_bits is not None and s.key_bits < MIN_DH_BITS:
            bad.setdefault(f"{s.name} uses a {s.key_bits}-bit DH group (minimum {MIN_DH_BITS})", []).append(s.protocol)
    v.failures += [f"{msg} on {', '.join(protos)}" for msg, protos in bad.items()]
    if scan.client_renegotiation:
        v.failures.append("accepts client-initiated renegotiation")
    if scan.secure_renegotiation is False:
        v.warnings.append("no secure renegotiation (RFC 5746)")
    outside = sorted({s.openssl_name for s in scan.suites if s.protocol != "TLSv1.3"} - set(profile.tls12_suites))
    if outside:
        v.warnings.append(f"suites outside profile {profile.name}: {', '.join(outside)}")
    if scan.cert_key_type == "RSA" and (scan.cert_key_bits or 0) < 2048:
        v.warnings.append(f"certificate RSA key of {scan.cert_key_bits} bits (< 2048)")
    return v


def judge_host(scans: list[PortScan], profile: Profile,
               expected_ports: tuple[int, ...] = DEFAULT_EXPECTED_PORTS) -> list[PortVerdict]:
    """Verdicts for every scanned port, plus a failure for an expected port not scanned at all."""
    verdicts = [judge_port(s, profile, s.port in expected_ports) for s in scans]
    scanned = {s.port for s in scans}
    verdicts += [PortVerdict(p, failures=[f"port {p} was not scanned"]) for p in expected_ports if p not in scanned]
    return verdicts
