"""The audit's rules on fake sslyze results: incomplete scans, retries, resumption, certificate,
groups and server order. No network."""

from __future__ import annotations

import dataclasses
import socket
import traceback
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace as NS
from typing import Any

import pytest
from sslyze import ScanCommand
from sslyze.plugins.session_resumption.implementation import TlsResumptionSupportEnum
from sslyze.scanner.scan_command_attempt import (
    ScanCommandAttemptStatusEnum,
    ScanCommandErrorReasonEnum,
)

from tasks.audit import scan as scanmod
from tasks.audit.scan import COMMANDS, SUITE_COMMANDS, _Gathered, absorb, port_scan, run_sslyze
from tasks.audit.verdict import (
    AcceptedSuite,
    Certificate,
    Expect,
    PortScan,
    Resumed,
    judge_host,
    judge_port,
    name_matches,
    window,
)
from tasks.policy import RESUMPTION, HostCaps, resolve

# As the audit resolves them: the host's OpenSSL only (no hybrid group on 3.0).
CAPS = HostCaps(postfix=None, dovecot=None, openssl=(3, 0, 15))
INTERMEDIATE = resolve("intermediate", CAPS)
LEGACY = resolve("legacy-dhe", CAPS, dh_file="/etc/ssl/mailtls/dh.pem")
BOUNDED, OFF = RESUMPTION["bounded"], RESUMPTION["off"]
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def trace(exc: BaseException):
    return traceback.TracebackException.from_exception(exc)


def ecdhe(proto="TLSv1.2"):
    name = (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" if proto == "TLSv1.2" else "TLS_AES_128_GCM_SHA256"
    )
    return NS(
        cipher_suite=NS(
            name=name, openssl_name="ECDHE-RSA-AES128-GCM-SHA256" if proto == "TLSv1.2" else name
        ),
        ephemeral_key=NS(type_name="ECDH", curve_name="X25519", size=253),
    )


def good_results(port: int = 25) -> dict:
    """Results of every command, as a deployed host's port gives them (Postfix resumes by ticket)."""
    r = {}
    for command, proto in SUITE_COMMANDS.items():
        r[command.value] = NS(
            accepted_cipher_suites=[ecdhe(proto)] if proto in ("TLSv1.2", "TLSv1.3") else []
        )
    r[ScanCommand.SESSION_RENEGOTIATION.value] = NS(
        supports_secure_renegotiation=True, is_vulnerable_to_client_renegotiation_dos=False
    )
    r[ScanCommand.ELLIPTIC_CURVES.value] = NS(
        supported_curves=[NS(name=n) for n in ("X25519", "secp256r1", "secp384r1")]
    )
    r[ScanCommand.TLS_COMPRESSION.value] = NS(supports_compression=False)
    r[ScanCommand.TLS_EXTENDED_MASTER_SECRET.value] = NS(supports_ems_extension=True)
    r[ScanCommand.SESSION_RESUMPTION.value] = NS(
        session_id_resumption_result=TlsResumptionSupportEnum.NOT_SUPPORTED,
        tls_ticket_resumption_result=TlsResumptionSupportEnum.FULLY_SUPPORTED
        if port in (25, 587, 465)
        else TlsResumptionSupportEnum.NOT_SUPPORTED,
    )
    return r


def attempt(result=None, error: BaseException | None = None):
    if error is not None:
        return NS(
            status=ScanCommandAttemptStatusEnum.ERROR,
            error_reason=ScanCommandErrorReasonEnum.CONNECTIVITY_ISSUE,
            error_trace=trace(error),
            result=None,
        )
    return NS(
        status=ScanCommandAttemptStatusEnum.COMPLETED,
        error_reason=None,
        error_trace=None,
        result=result,
    )


def server_result(
    ip,
    port,
    failing: dict | None = None,
    commands=COMMANDS,
    connectivity: BaseException | None = None,
):
    """A fake sslyze ServerScanResult: `failing` maps command value -> exception."""
    failing = failing or {}
    location = NS(ip_address=ip, port=port)
    if connectivity is not None:
        return NS(
            scan_result=None, connectivity_error_trace=trace(connectivity), server_location=location
        )
    results = good_results(port)
    attempts = {
        c.value: (
            attempt(error=failing[c.value]) if c.value in failing else attempt(results.get(c.value))
        )
        for c in commands
    }
    return NS(scan_result=NS(**attempts), connectivity_error_trace=None, server_location=location)


