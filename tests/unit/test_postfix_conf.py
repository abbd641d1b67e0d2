"""master.cf on lived-in servers: services found by the port they listen on, reused, never doubled;
only TLS-policy -o options touched."""

import pytest
from mastercf import postconf

from tasks.host_conf import render as host_render
from tasks.host_facts import HostFacts
from tasks.policy import CLIENT_HELLO_MAX, HostCaps, resolve
from tasks.postfix import apply as postfix_apply
from tasks.postfix import conf as postfix_conf
from tasks.safety import verify as verify_conf
from tasks.settings import validate

DEB12 = HostCaps(postfix=(3, 7, 11), dovecot=(2, 3, 19, 1), openssl=(3, 0, 20))
POLICY = resolve("intermediate", DEB12)
MAIN = {"smtpd_tls_security_level": "may"}

HEAD = """\
# ==========================================================================
# service type  private unpriv  chroot  wakeup  maxproc command + args
# ==========================================================================
smtp      inet  n       -       y       -       -       smtpd
pickup    unix  n       -       y       60      1       pickup
cleanup   unix  n       -       y       -       0       cleanup
"""

# What Debian <= 10 shipped and release upgrades keep: the pre-3.5 name of 465.
LEGACY_SMTPS = (
    HEAD
    + """\
submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
smtps     inet  n       -       y       -       -       smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_tls_mandatory_protocols=!SSLv2,!SSLv3
  -o tls_high_cipherlist=ALL
#submissions     inet  n       -       y       -       -       smtpd
#  -o syslog_name=postfix/submissions
"""
)


def plan(master_cf: str, **kw):
    services, params = postconf(master_cf)
    return postfix_conf.render(POLICY, DEB12, MAIN, services, params, **kw), services, params


@pytest.mark.parametrize(
    "name,port",
    [
        ("smtps", 465),
        ("submissions", 465),
        ("465", 465),
        ("[::1]:465", 465),
        ("192.0.2.7:465", 465),
        ("submission", 587),
        ("587", 587),
        ("smtp", 25),
        ("127.0.0.1:10025", 10025),
    ],
)
def test_port_of_a_service_name(name, port):
    svc = postfix_conf.parse_service(f"{name}/inet", f"{name} inet n - y - - smtpd")
    assert svc.port == port


def test_legacy_smtps_is_reused_not_doubled_and_keeps_sasl():
    conf, services, params = plan(LEGACY_SMTPS)
    assert conf.services == {}  # 465 and 587 are taken: no second listener
    assert conf.params["smtps/inet/smtpd_tls_security_level"] == "encrypt"
    assert conf.params["smtps/inet/smtpd_tls_mandatory_protocols"] == ">=TLSv1.2"
    assert conf.params["smtps/inet/smtpd_tls_wrappermode"] == "yes"
    assert conf.params["submission/inet/smtpd_tls_mandatory_ciphers"] == "high"
    # the admin's own options are never named: they stay as they are
    touched = set(conf.params) | set(conf.unset)
    for key in params:
        if key.rsplit("/", 1)[1] not in postfix_conf.POLICY_PARAMS | {
            "smtpd_tls_security_level",
            "smtpd_tls_wrappermode",
        }:
            assert key not in touched, key
    assert "smtps/inet/syslog_name" not in conf.params
    # a TLS-policy override that would beat main.cf's cipher list goes
    assert conf.unset == ("smtps/inet/tls_high_cipherlist",)
    commands = postfix_apply.postconf_commands(conf.missing_from(MAIN, services, params))
    assert not any(c.startswith("postconf -M") for c in commands)
    assert "postconf -PX smtps/inet/tls_high_cipherlist" in commands


def test_stock_master_cf_gets_both_services_created():
    conf, _, _ = plan(
        HEAD + "#submission inet n - y - - smtpd\n#  -o syslog_name=postfix/submission\n"
    )
    assert set(conf.services) == {"submission/inet", "submissions/inet"}  # a comment does not count
    assert conf.params["submissions/inet/syslog_name"] == "postfix/submissions"


@pytest.mark.parametrize(
    "extra",
    [
        "465 inet n - y - - smtpd -o smtpd_sasl_auth_enable=yes\n",
        "[::1]:465 inet n - y - - smtpd\n",
    ],
)
def test_numeric_and_addressed_465_reused(extra):
    conf, services, _ = plan(HEAD + extra)
    key = extra.split()[0] + "/inet"
    assert "submissions/inet" not in conf.services
    assert conf.params[f"{key}/smtpd_tls_wrappermode"] == "yes"


def test_two_services_on_one_port_are_refused_naming_both():
    text = LEGACY_SMTPS + "submissions inet n - y - - smtpd -o smtpd_tls_wrappermode=yes\n"
    with pytest.raises(postfix_conf.MasterCfError, match="'smtps' and 'submissions'"):
        plan(text)
    with pytest.raises(postfix_conf.MasterCfError, match="port 587"):
        plan(HEAD + "submission inet n - y - - smtpd\n587 inet n - y - - smtpd\n")


