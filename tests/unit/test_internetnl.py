"""internet.nl's mail TLS subtests graded from a port's scan (tasks/audit/internetnl.py): what a
default-profile port, a legacy-dhe port and a stock Debian port grade, subtest by subtest."""

from __future__ import annotations

from dataclasses import replace

import pytest
from auditresults import ECDHE, RSA_KX, certificate, open_port
from s_server import s_server

from tasks.audit.internetnl import LEVELS, NOT_TESTED, SUBTESTS, grade, worst
from tasks.audit.verdict import AcceptedSuite, PortScan

DHE = AcceptedSuite(
    "TLSv1.2",
    "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    "DHE-RSA-AES256-GCM-SHA384",
    "DH",
    None,
    3072,
    "ffdhe3072",
)


def ecdsa_port(**changes) -> PortScan:
    """A default-profile port with an ECDSA P-256 certificate."""
    cert = replace(certificate(), key_type="EllipticCurve", key_bits=256)
    return replace(open_port(25, cert=cert), **changes)


def test_every_subtest_is_graded_or_says_not_tested():
    g = grade(open_port(25))
    assert tuple(g) == SUBTESTS
    assert set(g.values()) <= {*LEVELS, NOT_TESTED}
    for dns_or_untested in ("key_exchange_hash", "zero_rtt", "dane", "caa"):
        assert g[dns_or_untested] == NOT_TESTED


def test_the_default_profile_grades_nothing_below_sufficient():
    g = grade(ecdsa_port())
    assert worst(g) == "sufficient", g
    assert g["version"] == "sufficient"  # TLS 1.2 beside 1.3
    assert g["key_exchange"] == "good" and g["cert_public_key"] == "good"
    assert g["cipher_order"] == "good"  # every TLS 1.2 suite of one level: order does not matter


def test_legacy_dhe_is_phase_out_by_its_suites_and_its_group():
    g = grade(ecdsa_port(suites=[*ECDHE, DHE], server_order=True))
    assert (g["ciphers"], g["key_exchange"], g["cipher_order"]) == ("phase-out",) * 2 + ("good",)
    assert worst(g) == "phase-out"
    # The client's order where suites differ in level: insufficient; not probed: not tested.
    assert grade(ecdsa_port(suites=[*ECDHE, DHE], server_order=False))["cipher_order"] == (
        "insufficient"
    )
    assert grade(ecdsa_port(suites=[*ECDHE, DHE]))["cipher_order"] == NOT_TESTED


def test_ffdhe2048_and_groups_of_ones_own_are_insufficient():
    for group in ("ffdhe2048", "custom"):
        g = grade(ecdsa_port(suites=[*ECDHE, replace(DHE, key_bits=2048, dh_group=group)]))
        assert g["key_exchange"] == "insufficient", (group, g)
    assert grade(ecdsa_port(curves=["X25519", "secp224r1"]))["key_exchange"] == "phase-out"
    # The hybrid post-quantum group is in none of internet.nl's tables: not graded.
    assert grade(ecdsa_port(curves=["X25519MLKEM768", "X25519"]))["key_exchange"] == "good"


def test_a_stock_debian_port_is_insufficient_by_version_and_suites():
    stock = ecdsa_port(
        protocols=["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"], suites=[*ECDHE, RSA_KX]
    )
    g = grade(stock)
    assert g["version"] == "insufficient" and g["ciphers"] == "insufficient"
    assert worst(g) == "insufficient"


def test_renegotiation_compression_and_ems():
    assert grade(ecdsa_port(compression=True))["compression"] == "insufficient"
    assert grade(ecdsa_port(client_renegotiation=True))["client_renegotiation"] == "insufficient"
    assert grade(ecdsa_port(secure_renegotiation=False))["secure_renegotiation"] == "insufficient"
    assert grade(ecdsa_port(extended_master_secret=False))["extended_master_secret"] == "phase-out"
    # TLS 1.3 alone: none of the three exists there.
    only13 = grade(ecdsa_port(protocols=["TLSv1.3"], secure_renegotiation=False))
    assert only13["secure_renegotiation"] == only13["extended_master_secret"] == "good"


def test_certificate_key_and_signature():
    def cert_grade(**changes) -> tuple[str, str]:
        g = grade(open_port(25, cert=replace(certificate(), **changes)))
        return g["cert_public_key"], g["cert_signature"]

    assert cert_grade(key_bits=2048) == ("phase-out", "sufficient")
    assert cert_grade(key_bits=3072) == ("good", "sufficient")
    assert cert_grade(key_bits=1024, signature_hash="sha1") == ("insufficient", "insufficient")


def test_a_port_without_tls_is_not_tested():
    closed = PortScan(port=587, service="submission", state="closed")
    assert set(grade(closed).values()) == {NOT_TESTED} and worst(grade(closed)) is None


def test_the_json_has_each_ports_grades(audit_result):
    result = audit_result("mx1", [open_port(25), open_port(993)])
    assert [p["internet_nl"]["version"] for p in result["ports"]] == ["sufficient"] * 2
    assert result["ports"][0]["internet_nl"]["cert_public_key"] == "phase-out"  # RSA 2048


def test_key_exchange_hash_grades_what_the_sha1_probe_found():
    assert grade(ecdsa_port(sha1_key_exchange=True))["key_exchange_hash"] == "insufficient"
    assert grade(ecdsa_port(sha1_key_exchange=False))["key_exchange_hash"] == "good"
    assert grade(ecdsa_port())["key_exchange_hash"] == NOT_TESTED  # could not tell
    assert grade(ecdsa_port(protocols=["TLSv1.3"]))["key_exchange_hash"] == "good"


@pytest.mark.parametrize(
    ("server_args", "signs_sha1"),
    [
        (("-cipher", "DEFAULT@SECLEVEL=0", "-sigalgs", "RSA+SHA1:RSA+SHA256"), True),
        ((), False),  # OpenSSL 3's default security level: no SHA-1 signatures in TLS
    ],
)
def test_the_sha1_probe_against_a_real_server(tmp_path, monkeypatch, server_args, signs_sha1):
    from tasks.audit import scan
    from tasks.policy import PORTS

    with s_server(tmp_path, *server_args) as port:
        monkeypatch.setitem(scan.PORTS, port, PORTS[465])  # implicit TLS, like 465
        found, note = scan.probe_sha1_key_exchange("127.0.0.1", "127.0.0.1", port)
    assert found is signs_sha1, note