def judged(scan, policy=INTERMEDIATE, resumption=None, **expect):
    if resumption is not None:
        policy = dataclasses.replace(policy, resumption=resumption)
    return judge_port(scan, policy, True, Expect(now=NOW, **expect))


# --- issue 12 item 1: an unfinished scan never passes -------------------------------------------


def test_a_command_that_ended_in_error_fails_the_port_and_names_the_check():
    g = _Gathered()
    absorb(
        g,
        server_result(
            "10.0.0.2", 25, {"tls_1_0_cipher_suites": ConnectionResetError("reset by peer")}
        ),
        COMMANDS,
    )
    scan = port_scan(25, "10.0.0.2", g)
    v = judged(scan)
    assert not v.ok
    assert any(
        "tls_1_0_cipher_suites did not complete" in f and "ConnectionResetError" in f
        for f in v.failures
    ), v.failures


def test_the_same_port_with_every_command_complete_passes():
    g = _Gathered()
    absorb(g, server_result("10.0.0.2", 25), COMMANDS)
    v = judged(port_scan(25, "10.0.0.2", g), pq_hybrid=None)
    assert v.ok, v.failures


def test_an_open_port_where_every_command_failed_fails():
    g = _Gathered()
    absorb(
        g,
        server_result("10.0.0.2", 993, {c.value: TimeoutError("timed out") for c in COMMANDS}),
        COMMANDS,
    )
    scan = port_scan(993, "10.0.0.2", g)
    assert scan.state == "open" and not scan.protocols
    v = judge_port(scan, INTERMEDIATE)
    assert not v.ok and len([f for f in v.failures if "did not complete" in f]) == len(COMMANDS)


def test_an_open_port_with_no_protocol_at_all_fails():
    v = judge_port(PortScan(993, "imaps", "open"), INTERMEDIATE)
    assert "no TLS protocol accepted" in v.failures


@pytest.mark.parametrize(
    "key", [None, NS(type_name="DH", size=None), NS(type_name="ECDH", size=None)]
)
def test_dhe_suite_with_unreadable_key_size_does_not_escape_the_2048_bit_rule(key):
    suite = AcceptedSuite(
        "TLSv1.2",
        "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
        "DHE-RSA-AES128-GCM-SHA256",
        getattr(key, "type_name", None),
        None,
        getattr(key, "size", None),
    )
    v = judge_port(PortScan(25, "smtp", "open", protocols=["TLSv1.2"], suites=[suite]), LEGACY)
    assert any("DH group size could not be read" in f for f in v.failures), v.failures


def test_dhe_suite_with_3072_bits_passes_the_rule():
    suite = AcceptedSuite(
        "TLSv1.2",
        "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
        "DHE-RSA-AES128-GCM-SHA256",
        "DH",
        None,
        3072,
    )
    v = judge_port(PortScan(25, "smtp", "open", protocols=["TLSv1.2"], suites=[suite]), LEGACY)
    assert v.ok, v.failures


# --- retries: a transient error is retried with fewer connections before anything is judged ----


class FakeScanner:
    """Plays back scripted results; records the limits each run was made with."""

    runs: list = []
    script: list = []  # one callable(request) -> result per run

    def __init__(self, **limits):
        self.limits, self.requests = limits, []
        FakeScanner.runs.append(self)

    def queue_scans(self, requests):
        self.requests = requests

    def get_results(self):
        play = FakeScanner.script[len(FakeScanner.runs) - 1]
        for req in self.requests:
            loc = req.server_location
            yield play(loc.ip_address, loc.port, req.scan_commands)


def run(script, expected=None):
    FakeScanner.runs, FakeScanner.script = [], script
    slept: list[float] = []
    gathered = run_sslyze(
        "mx.test",
        [("10.0.0.2", 993), ("10.0.0.2", 25)],
        scanner_factory=FakeScanner,
        sleep=slept.append,
        expected=expected,
    )
    return gathered, slept