def test_distinct_addresses_on_one_port_are_both_hardened():
    conf, _, _ = plan(
        HEAD + "192.0.2.1:465 inet n - y - - smtpd\n192.0.2.2:465 inet n - y - - smtpd\n"
    )
    assert conf.params["192.0.2.1:465/inet/smtpd_tls_wrappermode"] == "yes"
    assert conf.params["192.0.2.2:465/inet/smtpd_tls_wrappermode"] == "yes"
    assert "submissions/inet" not in conf.services


def test_other_services_left_exactly_as_they_are():
    text = HEAD + (
        "127.0.0.1:10025 inet n - n - - smtpd -o smtpd_tls_ciphers=medium "
        "-o smtpd_tls_security_level=none\n"
        "amavis unix - - - - 2 smtp -o smtp_tls_security_level=none\n"
    )
    conf, _, _ = plan(text)
    assert not any(k.startswith(("127.0.0.1:10025/", "amavis/")) for k in conf.params)
    assert not any(k.startswith(("127.0.0.1:10025/", "amavis/")) for k in conf.unset)


def test_port_25_and_postscreen_pass_overrides_of_the_policy_go():
    text = HEAD.replace(
        "smtp      inet  n       -       y       -       -       smtpd",
        "smtp inet n - y - 1 postscreen\nsmtpd pass - - y - - smtpd "
        "-o smtpd_tls_ciphers=medium -o smtpd_tls_protocols=!SSLv2\n"
        "2525 inet n - y - - smtpd -o smtpd_tls_eecdh_grade=ultra",
    )
    conf, _, _ = plan(text)
    assert set(conf.unset) == {"smtpd/pass/smtpd_tls_ciphers", "smtpd/pass/smtpd_tls_protocols"}
    # an override equal to the policy is harmless and stays
    services, params = postconf(HEAD.replace("smtpd\n", "smtpd -o smtpd_tls_ciphers=high\n", 1))
    conf = postfix_conf.render(POLICY, DEB12, MAIN, services, params)
    assert conf.unset == ()


def test_465_served_by_something_else_is_left_alone():
    conf, _, _ = plan(HEAD + "smtps inet n - n - - proxymap\n")
    assert "submissions/inet" not in conf.services
    assert not any(k.startswith("smtps/") for k in conf.params)
    assert any("465" in note for note in conf.notes)


def test_converged_legacy_host_has_nothing_left_to_do():
    conf, services, params = plan(LEGACY_SMTPS)
    for k, v in conf.params.items():
        params[k] = v
    for k in conf.unset:
        del params[k]
    main = dict(MAIN, **conf.main)
    assert not conf.missing_from(main, services, params).params
    assert not conf.missing_from(main, services, params).unset


# --- The client direction: Postfix's smtp/lmtp transports get groups of their own, so the
# outbound ClientHello stays within one TCP segment while the server keeps its hybrid-first list.

DEB13 = HostCaps(postfix=(3, 10, 13), dovecot=(2, 4, 1), openssl=(3, 5, 9))
DEB14 = HostCaps(postfix=(3, 11, 7), dovecot=(2, 4, 5), openssl=(3, 6, 5))

# Debian's master.cf client transports, plus a content filter that never does TLS.
MASTER = """\
smtp      inet  n       -       y       -       -       smtpd
smtp      unix  -       -       y       -       -       smtp
relay     unix  -       -       y       -       -       smtp
        -o syslog_name=${multi_instance_name?{$multi_instance_name}:{postfix}}/$service_name
lmtp      unix  -       -       y       -       -       lmtp
local     unix  -       n       n       -       -       local
amavis    unix  -       -       -       -       2       smtp
  -o smtp_data_done_timeout=1200 -o smtp_tls_security_level=none
"""
CURVES = "tls_eecdh_auto_curves"


def conf(caps, main=None, master=MASTER, **kw):
    services, params = postconf(master)
    policy = resolve("intermediate", caps, **kw)
    return policy, postfix_conf.render(policy, caps, main or {}, services, params)


@pytest.mark.parametrize(
    "caps,groups",
    [
        (DEB12, "X25519:X448:prime256v1:secp521r1:secp384r1"),  # Postfix 3.7's own default
        (DEB13, "?X25519MLKEM768:DEFAULT"),  # Postfix 3.11's own default, on 3.10
        (DEB14, "?X25519MLKEM768:DEFAULT"),
    ],
)
def test_every_tls_client_transport_gets_the_client_groups(caps, groups):
    policy, pf = conf(caps)
    clients = {k: v for k, v in pf.params.items() if k.endswith("/" + CURVES)}
    # smtp and relay run the SMTP client with TLS (the deploy sets smtp_tls_security_level=may);
    # lmtp has no TLS level on Debian, the amavis filter says none: both untouched.
    assert clients == {"smtp/unix/" + CURVES: groups, "relay/unix/" + CURVES: groups}
    assert postfix_conf.clients(pf) == ("smtp/unix", "relay/unix")
    # the server side keeps the policy's list, hybrid group first where OpenSSL has it
    assert pf.main[CURVES] == (
        "X25519MLKEM768/X25519 prime256v1 secp384r1"
        if caps.openssl >= (3, 5)
        else "X25519 prime256v1 secp384r1"
    )


