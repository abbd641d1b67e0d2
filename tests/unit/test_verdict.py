"""The verdict and the suite classification, on hand-made scans shaped like real sslyze output."""

import pytest

from tasks.audit.probes import parse_pq_answer, pq_client_hello
from tasks.audit.verdict import AcceptedSuite, PortScan, classify_suite, judge_host, judge_port
from tasks.audit.wire import HRR_RANDOM, X25519MLKEM768
from tasks.policy import HostCaps, resolve

CAPS = HostCaps(postfix=None, dovecot=None, openssl=(3, 0, 15))
INTERMEDIATE = resolve("intermediate", CAPS)
LEGACY = resolve("legacy-dhe", CAPS, dh_file="/etc/ssl/mailtls/dh.pem")
GOOD = [
    AcceptedSuite(
        "TLSv1.2",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDH",
        "X25519",
        253,
    ),
    AcceptedSuite(
        "TLSv1.3", "TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384", "ECDH", "X25519", 253
    ),
]


def open_port(port=25, protocols=("TLSv1.2", "TLSv1.3"), suites=GOOD, **kw) -> PortScan:
    return PortScan(
        port=port, service="x", state="open", protocols=list(protocols), suites=list(suites), **kw
    )


@pytest.mark.parametrize(
    "name,fs,kex",
    [
        ("ECDHE-RSA-AES128-GCM-SHA256", True, "ECDHE"),
        ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", True, "ECDHE"),
        ("DHE-RSA-AES256-GCM-SHA384", True, "DHE"),
        ("TLS_DHE_RSA_WITH_AES_128_CBC_SHA", True, "DHE"),
        ("TLS_AES_128_GCM_SHA256", True, "TLS1.3"),
        ("TLS_CHACHA20_POLY1305_SHA256", True, "TLS1.3"),
        ("AES128-SHA", False, "RSA"),
        ("TLS_RSA_WITH_AES_256_GCM_SHA384", False, "RSA"),
        ("ADH-AES128-SHA", False, "anonymous"),
        ("AECDH-AES256-SHA", False, "anonymous"),
        ("TLS_DH_anon_WITH_AES_128_CBC_SHA", False, "anonymous"),
        ("TLS_ECDH_anon_WITH_AES_256_CBC_SHA", False, "anonymous"),
        ("EXP-RC4-MD5", False, "export"),
        ("TLS_RSA_EXPORT_WITH_RC4_40_MD5", False, "export"),
        ("NULL-SHA", False, "NULL"),
        ("TLS_ECDHE_RSA_WITH_NULL_SHA", False, "NULL"),
        ("ECDHE-RSA-NULL-SHA", False, "NULL"),
        ("PSK-AES128-GCM-SHA256", False, "PSK"),
        ("ECDHE-PSK-AES128-CBC-SHA256", False, "PSK"),
        ("TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256", False, "PSK"),
        ("ECDH-RSA-AES128-SHA", False, "static-ECDH"),
        ("DES-CBC3-SHA", False, "RSA"),
    ],
)
def test_classify_suite(name, fs, kex):
    c = classify_suite(name)
    assert (c.forward_secret, c.kex) == (fs, kex)
    assert (c.problem is None) == fs


def test_good_port_passes():
    v = judge_port(open_port(), INTERMEDIATE)
    assert v.ok, v.failures


def test_stock_port25_fails_and_names_protocols_and_suites():
    suites = GOOD + [
        AcceptedSuite("TLSv1", "TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA"),
        AcceptedSuite("TLSv1.2", "TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA"),
        AcceptedSuite(
            "TLSv1.2", "TLS_DH_anon_WITH_AES_128_CBC_SHA", "ADH-AES128-SHA", "DH", None, 1024
        ),
    ]
    v = judge_port(
        open_port(protocols=("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"), suites=suites), INTERMEDIATE
    )
    text = "\n".join(v.failures)
    assert (
        "accepts TLSv1 (floor TLSv1.2)" in v.failures
        and "accepts TLSv1.1 (floor TLSv1.2)" in v.failures
    )
    assert (
        "TLS_RSA_WITH_AES_128_CBC_SHA (RSA key exchange, not forward-secret) on TLSv1, TLSv1.2"
        in text
    )
    assert "TLS_DH_anon_WITH_AES_128_CBC_SHA (anonymous, no authentication)" in text
    assert "1024-bit DH group" in text


def test_port25_floor_is_opportunistic_and_others_mandatory():
    modern = resolve("modern", CAPS)
    assert judge_port(open_port(25), modern).ok
    v = judge_port(open_port(587), modern)
    assert v.failures == ["accepts TLSv1.2 (floor TLSv1.3)"]


def test_dh_2048_ok_smaller_fails():
    dhe = AcceptedSuite(
        "TLSv1.2",
        "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
        "DHE-RSA-AES128-GCM-SHA256",
        "DH",
        None,
        2048,
    )
    assert judge_port(open_port(suites=GOOD + [dhe]), LEGACY).ok
    small = AcceptedSuite(**{**vars(dhe), "key_bits": 1536})
    assert not judge_port(open_port(suites=[small]), LEGACY).ok


def test_client_renegotiation_fails():
    v = judge_port(open_port(client_renegotiation=True), INTERMEDIATE)
    assert v.failures == ["accepts client-initiated renegotiation"]


def test_closed_port_fails_only_when_expected():
    closed = PortScan(587, "submission", "closed", "ServerRejectedConnection")
    assert judge_port(closed, INTERMEDIATE, expected=True).failures
    v = judge_port(closed, INTERMEDIATE, expected=False)
    assert v.ok and v.warnings


def test_judge_host_flags_expected_port_not_scanned():
    verdicts = judge_host([open_port(25)], INTERMEDIATE, expected_ports=(25, 993))
    assert [v.port for v in verdicts if not v.ok] == [993]


def test_pq_probe_hello_offers_only_the_hybrid_group():
    hello = pq_client_hello()
    assert hello[:3] == b"\x16\x03\x01" and len(hello) == 5 + int.from_bytes(hello[3:5], "big")
    assert b"\x00\x0a\x00\x04\x00\x02\x11\xec" in hello  # supported_groups = [X25519MLKEM768]
    assert b"\x00\x33\x00\x02\x00\x00" in hello  # empty key_share


def _server_hello(random: bytes, group: int) -> bytes:
    exts = b"\x00\x2b\x00\x02\x03\x04" + b"\x00\x33\x00\x02" + group.to_bytes(2, "big")
    body = (
        b"\x03\x03"
        + random
        + b"\x20"
        + bytes(32)
        + b"\x13\x01\x00"
        + len(exts).to_bytes(2, "big")
        + exts
    )
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + len(hs).to_bytes(2, "big") + hs


def test_pq_answer_parsing():
    assert parse_pq_answer(_server_hello(HRR_RANDOM, X25519MLKEM768))[0] is True
    assert parse_pq_answer(_server_hello(HRR_RANDOM, 0x001D)) == (
        False,
        "HelloRetryRequest selected group 0x001d",
    )
    assert parse_pq_answer(_server_hello(bytes(32), X25519MLKEM768))[0] is False
    assert parse_pq_answer(b"\x15\x03\x03\x00\x02\x02\x28")[0] is False
