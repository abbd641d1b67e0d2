"""master.cf on lived-in servers: services found by the port they listen on, reused, never doubled;
only TLS-policy -o options touched."""

import pytest

from tasks.policy import HostCaps, resolve
from tasks.postfix import apply as postfix_apply
from tasks.postfix import conf as postfix_conf

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


def postconf(master_cf: str) -> tuple[dict, dict]:
    """What `postconf -M` and `postconf -P` report for a master.cf text (as the MailHost fact
    keys them): active entries only, continuation lines joined."""
    entries: list[str] = []
    for line in master_cf.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            entries[-1] += " " + line.strip()
        else:
            entries.append(line.strip())
    services, params = {}, {}
    for entry in entries:
        fields = entry.split()
        key = f"{fields[0]}/{fields[1]}"
        services[key] = " ".join(fields)
        args = fields[8:]
        for flag, value in zip(args, args[1:], strict=False):
            if flag == "-o":
                name, _, val = value.partition("=")
                params[f"{key}/{name}"] = val
    return services, params


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