def test_a_transient_timeout_is_retried_alone_with_one_connection_and_then_passes():
    flaky = {"tls_1_2_cipher_suites": TimeoutError("TlsHandshakeTimedOut")}
    gathered, slept = run(
        [
            lambda ip, port, cmds: server_result(ip, port, flaky if port == 993 else None, cmds),
            lambda ip, port, cmds: server_result(ip, port, None, cmds),
        ]
    )
    assert len(FakeScanner.runs) == 2 and slept == [scanmod.RETRY_DELAYS[0]]
    retry = FakeScanner.runs[1]
    assert retry.limits["per_server_concurrent_connections_limit"] == 1
    assert [(r.server_location.port, r.scan_commands) for r in retry.requests] == [
        (993, {ScanCommand.TLS_1_2_CIPHER_SUITES})
    ]
    scan = port_scan(993, "10.0.0.2", gathered[("10.0.0.2", 993)])
    assert scan.retries == 1 and not scan.incomplete and "TLSv1.2" in scan.protocols
    assert judged(scan).ok


def test_a_check_that_never_completes_is_incomplete_after_every_retry():
    stuck = {"tls_1_3_cipher_suites": ConnectionResetError("reset")}
    gathered, slept = run(
        [lambda ip, port, cmds: server_result(ip, port, stuck if port == 993 else None, cmds)] * 3
    )
    assert slept == list(scanmod.RETRY_DELAYS)
    scan = port_scan(993, "10.0.0.2", gathered[("10.0.0.2", 993)])
    assert scan.incomplete and "tls_1_3_cipher_suites did not complete" in scan.incomplete[0]
    assert not judged(scan).ok


def test_a_refused_connection_is_final_a_timeout_is_retried():
    class ServerRejectedConnection(Exception):  # noqa: N818  (sslyze's name: the name is what counts)
        pass

    gathered, _ = run(
        [
            lambda ip, port, cmds: server_result(
                ip, port, connectivity=ServerRejectedConnection("RST")
            )
        ]
    )
    assert len(FakeScanner.runs) == 1
    assert port_scan(25, "10.0.0.2", gathered[("10.0.0.2", 25)]).state == "closed"

    class ConnectionToServerTimedOut(Exception):  # noqa: N818
        pass

    def flaky_993(ip, port, cmds):
        if port == 993 and len(FakeScanner.runs) == 1:
            return server_result(ip, port, connectivity=ConnectionToServerTimedOut("timed out"))
        return server_result(ip, port, None, cmds)

    gathered, _ = run([flaky_993] * 3, expected=(25, 993))
    assert (
        len(FakeScanner.runs) == 2
        and port_scan(993, "10.0.0.2", gathered[("10.0.0.2", 993)]).state == "open"
    )
    gathered, _ = run(
        [flaky_993] * 3, expected=(25,)
    )  # 993 not expected: a timeout is taken as filtered
    assert (
        len(FakeScanner.runs) == 1
        and port_scan(993, "10.0.0.2", gathered[("10.0.0.2", 993)]).state == "closed"
    )


# --- resumption judged against tls_resumption --------------------------------------------------


def postfix_resumption(hint=4800, **kw):
    return Resumed(
        tls12_session_id=False,
        tls12_ticket=True,
        tls12_ticket_issued=True,
        tls12_lifetime_hint=hint,
        tls13=True,
        tls13_lifetime_hint=hint,
        **kw,
    )


def port(number, res, **kw):
    return PortScan(
        number,
        "x",
        "open",
        protocols=["TLSv1.2", "TLSv1.3"],
        suites=[
            AcceptedSuite(
                "TLSv1.2",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "ECDHE-RSA-AES128-GCM-SHA256",
                "ECDH",
                "X25519",
                253,
            )
        ],
        resumption=res,
        **kw,
    )


def test_postfix_bounded_resumption_passes_and_its_window_is_three_quarters_of_the_hint():
    assert judged(port(25, postfix_resumption()), resumption=BOUNDED).ok
    assert window(25, postfix_resumption(), BOUNDED) == 3600


def test_postfix_ticket_keys_outliving_the_window_fail():
    v = judged(port(587, postfix_resumption(hint=7200)), resumption=BOUNDED)
    assert any("lifetime hint 7200 s" in f for f in v.failures), v.failures