def test_only_the_groups_of_a_client_transport_change():
    _, pf = conf(DEB13)
    touched = {k.rsplit("/", 1)[0] for k in pf.params} | {k.rsplit("/", 1)[0] for k in pf.unset}
    assert "amavis/unix" not in touched and "lmtp/unix" not in touched
    assert [k for k in pf.params if k.startswith(("smtp/unix/", "relay/unix/"))] == [
        "smtp/unix/" + CURVES,
        "relay/unix/" + CURVES,
    ]


@pytest.mark.parametrize(
    "main,extra,expect",
    [
        # LMTP with TLS in main.cf, a filter whose own -o asks for TLS, a policy table
        ({"lmtp_tls_security_level": "may"}, "", {"smtp/unix", "relay/unix", "lmtp/unix"}),
        (
            {},
            "out unix - - y - - smtp -o smtp_tls_security_level=encrypt\n",
            {"smtp/unix", "relay/unix", "out/unix"},
        ),
        # a policy table's entries beat any level, the filter's own none included
        (
            {"smtp_tls_security_level": "none", "smtp_tls_policy_maps": "hash:/etc/postfix/tls"},
            "",
            {"smtp/unix", "relay/unix", "amavis/unix"},
        ),
        # the pre-2.3 switch counts only where no level is set (the filter's none wins)
        ({"smtp_use_tls": "yes", "smtp_tls_security_level": ""}, "", {"smtp/unix", "relay/unix"}),
    ],
)
def test_which_transports_may_use_tls(main, extra, expect):
    _, pf = conf(DEB13, main, MASTER + extra)
    assert set(postfix_conf.clients(pf)) == expect


def test_an_smtp_client_the_admin_keeps_in_plaintext_is_left_alone():
    # main.cf already sets a level (the deploy leaves it) and it is none: no TLS, nothing to set
    services, params = postconf(MASTER)
    policy = resolve("intermediate", DEB13)
    main = {"smtp_tls_security_level": "none"}
    main_cf = postfix_conf.main_cf(policy, DEB13, main)
    plan = postfix_conf.master_cf(
        policy, services, main=main_cf, master_params=params, current=main
    )
    # the deploy turns a none level into may: TLS stays available outbound, so the groups apply
    assert main_cf["smtp_tls_security_level"] == "may"
    assert "smtp/unix/" + CURVES in plan.params


@pytest.mark.parametrize(
    "kw,groups,max_bytes,offers",
    [
        ({}, "?X25519MLKEM768:DEFAULT", CLIENT_HELLO_MAX, "X25519MLKEM768"),
        ({"outbound_pq_share": True}, "DEFAULT", 0, "X25519MLKEM768"),
        ({"pq_hybrid": False}, "X25519:X448:prime256v1:secp521r1:secp384r1", CLIENT_HELLO_MAX, "-"),
    ],
)
def test_the_hybrid_share_outbound_is_a_setting(kw, groups, max_bytes, offers):
    policy, pf = conf(DEB13, **kw)
    assert pf.params["smtp/unix/" + CURVES] == groups
    lines = [c.line() for c in verify_conf.outbound(policy, postfix_conf.clients(pf))]
    assert lines == [
        f"outbound smtp/unix {max_bytes} {offers}",
        f"outbound relay/unix {max_bytes} {offers}",
    ]


def test_a_converged_host_has_nothing_left_and_the_verify_file_checks_the_clients():
    services, params = postconf(MASTER)
    info = HostFacts(DEB13, postconf={}, services=services, master_params=params)
    hc = host_render(validate({}, "mx1"), info)
    assert hc.postfix is not None and hc.verify is not None
    assert "outbound smtp/unix 1400 X25519MLKEM768" in hc.verify.splitlines()
    assert "postconf-P smtp/unix/tls_eecdh_auto_curves=?X25519MLKEM768:DEFAULT" in hc.verify
    applied = {**params, **hc.postfix.params}
    main = {**info.postconf, **hc.postfix.main}
    assert not hc.postfix.missing_from(main, {**services, **hc.postfix.services}, applied).params


def test_the_setting_is_validated():
    assert validate({"mailtls_outbound_pq_share": "yes"}, "mx1").outbound_pq_share is True
    with pytest.raises(ValueError, match="mailtls_outbound_pq_share"):
        validate({"mailtls_outbound_pq_share": "sometimes"}, "mx1")
