"""Audit results as audit.py writes them, for the tests of what reads them (the HTML report and
the metrics): built by the real audit_host() from fake scans and log lines as Postfix and
Dovecot write them, so they keep the shape of the JSON whatever it becomes. The fixtures
(audit_result, fleet) reach tests/unit through its conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tasks.audit import report
from tasks.audit.scan import HostScan
from tasks.audit.verdict import AcceptedSuite, Certificate, Expect, PortScan
from tasks.policy import HostCaps, resolve

NOW = datetime.now(UTC)
LOG = "{:%Y-%m-%dT%H:%M:%S}.5+00:00 {} {}"
ECDHE = [
    AcceptedSuite(
        "TLSv1.3", "TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384", "ECDH", "X25519", 253
    ),
    AcceptedSuite(
        "TLSv1.2",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDH",
        "X25519",
        253,
    ),
]
RSA_KX = AcceptedSuite("TLSv1.2", "TLS_RSA_WITH_AES_256_GCM_SHA384", "AES256-GCM-SHA384")


def certificate(subject: str = "CN=mx1.example.org", days: float = 60) -> Certificate:
    """A leaf certificate ending `days` after now."""
    return Certificate(
        subject=subject,
        names=[subject.removeprefix("CN=")],
        key_type="RSA",
        key_bits=2048,
        signature_hash="sha256",
        not_after=(NOW + timedelta(days=days)).replace(microsecond=0).isoformat(),
        chain_length=2,
        chain_in_order=True,
        trusted=True,
    )


def open_port(port: int, cert: Certificate | None = None, rsa: bool = False) -> PortScan:
    service = {25: "smtp", 587: "submission", 465: "submissions", 143: "imap", 993: "imaps"}
    return PortScan(
        port=port,
        ip="10.0.0.2",
        service=service[port],
        state="open",
        protocols=["TLSv1.2", "TLSv1.3"],
        suites=ECDHE + ([RSA_KX] if rsa else []),
        curves=["X25519", "secp256r1", "secp384r1"],
        secure_renegotiation=True,
        client_renegotiation=False,
        compression=False,
        extended_master_secret=True,
        server_order=None,
        certificate=cert or certificate(),
        cert_key_type="RSA",
        cert_key_bits=2048,
    )


def log_lines(host: str, peer: str = "mx.example.net[192.0.2.7]:25") -> list[str]:
    """Inbound: TLS 1.3 and 1.2 (one RSA key exchange) on smtpd, IMAP logins; outbound: one
    forward-secret destination and `peer`, delivered to in plaintext."""
    at = NOW - timedelta(hours=1)
    msgs = [
        "postfix/smtpd[1]: Anonymous TLS connection established from a.example[198.51.100.1]: "
        "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange x25519",
        "postfix/smtpd[1]: Anonymous TLS connection established from b.example[198.51.100.2]: "
        "TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)",
        "postfix/smtpd[1]: Anonymous TLS connection established from c.example[198.51.100.3]: "
        "TLSv1.2 with cipher AES256-GCM-SHA384 (256/256 bits)",
        "dovecot: imap-login: Logged in: user=<u>, method=PLAIN, rip=198.51.100.4, "
        "lip=10.0.0.2, mpid=3, TLS, TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits), "
        "session=<x>",
        "postfix/smtp[9]: Trusted TLS connection established to mx.good.example[203.0.113.5]:25: "
        "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
        "postfix/smtp[9]: 4A1: to=<a@good.example>, relay=mx.good.example[203.0.113.5]:25, "
        "delay=0.4, delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
        f"postfix/smtp[10]: 4A2: to=<a@example.net>, relay={peer}, delay=0.4, "
        "delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
    ]
    return [LOG.format(at + timedelta(seconds=i), host, m) for i, m in enumerate(msgs)]


AuditResult = Callable[..., dict]


@pytest.fixture
def audit_result(monkeypatch, tmp_path) -> AuditResult:
    """audit_result(name, ports, lines=None, expected=(25, 587, 465, 143, 993), certs=None):
    the dict audit_host() returns (and writes as JSON) for a host whose scan found `ports`."""
    policy = resolve("intermediate", HostCaps(postfix=None, dovecot=None, openssl=(3, 0, 15)))

    def build(
        name: str,
        ports: list[PortScan],
        lines: list[str] | None = None,
        expected: tuple[int, ...] = (25, 587, 465, 143, 993),
        certs: dict | None = None,
    ) -> dict:
        scan = HostScan(address="10.0.0.2", ports=ports, ips=["10.0.0.2"])
        monkeypatch.setattr(report, "scan_host", lambda *a, **kw: scan)
        log = {
            "now": NOW,
            "ssh_client": None,
            "lines": log_lines(name) if lines is None else lines,
            "source": "journal",
            "certs": certs or {},
        }
        return report.audit_host(
            name,
            "10.0.0.2",
            policy,
            log,
            expected,
            json_file=str(tmp_path / "{host}.json"),
            expect=Expect(cert_name=f"{name}.example.org"),
        )

    return build


@pytest.fixture
def fleet(audit_result) -> list[dict]:
    """Two hosts: mx1 passes (a certificate 10 days from its end: a warning), mx2 fails (an
    RSA key exchange on 25, 465 closed though expected)."""
    soon = certificate("CN=mx1.example.org", days=10)
    mx1 = audit_result("mx1", [open_port(p, soon) for p in (25, 587, 465, 143, 993)])
    mx2 = audit_result(
        "mx2",
        [
            open_port(25, certificate("CN=mx2.example.org"), rsa=True),
            open_port(587, certificate("CN=mx2.example.org")),
            PortScan(port=465, ip="10.0.0.2", service="submissions", state="closed"),
            open_port(143, certificate("CN=mx2.example.org")),
            open_port(993, certificate("CN=mx2.example.org")),
        ],
    )
    return [mx1, mx2]