def test_resumption_off_fails_any_ticket_or_resumption():
    v = judged(port(465, postfix_resumption()), resumption=OFF)
    assert any("issues TLS 1.2 session tickets" in f for f in v.failures)
    assert any("resumes TLS 1.3" in f for f in v.failures)
    assert judged(port(465, Resumed(False, False, False, None, False, None)), resumption=OFF).ok


def test_dovecot_issuing_tls12_tickets_fails():
    res = Resumed(
        tls12_session_id=False,
        tls12_ticket=False,
        tls12_ticket_issued=True,
        tls12_lifetime_hint=7200,
        tls13=False,
        tls13_lifetime_hint=7200,
    )
    v = judged(port(993, res), resumption=BOUNDED)
    assert any("can never honour" in f for f in v.failures), v.failures
    res.tls12_ticket_issued, res.tls12_lifetime_hint = False, None
    assert judged(port(993, res), resumption=BOUNDED).ok
    assert window(993, res, BOUNDED) == 0


def test_tls13_resumption_without_dhe_fails():
    res = postfix_resumption(tls13_psk_ke_only="resumed without (EC)DHE")
    assert any("without a fresh (EC)DHE" in f for f in judged(port(25, res)).failures)
    assert judged(port(25, postfix_resumption(tls13_psk_ke_only="full handshake"))).ok


def test_session_id_resumption_fails():
    v = judged(port(25, Resumed(tls12_session_id=True)))
    assert any("session ID" in f for f in v.failures)


# --- certificate -------------------------------------------------------------------------------


def cert(**kw: Any) -> Certificate:
    base = Certificate(
        subject="CN=mx.example.org",
        names=["mx.example.org"],
        key_type="RSA",
        key_bits=2048,
        signature_hash="sha256",
        not_after=(NOW + timedelta(days=300)).isoformat(),
        chain_length=1,
    )
    return replace(base, **kw)


def test_expired_certificate_fails_close_one_warns():
    v = judged(
        port(
            25,
            postfix_resumption(),
            certificate=cert(not_after=(NOW - timedelta(days=1)).isoformat()),
        )
    )
    assert any("certificate expired" in f for f in v.failures)
    v = judged(
        port(
            25,
            postfix_resumption(),
            certificate=cert(not_after=(NOW + timedelta(days=5)).isoformat()),
        )
    )
    assert v.ok and any("expires in 5 days" in w for w in v.warnings)


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"key_bits": 1024}, "RSA key of 1024 bits"),
        ({"key_type": "EllipticCurve", "key_bits": 192}, "EC key of 192 bits"),
        ({"signature_hash": "sha1"}, "signed with SHA1"),
    ],
)
def test_weak_certificates_fail(kw, msg):
    v = judged(port(25, postfix_resumption(), certificate=cert(**kw)))
    assert any(msg in f for f in v.failures), v.failures


def test_certificate_name_mismatch_warns():
    v = judged(port(25, postfix_resumption(), certificate=cert()), cert_name="other.example.org")
    assert v.ok and any("do not match other.example.org" in w for w in v.warnings)


@pytest.mark.parametrize(
    "name,patterns,ok",
    [
        ("mx.example.org", ["mx.example.org"], True),
        ("MX.example.org.", ["mx.example.org"], True),
        ("mx.example.org", ["*.example.org"], True),
        ("a.mx.example.org", ["*.example.org"], False),
        ("example.org", ["*.example.org"], False),
        ("mx.example.org", ["mx.example.com"], False),
    ],
)
def test_name_matches(name, patterns, ok):
    assert name_matches(name, patterns) is ok


# --- compression, EMS, renegotiation, server order, groups, PQ ----------------------------------


def test_compression_missing_ems_and_insecure_renegotiation_fail():
    scan = port(
        25,
        postfix_resumption(),
        compression=True,
        extended_master_secret=False,
        secure_renegotiation=False,
    )
    f = judged(scan).failures
    assert "TLS compression on (CRIME)" in f and "no extended master secret (RFC 7627)" in f
    assert "no secure renegotiation (RFC 5746)" in f


