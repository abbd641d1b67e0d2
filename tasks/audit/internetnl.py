"""internet.nl's mail TLS subtests, graded offline from a port's scan: the levels, each subtest's
grade, and the worst of a port's.

internet.nl (its checks/tasks/tls code, after the NCSC TLS guidelines) grades each subtest
good, sufficient, phase-out or insufficient; a subtest it runs that the audit does not (yet) is
"not tested", and so is one that does not apply to a port (no TLS served). The tables below are
its own (checks/tasks/tls/tls_constants.py, 2026-07), by suite and group name.

    >>> from tasks.audit.verdict import AcceptedSuite, PortScan
    >>> p = PortScan(port=25, service="smtp", state="open", protocols=["TLSv1.2", "TLSv1.3"],
    ...     suites=[AcceptedSuite("TLSv1.3", "TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384",
    ...                           "ECDH", "X25519", 253),
    ...             AcceptedSuite("TLSv1.2", "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    ...                           "DHE-RSA-AES256-GCM-SHA384", "DH", None, 3072, "ffdhe3072")])
    >>> g = grade(p)
    >>> g["version"], g["ciphers"], g["key_exchange"]
    ('sufficient', 'phase-out', 'phase-out')
    >>> worst(g)
    'phase-out'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tasks.audit.verdict import PortScan

# Best first: the order internet.nl's evaluation ranks them in.
LEVELS = ("good", "sufficient", "phase-out", "insufficient")
NOT_TESTED = "not tested"
# What each level is on internet.nl's report: a pass, a warning, a failure (the console's
# colour and the HTML page's cell class follow it).
OUTCOME = {"good": "ok", "sufficient": "ok", "phase-out": "warn", "insufficient": "fail"}

# Every subtest of internet.nl's mail TLS test that needs no DNS, then the DNS ones; in the
# order of its report. zero_rtt: internet.nl does not test it on mail either (sslyze's probe
# speaks HTTP).
SUBTESTS = (
    "version",
    "ciphers",
    "cipher_order",
    "key_exchange",
    "key_exchange_hash",
    "compression",
    "secure_renegotiation",
    "client_renegotiation",
    "zero_rtt",
    "extended_master_secret",
    "cert_public_key",
    "cert_signature",
    "dane",  # with the DANE work
    "caa",
)

PROTOCOLS = {"TLSv1.3": "good", "TLSv1.2": "sufficient"}  # any other: insufficient

# Suites by RFC name; any other: insufficient (TLS_RSA_*, CBC with SHA-1, ...).
CIPHERS_GOOD = frozenset({"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"})
CIPHERS_SUFFICIENT = frozenset(
    {
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_128_CCM_SHA256",
        *(
            f"TLS_ECDHE_{auth}_WITH_{enc}"
            for auth in ("ECDSA", "RSA")
            for enc in (
                "CHACHA20_POLY1305_SHA256",
                "AES_256_GCM_SHA384",
                "AES_256_CCM",
                "AES_128_GCM_SHA256",
                "AES_128_CCM",
            )
        ),
    }
)
CIPHERS_PHASE_OUT = frozenset(
    {
        *(
            f"TLS_ECDHE_{auth}_WITH_{enc}"
            for auth in ("ECDSA", "RSA")
            for enc in (
                "CAMELLIA_256_GCM_SHA384",
                "CAMELLIA_256_CBC_SHA384",
                "CAMELLIA_128_GCM_SHA256",
                "CAMELLIA_128_CBC_SHA256",
                "ARIA_256_GCM_SHA384",
                "ARIA_256_CBC_SHA384",
                "ARIA_128_GCM_SHA256",
                "ARIA_128_CBC_SHA256",
                "AES_256_CBC_SHA384",
                "AES_128_CBC_SHA256",
            )
        ),
        *(
            f"TLS_DHE_RSA_WITH_{enc}"
            for enc in (
                "CHACHA20_POLY1305_SHA256",
                "CAMELLIA_256_GCM_SHA384",
                "CAMELLIA_256_CBC_SHA256",
                "CAMELLIA_128_GCM_SHA256",
                "CAMELLIA_128_CBC_SHA256",
                "ARIA_256_GCM_SHA384",
                "ARIA_256_CBC_SHA384",
                "ARIA_128_GCM_SHA256",
                "ARIA_128_CBC_SHA256",
                "AES_256_GCM_SHA384",
                "AES_256_CCM",
                "AES_256_CBC_SHA256",
                "AES_128_GCM_SHA256",
                "AES_128_CCM",
                "AES_128_CBC_SHA256",
            )
        ),
    }
)

# Key exchange: ECDH groups by name (sslyze's: secp256r1; OpenSSL's alias prime256v1 too), and
# finite-field groups: RFC 7919's from 3072 bits are phase-out; ffdhe2048 and groups of one's
# own (`openssl dhparam`) are insufficient. Hybrid post-quantum groups are not in internet.nl's
# tables: not graded.
GROUPS_GOOD = frozenset(
    {
        "X25519",
        "X448",
        "secp256r1",
        "prime256v1",
        "secp384r1",
        "secp521r1",
        "brainpoolP256r1",
        "brainpoolP384r1",
        "brainpoolP512r1",
    }
)
GROUPS_PHASE_OUT = frozenset({"secp224r1", "ffdhe3072", "ffdhe4096", "ffdhe6144", "ffdhe8192"})

# Certificate keys: RSA from 3072 bits good, from 2048 phase-out; EC on these curves good.
RSA_GOOD_BITS, RSA_PHASE_OUT_BITS = 3072, 2048
CERT_EC_GOOD_BITS = frozenset({256, 384, 521, 512})  # P-256/384/521, brainpoolP512r1
CERT_SIGNATURE_HASHES = frozenset({"sha256", "sha384", "sha512"})


def _worst_of(levels: Iterable[str]) -> str:
    found = [LEVELS.index(v) for v in levels if v in LEVELS]
    return LEVELS[max(found)] if found else NOT_TESTED


def _cipher(name: str) -> str:
    if name in CIPHERS_GOOD:
        return "good"
    if name in CIPHERS_SUFFICIENT:
        return "sufficient"
    return "phase-out" if name in CIPHERS_PHASE_OUT else "insufficient"


def _group(name: str) -> str | None:
    """The level of a key-exchange group; None for one internet.nl does not grade (hybrid)."""
    if "MLKEM" in name.upper():
        return None
    if name in GROUPS_GOOD:
        return "good"
    return "phase-out" if name in GROUPS_PHASE_OUT else "insufficient"


def _key_exchange(p: PortScan) -> str:
    groups = [s.group or s.dh_group or "custom" for s in p.suites if s.kex_type]
    groups += p.curves or []
    return _worst_of(g for g in map(_group, groups) if g)


def _cipher_order(p: PortScan) -> str:
    """Server order matters only where the server accepts TLS 1.2 suites of different levels."""
    if len({_cipher(s.name) for s in p.suites if s.protocol != "TLSv1.3"}) <= 1:
        return "good"
    return {True: "good", False: "insufficient", None: NOT_TESTED}[p.server_order]


def _cert_public_key(p: PortScan) -> str:
    c = p.certificate
    if c is None or c.key_bits is None:
        return NOT_TESTED
    if c.key_type == "RSA":
        if c.key_bits >= RSA_GOOD_BITS:
            return "good"
        return "phase-out" if c.key_bits >= RSA_PHASE_OUT_BITS else "insufficient"
    if c.key_type in ("Ed25519", "Ed448"):
        return "good"
    if c.key_type == "EllipticCurve":
        return "good" if c.key_bits in CERT_EC_GOOD_BITS else "insufficient"
    return "insufficient"


def _cert_signature(p: PortScan) -> str:
    c = p.certificate
    if c is None:
        return NOT_TESTED
    if c.key_type in ("Ed25519", "Ed448") or c.signature_hash in CERT_SIGNATURE_HASHES:
        return "sufficient"
    return "insufficient"


def _yes_no(value: bool | None, yes: str, no: str) -> str:
    return NOT_TESTED if value is None else (yes if value else no)


def grade(p: PortScan) -> dict[str, str]:
    """{subtest: level} for one port (SUBTESTS, in order); every one "not tested" on a port that
    served no TLS."""
    if p.state != "open" or not p.protocols:
        return dict.fromkeys(SUBTESTS, NOT_TESTED)
    tls12 = any(proto != "TLSv1.3" for proto in p.protocols)

    def up_to_tls12(value: bool | None, yes: str, no: str) -> str:
        """A TLS 1.2 feature (SHA-1 signatures, RFC 5746 and client renegotiation, EMS):
        good where only TLS 1.3 is served, which has none of them."""
        return _yes_no(value, yes, no) if tls12 else "good"

    return {
        "version": _worst_of(PROTOCOLS.get(proto, "insufficient") for proto in p.protocols),
        "ciphers": _worst_of(_cipher(s.name) for s in p.suites),
        "cipher_order": _cipher_order(p),
        "key_exchange": _key_exchange(p),
        "key_exchange_hash": up_to_tls12(p.sha1_key_exchange, "insufficient", "good"),
        "compression": _yes_no(p.compression, "insufficient", "good"),
        "secure_renegotiation": up_to_tls12(p.secure_renegotiation, "good", "insufficient"),
        "client_renegotiation": up_to_tls12(p.client_renegotiation, "insufficient", "good"),
        "zero_rtt": NOT_TESTED,
        "extended_master_secret": up_to_tls12(p.extended_master_secret, "good", "phase-out"),
        "cert_public_key": _cert_public_key(p),
        "cert_signature": _cert_signature(p),
        "dane": NOT_TESTED,
        "caa": NOT_TESTED,
    }


def worst(levels: Mapping[str, str]) -> str | None:
    """The worst graded level of a port's subtests; None when none was graded.

    >>> worst({"version": "good", "ciphers": "phase-out", "dane": "not tested"})
    'phase-out'
    >>> worst({}) is None
    True
    """
    level = _worst_of(levels.values())
    return None if level == NOT_TESTED else level


# What internet.nl does not test, graded with its levels by the audit's own rules (its verdicts
# fail the same findings): JSON ports[i].beyond_internet_nl, next to internet_nl.
BEYOND = ("pq_group", "resumption_bound", "starttls_injection")


def beyond(p: PortScan, window_seconds: int | None, resumption_failed: bool) -> dict[str, str]:
    """{check: level} of BEYOND for one port: the hybrid post-quantum group X25519MLKEM768
    negotiated good, not sufficient (classic ECDHE is still forward-secret); resumption
    within the host's tls_resumption sufficient, none at all (window 0) good, outside it
    insufficient; a command injected after STARTTLS answered insufficient, not good (implicit
    TLS ports: not tested).

    >>> from tasks.audit.verdict import PortScan
    >>> p = PortScan(port=25, service="smtp", state="open", protocols=["TLSv1.3"],
    ...              pq_hybrid=True, starttls_injection=False)
    >>> beyond(p, 3600, resumption_failed=False)
    {'pq_group': 'good', 'resumption_bound': 'sufficient', 'starttls_injection': 'good'}
    """
    if p.state != "open" or not p.protocols:
        return dict.fromkeys(BEYOND, NOT_TESTED)
    if resumption_failed:
        bound = "insufficient"
    else:
        bound = {None: NOT_TESTED, 0: "good"}.get(window_seconds, "sufficient")
    return {
        "pq_group": _yes_no(p.pq_hybrid, "good", "sufficient"),
        "resumption_bound": bound,
        "starttls_injection": _yes_no(p.starttls_injection, "insufficient", "good"),
    }
