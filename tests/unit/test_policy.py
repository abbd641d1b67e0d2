"""The policy model: profiles as data, resolved per host capabilities."""

import pytest

from tasks.policy import (
    CLASSIC_GROUPS,
    DHE_AEAD,
    ECDHE_AEAD,
    PQ_HYBRID,
    PROFILES,
    HostCaps,
    parse_version,
    protocols_at_least,
    resolve,
)

DEB12 = HostCaps(postfix=(3, 7, 11), dovecot=(2, 3, 19, 1), openssl=(3, 0, 20))
DEB13 = HostCaps(postfix=(3, 10, 13), dovecot=(2, 4, 1), openssl=(3, 5, 9))


@pytest.mark.parametrize(
    "text,expected",
    [
        ("3.7.11", (3, 7, 11)),
        ("2.3.19.1 (9b53102964)", (2, 3, 19, 1)),
        ("2.4.1-4 (7d8c0e5759)", (2, 4, 1)),
        ("OpenSSL 3.5.9 29 Sep 2026 (Library: OpenSSL 3.5.9 29 Sep 2026)", (3, 5, 9)),
    ],
)
def test_parse_version(text, expected):
    assert parse_version(text) == expected


def test_parse_version_refuses_garbage():
    with pytest.raises(ValueError):
        parse_version("command not found")


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_is_forward_secret_aead_only(name):
    profile = PROFILES[name]
    for suite in profile.tls12_suites:
        assert suite.startswith(("ECDHE-", "DHE-")), suite
        assert "GCM" in suite or "CHACHA20-POLY1305" in suite, suite
    assert profile.opportunistic_min_protocol == "TLSv1.2"  # port 25 never above the floor


def test_pq_hybrid_only_where_openssl_supports_it():
    assert resolve("intermediate", DEB13).groups == (PQ_HYBRID,) + CLASSIC_GROUPS
    assert PQ_HYBRID not in resolve("intermediate", DEB12).groups
    assert PQ_HYBRID not in resolve("intermediate", DEB13, pq_hybrid=False).groups


def test_modern_tightens_only_mandatory_tls():
    p = resolve("modern", DEB12)
    assert p.mandatory_min_protocol == "TLSv1.3"
    assert p.opportunistic_min_protocol == "TLSv1.2"


def test_legacy_dhe_needs_and_keeps_a_dh_file():
    with pytest.raises(ValueError, match="DH parameter file"):
        resolve("legacy-dhe", DEB12)
    p = resolve("legacy-dhe", DEB12, dh_file="/etc/ssl/mailtls/dh.pem")
    assert p.offers_dhe and p.dh_file == "/etc/ssl/mailtls/dh.pem"
    assert p.tls12_suites == ECDHE_AEAD + DHE_AEAD
    assert p.server_preference  # ECDHE before DHE
    assert p.notes == ()  # Postfix 3.7: no deprecation warning


def test_legacy_dhe_warns_on_postfix_39_and_later():
    p = resolve("legacy-dhe", DEB13, dh_file="/etc/ssl/mailtls/dh.pem")
    assert any("deprecates smtpd_tls_dh1024_param_file" in n for n in p.notes)


def test_profiles_without_dhe_drop_the_dh_file():
    assert resolve("intermediate", DEB12, dh_file="/x").dh_file is None


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="unknown TLS profile 'strong'"):
        resolve("strong", DEB12)


def test_protocols_at_least():
    assert protocols_at_least("TLSv1.2") == ("TLSv1.2", "TLSv1.3")
    assert protocols_at_least("TLSv1.3") == ("TLSv1.3",)