def test_legacy_dhe_server_order_not_enforced_fails_only_where_the_profile_says_so():
    scan = port(
        25,
        postfix_resumption(),
        server_order=False,
        server_order_note="client preferring DHE got DHE-RSA-AES256-GCM-SHA384",
    )
    assert any("server cipher order not enforced" in f for f in judged(scan, LEGACY).failures)
    assert judged(scan, INTERMEDIATE).ok


def test_pq_hybrid_missing_where_promised_fails_and_offered_where_not_fails():
    scan = port(
        25, postfix_resumption(), pq_hybrid=False, pq_note="HelloRetryRequest selected group 0x001d"
    )
    assert any("X25519MLKEM768 not offered" in f for f in judged(scan, pq_hybrid=True).failures)
    assert judged(scan, pq_hybrid=False).ok
    scan.pq_hybrid = True
    assert any("offered though" in f for f in judged(scan, pq_hybrid=False).failures)
    assert judged(scan, pq_hybrid=None).ok  # host OpenSSL unknown: not judged


def test_groups_outside_the_policy_fail():
    scan = port(
        25, postfix_resumption(), curves=["X25519", "secp256r1", "secp384r1", "X448", "secp521r1"]
    )
    assert "offers groups outside the policy: X448, secp521r1" in judged(scan).failures


# --- every address ------------------------------------------------------------------------------


def test_every_address_is_resolved_once(monkeypatch):
    infos = [
        (socket.AF_INET6, 1, 6, "", ("2001:db8::25", 0, 0, 0)),
        (socket.AF_INET, 1, 6, "", ("192.0.2.25", 0)),
        (socket.AF_INET6, 1, 6, "", ("2001:db8::25", 0, 0, 0)),
    ]
    monkeypatch.setattr(scanmod.socket, "getaddrinfo", lambda *a, **k: infos)
    assert scanmod.addresses_of("mx.example.org") == ["2001:db8::25", "192.0.2.25"]


def test_an_expected_port_missing_on_one_address_fails_there():
    scans = [port(p, postfix_resumption(), ip="192.0.2.25") for p in (25, 587)] + [
        port(25, postfix_resumption(), ip="2001:db8::25")
    ]
    verdicts = judge_host(scans, INTERMEDIATE, (25, 587), Expect(now=NOW))
    failures = [(v.ip, f) for v in verdicts for f in v.failures]
    assert failures == [("2001:db8::25", "port 587 was not scanned on 2001:db8::25")]


def test_readme_lists_every_json_key_of_a_port():
    """The README documents the JSON: every key a port entry has is named there."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    scan = PortScan(25, "smtp", "open", certificate=cert())
    keys = (
        set(scan.to_dict()) | set(scan.to_dict()["resumption"]) | set(scan.to_dict()["certificate"])
    )
    keys |= {"window_seconds", "ok", "failures", "warnings"}
    assert sorted(k for k in keys if f"`{k}`" not in readme) == []


def test_rfc7919_formula_gives_the_shipped_groups_and_safe_primes_past_them():
    """rfc7919_prime() is RFC 7919's appendix A: with each shipped group's X it gives that
    group's prime as files/dh has it, and with 6144's and 8192's a prime (Fermat, base 2: a
    wrong X, off by one even, would fail it)."""
    from cryptography.hazmat.primitives.serialization import load_pem_parameters

    from tasks.assets import FILES
    from tasks.audit.scan import RFC7919_X, dh_group, rfc7919_prime

    shipped_x = {2048: 560316, 3072: 2625351, 4096: 5736041}  # RFC 7919 A.1-A.3
    for bits, x in shipped_x.items():
        pem = (FILES / "dh" / f"ffdhe{bits}.pem").read_bytes()
        assert rfc7919_prime(bits, x) == load_pem_parameters(pem).parameter_numbers().p, bits
    for bits, x in RFC7919_X.items():
        p = rfc7919_prime(bits, x)
        assert p.bit_length() == bits
        assert pow(2, p - 1, p) == 1, bits
        assert dh_group(p.to_bytes(bits // 8, "big")) == f"ffdhe{bits}"
    assert dh_group(rfc7919_prime(6144, RFC7919_X[6144] + 1).to_bytes(768, "big")) == "custom"
