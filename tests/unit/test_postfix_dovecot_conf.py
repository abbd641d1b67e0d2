"""The daemon views: each policy rendered for Postfix 3.7/3.10/3.11 and Dovecot 2.3/2.4.1/2.4.5."""

import pytest

from tasks.dovecot import conf as dovecot_conf
from tasks.policy import HostCaps, resolve
from tasks.postfix import conf as postfix_conf

DEB12 = HostCaps(postfix=(3, 7, 11), dovecot=(2, 3, 19, 1), openssl=(3, 0, 20))
DEB13 = HostCaps(postfix=(3, 10, 13), dovecot=(2, 4, 1), openssl=(3, 5, 9))
DEB14 = HostCaps(postfix=(3, 11, 7), dovecot=(2, 4, 5), openssl=(3, 6, 5))  # forky, testing
DH = "/etc/ssl/mailtls/dh.pem"
STOCK_MAIN = {
    "smtpd_tls_security_level": "may",
    "smtp_tls_security_level": "may",
    "smtpd_tls_eecdh_grade": "strong",
}
STOCK_SERVICES = {"smtp/inet": "smtp inet n - y - - smtpd"}


def pf(profile, caps, **kw):
    policy = resolve(profile, caps, dh_file=DH)
    return postfix_conf.render(policy, caps, STOCK_MAIN, STOCK_SERVICES, **kw)


def test_postfix_37_intermediate():
    conf = pf("intermediate", DEB12)
    assert conf.main["smtpd_tls_protocols"] == ">=TLSv1.2"
    assert conf.main["tls_high_cipherlist"].split(":")[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert conf.main["smtpd_tls_ciphers"] == "high"
    assert conf.main["tls_eecdh_auto_curves"] == "X25519 prime256v1 secp384r1"
    assert conf.main["tls_ssl_options"] == "NO_RENEGOTIATION"
    assert "tls_ffdhe_auto_groups" not in conf.main  # unknown to 3.7: would warn
    assert "smtpd_tls_dh1024_param_file" in conf.remove
    assert "smtpd_tls_eecdh_grade" in conf.remove  # the seed's obsolete line
    assert conf.main["smtpd_tls_loglevel"] == "1"
    assert "smtp_tls_security_level" not in conf.main  # outbound left as it is ("may")


def test_postfix_310_intermediate():
    conf = pf("intermediate", DEB13)
    # the hybrid group in a tier of its own: asked for by HelloRetryRequest where a client
    # offers it with a classic share only (Postfix 3.11's client)
    assert conf.main["tls_eecdh_auto_curves"] == "X25519MLKEM768/X25519 prime256v1 secp384r1"
    assert conf.main["tls_ffdhe_auto_groups"] == ""
    assert "tls_ssl_options" not in conf.main  # renegotiation is always off on 3.10


def test_postfix_311_intermediate_is_310s_view():
    """Postfix 3.11 (Debian 14) needs nothing of its own: no setting of ours is deprecated
    there (its tls_eecdh_auto_curves / tls_ffdhe_auto_groups deprecation is compiled out)."""
    conf = pf("intermediate", DEB14)
    assert conf.main == pf("intermediate", DEB13).main
    assert conf.main["tls_eecdh_auto_curves"] == "X25519MLKEM768/X25519 prime256v1 secp384r1"
    assert conf.main["tls_ffdhe_auto_groups"] == ""  # 3.11's default with OpenSSL >= 3.5: checked
    assert "tls_ssl_options" not in conf.main
    assert "smtpd_tls_eecdh_grade" in conf.remove
    # the client's groups: 3.11's own default, still needed beside main.cf's server list
    policy = resolve("intermediate", DEB14)
    assert postfix_conf.client_cf(policy) == {"tls_eecdh_auto_curves": "?X25519MLKEM768:DEFAULT"}
    share = resolve("intermediate", DEB14, outbound_pq_share=True)
    assert postfix_conf.client_cf(share) == {"tls_eecdh_auto_curves": "DEFAULT"}


@pytest.mark.parametrize("profile", ["intermediate", "modern", "legacy-dhe"])
def test_postfix_and_dovecot_views_alike_on_debian_13_and_14(profile):
    for render in (
        lambda caps: pf(profile, caps),
        lambda caps: dovecot_conf.render(resolve(profile, caps, dh_file=DH), caps),
    ):
        assert render(DEB14) == render(DEB13), profile


def test_postfix_legacy_dhe_sets_dh_file_and_server_preference():
    conf = pf("legacy-dhe", DEB13)
    assert conf.main["smtpd_tls_dh1024_param_file"] == DH
    assert "smtpd_tls_dh1024_param_file" not in conf.remove
    assert conf.main["tls_preempt_cipherlist"] == "yes"
    assert "DHE-RSA-AES256-GCM-SHA384" in conf.main["tls_high_cipherlist"]


def test_postfix_submission_services_created_and_hardened():
    conf = pf("modern", DEB12)
    assert set(conf.services) == {"submission/inet", "submissions/inet"}
    assert conf.params["submission/inet/smtpd_tls_security_level"] == "encrypt"
    assert conf.params["submission/inet/smtpd_tls_mandatory_protocols"] == ">=TLSv1.3"
    assert conf.params["submissions/inet/smtpd_tls_wrappermode"] == "yes"
    assert "submission/inet/smtpd_tls_wrappermode" not in conf.params


def test_postfix_existing_service_hardened_even_when_not_enabled():
    services = dict(STOCK_SERVICES, **{"submission/inet": "submission inet n - y - - smtpd"})
    policy = resolve("intermediate", DEB12)
    conf = postfix_conf.render(
        policy, DEB12, STOCK_MAIN, services, submission=False, submissions=False
    )
    assert conf.services == {}
    assert conf.params["submission/inet/smtpd_tls_security_level"] == "encrypt"
    assert not any(k.startswith("submissions/") for k in conf.params)


def test_postfix_turns_tls_on_where_it_was_off():
    conf = postfix_conf.render(resolve("intermediate", DEB12), DEB12, {}, STOCK_SERVICES)
    assert conf.main["smtpd_tls_security_level"] == "may"
    assert conf.main["smtp_tls_security_level"] == "may"


def test_postfix_certificate_from_settings():
    conf = pf("intermediate", DEB12, cert_file="/etc/ssl/mx.pem", key_file="/etc/ssl/mx.key")
    assert conf.main["smtpd_tls_cert_file"] == "/etc/ssl/mx.pem"


def lines(text):
    return dict(
        line.split(" = ", 1)
        for line in text.splitlines()
        if " = " in line and not line.startswith("#")
    )


def test_dovecot_23():
    conf = lines(dovecot_conf.render(resolve("intermediate", DEB12), DEB12))
    assert conf["ssl_min_protocol"] == "TLSv1.2"
    assert conf["ssl_prefer_server_ciphers"] == "no"
    assert conf["ssl_curve_list"] == "X25519:prime256v1:secp384r1"  # never ML-KEM on OpenSSL 3.0
    assert "%{ssl_security}" in conf["login_log_format_elements"]
    assert "ssl_server_prefer_ciphers" not in conf and "ssl_dh" not in conf


def test_dovecot_24_modern_with_cert():
    text = dovecot_conf.render(
        resolve("modern", DEB13), DEB13, "/etc/ssl/imap.pem", "/etc/ssl/imap.key"
    )
    conf = lines(text)
    assert conf["ssl_min_protocol"] == "TLSv1.3"
    assert conf["ssl_server_prefer_ciphers"] == "client"
    assert conf["ssl_curve_list"] == "X25519MLKEM768/X25519:prime256v1:secp384r1"
    assert conf["ssl_server_cert_file"] == "/etc/ssl/imap.pem"  # 2.4: no '<'
    assert "%{user}" in conf["login_log_format_elements"]  # 2.4 removed one-letter variables
    assert "%u" not in conf["login_log_format_elements"] and "%k" not in text


def test_dovecot_245_gets_the_24_file_and_its_readback_names():
    text = dovecot_conf.render(resolve("intermediate", DEB14), DEB14)
    conf = lines(text)
    assert conf["ssl_server_prefer_ciphers"] == "client"
    assert conf["ssl_curve_list"] == "X25519MLKEM768/X25519:prime256v1:secp384r1"
    assert "%{ssl_security}" in conf["login_log_format_elements"]
    # read back in the ssl_server filter (mailtls-apply asks filter paths first: 2.4.5 drops
    # one asked after a plain name)
    back = dovecot_conf.readback(text)
    assert back["ssl_server/prefer_ciphers"] == "client"
    assert "ssl_server_prefer_ciphers" not in back


def test_dovecot_dh_file_per_version():
    assert "ssl_dh = <" + DH in dovecot_conf.render(resolve("legacy-dhe", DEB12, dh_file=DH), DEB12)
    assert "ssl_server_dh_file = " + DH in dovecot_conf.render(
        resolve("legacy-dhe", DEB13, dh_file=DH), DEB13
    )


def test_dovecot_unsupported_version():
    caps = HostCaps(postfix=(3, 7), dovecot=(2, 2, 36), openssl=(3, 0))
    with pytest.raises(ValueError, match="Dovecot 2.2 is not supported"):
        dovecot_conf.render(resolve("intermediate", caps), caps)


@pytest.mark.parametrize("caps", [DEB12, DEB13])
@pytest.mark.parametrize("resumption,timeout", [("bounded", "2400s"), ("off", "0s")])
def test_resumption_rendered_for_both_daemons(caps, resumption, timeout):
    policy = resolve("intermediate", caps, resumption=resumption)
    main = postfix_conf.render(policy, caps, STOCK_MAIN, STOCK_SERVICES).main
    assert main["smtpd_tls_session_cache_timeout"] == timeout
    assert main["smtpd_tls_session_cache_database"] == ""  # never master secrets on disk
    # Dovecot's login processes die after one connection: no TLS 1.2 tickets, whatever the policy
    assert "\nssl_options = no_ticket\n" in dovecot_conf.render(policy, caps)


def test_bounded_resumption_window_is_one_hour():
    r = resolve("intermediate", DEB13).resumption
    assert (r.name, r.postfix_window, r.postfix_lifetime_hint) == ("bounded", 3600, 4800)
