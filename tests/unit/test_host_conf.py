"""Certificates in the pre-flight (tasks/host_conf.py): with certificate settings, whatever would
make a daemon serve another certificate refuses the host before any change; with them unset, a
daemon keeps the certificate it serves now (the watcher's copies too, with a warning)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tasks import host_conf
from tasks.assets import sha256
from tasks.certs import plan as certs
from tasks.dovecot import conf as dovecot_conf
from tasks.facts import MailHost
from tasks.host_facts import HostFacts
from tasks.policy import HostCaps, resolve
from tasks.postfix import conf as postfix_conf
from tasks.settings import validate

DEB12 = HostCaps(postfix=(3, 7, 11), dovecot=(2, 3, 19, 1), openssl=(3, 0, 20))
DEB13 = HostCaps(postfix=(3, 10, 13), dovecot=(2, 4, 1), openssl=(3, 5, 9))
LE = "/etc/letsencrypt/live/mx.test"
PAIR = {
    f"mailtls_{d}_{f}_file": f"{LE}/{n}.pem"
    for d in ("postfix", "dovecot")
    for f, n in (("cert", "fullchain"), ("key", "privkey"))
}
SNAKEOIL = {
    "smtpd_tls_cert_file": "/etc/ssl/certs/ssl-cert-snakeoil.pem",
    "smtpd_tls_key_file": "/etc/ssl/private/ssl-cert-snakeoil.key",
    "smtpd_tls_security_level": "may",
}
STOCK_SERVICES = {"smtp/inet": "smtp inet n - y - - smtpd"}
# What the MailHost fact's dovecot_tree holds on stock Debian 12 and 13 hosts (read on the test
# hosts): 10-ssl.conf sets the snakeoil certificate before our 99-mailtls.conf.
STOCK_TREE = {
    "2.3": [
        "/etc/dovecot/dovecot.conf:24:!include_try /usr/share/dovecot/protocols.d/*.protocol",
        "/etc/dovecot/dovecot.conf:97:!include conf.d/*.conf",
        "/etc/dovecot/dovecot.conf:101:!include_try local.conf",
        "/etc/dovecot/conf.d/10-auth.conf:122:!include auth-system.conf.ext",
        "/etc/dovecot/conf.d/10-ssl.conf:12:ssl_cert = </etc/dovecot/private/dovecot.pem",
        "/etc/dovecot/conf.d/10-ssl.conf:13:ssl_key = </etc/dovecot/private/dovecot.key",
    ],
    "2.4": [
        "/etc/dovecot/dovecot.conf:24:!include_try /usr/share/dovecot/protocols.d/*.protocol",
        "/etc/dovecot/dovecot.conf:83:!include conf.d/*.conf",
        "/etc/dovecot/dovecot.conf:87:!include_try local.conf",
        "/etc/dovecot/conf.d/10-auth.conf:116:!include auth-system.conf.ext",
        "/etc/dovecot/conf.d/10-ssl.conf:18:ssl_server_cert_file = /etc/dovecot/private/dovecot.pem",
        "/etc/dovecot/conf.d/10-ssl.conf:20:ssl_server_key_file = /etc/dovecot/private/dovecot.key",
        "/etc/dovecot/conf.d/10-ssl.conf:47:ssl_min_protocol = TLSv1.2",
    ],
}


def info(caps=DEB12, postconf=None, services=None, params=None, files=None, tree=None) -> HostFacts:
    """A MailHost fact as host_conf.render() reads it; stock Debian by default."""
    return HostFacts(
        caps=caps,
        postconf=dict(SNAKEOIL if postconf is None else postconf),
        services=dict(STOCK_SERVICES if services is None else services),
        master_params=dict(params or {}),
        files=dict(files or {}),
        dovecot_tree=tuple(STOCK_TREE[major(caps)] if tree is None else tree),
    )


def major(caps) -> str:
    return dovecot_conf.major(caps)


def keys(caps) -> tuple[str, ...]:
    return dovecot_conf.CERT_KEYS[major(caps)]


def lt(caps) -> str:
    return "<" if major(caps) == "2.3" else ""


# --- Finding 4: the pre-flight refuses what would serve another certificate -----------------


@pytest.mark.parametrize("caps", [DEB12, DEB13])
@pytest.mark.parametrize("watch", [True, False])
def test_stock_host_with_certificate_settings_is_not_refused(caps, watch):
    """Debian's 10-ssl.conf sets the snakeoil certificate before 99-mailtls.conf: not an
    override; main.cf's snakeoil smtpd_tls_cert_file is what the deploy replaces."""
    s = validate({**PAIR, "mailtls_cert_watch": watch}, "mx1")
    conf = host_conf.render(s, info(caps))
    assert conf.refusals == () and conf.verify is not None
    named = certs.COPIES["dovecot"][0] if watch else f"{LE}/fullchain.pem"
    assert dovecot_conf.certificate(conf.dovecot or "") is not None
    assert f"{keys(caps)[0]} = {lt(caps)}{named}" in (conf.dovecot or "")


@pytest.mark.parametrize("param", postfix_conf.OTHER_CERT_PARAMS)
def test_main_cf_settings_that_serve_another_certificate_are_refused(param):
    s = validate(PAIR, "mx1")
    conf = host_conf.render(s, info(postconf={**SNAKEOIL, param: "/etc/ssl/other.pem"}))
    assert conf.verify is None
    assert len(conf.refusals) == 1
    assert conf.refusals[0].startswith(f"/etc/postfix/main.cf: {param} = /etc/ssl/other.pem (")
    assert f"postconf -X {param}" in conf.refusals[0]
    assert "unset mailtls_postfix_cert_file/_key_file" in conf.refusals[0]
    # an empty value (postconf -n shows it) serves nothing
    assert host_conf.render(s, info(postconf={**SNAKEOIL, param: ""})).refusals == ()


def test_without_certificate_settings_other_certificates_are_not_our_business():
    postconf = {**SNAKEOIL, "smtpd_tls_chain_files": "/etc/ssl/both.pem"}
    services = {
        **STOCK_SERVICES,
        "submission/inet": "submission inet n - y - - smtpd",
    }
    params = {"submission/inet/smtpd_tls_cert_file": "/etc/ssl/other.pem"}
    tree = STOCK_TREE["2.3"] + ["/etc/dovecot/local.conf:1:ssl_cert = </etc/ssl/other.pem"]
    conf = host_conf.render(validate({}, "mx1"), info(DEB12, postconf, services, params, {}, tree))
    assert conf.refusals == ()


@pytest.mark.parametrize(
    "param", ["smtpd_tls_cert_file", "smtpd_tls_key_file", *postfix_conf.OTHER_CERT_PARAMS]
)
def test_master_cf_overrides_on_mail_facing_smtpd_are_refused(param):
    services = {
        "smtp/inet": "smtp inet n - y - 1 postscreen",
        "smtpd/pass": "smtpd pass - - y - - smtpd",
        "submission/inet": "submission inet n - y - - smtpd",
        "127.0.0.1:10025/inet": "127.0.0.1:10025 inet n - n - - smtpd",
    }
    params = {
        f"smtpd/pass/{param}": "/etc/ssl/other.pem",
        f"submission/inet/{param}": "/etc/ssl/other.pem",
        f"127.0.0.1:10025/inet/{param}": "/etc/ssl/other.pem",  # re-injection: not a mail port
    }
    found = postfix_conf.cert_overrides(SNAKEOIL, services, params, "/c.pem", "/k.pem")
    assert [f.split(": -o")[0] for f in found] == [
        "/etc/postfix/master.cf: service 'smtpd' (postscreen's smtpd)",
        "/etc/postfix/master.cf: service 'submission' (port 587)",
    ]
    assert f"postconf -PX submission/inet/{param}" in found[1]


def test_master_cf_override_naming_our_certificate_is_no_override():
    services = {"submission/inet": "submission inet n - y - - smtpd"}
    params = {
        "submission/inet/smtpd_tls_cert_file": "/c.pem",
        "submission/inet/smtpd_tls_key_file": "/k.pem",
        "submission/inet/smtpd_tls_eccert_file": "",
    }
    assert postfix_conf.cert_overrides({}, services, params, "/c.pem", "/k.pem") == []


def test_postfix_refusals_come_with_the_watchers_copy_too():
    s = validate(PAIR, "mx1")
    services = {**STOCK_SERVICES, "submissions/inet": "submissions inet n - y - - smtpd"}
    params = {"submissions/inet/smtpd_tls_cert_file": f"{LE}/fullchain.pem"}
    conf = host_conf.render(s, info(services=services, params=params))
    # the ACME client's own file, named directly, bypasses the checked copy
    assert len(conf.refusals) == 1 and "service 'submissions' (port 465)" in conf.refusals[0]
    assert certs.COPIES["postfix"][0] in conf.refusals[0]


@pytest.mark.parametrize("caps", [DEB12, DEB13])
def test_dovecot_certificate_read_after_ours_is_refused_naming_file_and_line(caps):
    cert, key, alt, _ = keys(caps)
    tree = STOCK_TREE[major(caps)] + [
        f"/etc/dovecot/local.conf:2:{cert} = {lt(caps)}/etc/ssl/other/cert.pem",
        f"/etc/dovecot/local.conf:3:{key} = {lt(caps)}/etc/ssl/other/key.pem",
    ]
    conf = host_conf.render(validate(PAIR, "mx1"), info(caps, tree=tree))
    assert [r.split(" (")[0] for r in conf.refusals] == [
        f"/etc/dovecot/local.conf:2: {cert} = {lt(caps)}/etc/ssl/other/cert.pem",
        f"/etc/dovecot/local.conf:3: {key} = {lt(caps)}/etc/ssl/other/key.pem",
    ]
    assert "read after /etc/dovecot/conf.d/99-mailtls.conf" in conf.refusals[0]
    assert "remove this line" in conf.refusals[0]
    assert "unset mailtls_dovecot_cert_file/_key_file" in conf.refusals[0]


@pytest.mark.parametrize("caps", [DEB12, DEB13])
def test_dovecot_certificate_inside_a_block_is_refused_wherever_it_is(caps):
    cert = keys(caps)[0]
    tree = STOCK_TREE[major(caps)] + [
        "/etc/dovecot/conf.d/20-imap.conf:3:protocol imap {",
        f"/etc/dovecot/conf.d/20-imap.conf:4:  {cert} = {lt(caps)}/etc/ssl/imap.pem",
        "/etc/dovecot/conf.d/20-imap.conf:5:}",
    ]
    found = host_conf.render(validate(PAIR, "mx1"), info(caps, tree=tree)).refusals
    assert len(found) == 1 and "20-imap.conf:4:" in found[0]
    assert "(inside 'protocol imap {')" in found[0]


@pytest.mark.parametrize("caps", [DEB12, DEB13])
def test_dovecot_alternative_certificate_counts_even_before_ours(caps):
    """Ours sets no alternative certificate, so one set anywhere is served to some clients."""
    alt = keys(caps)[2]
    tree = STOCK_TREE[major(caps)] + [
        f"/etc/dovecot/conf.d/10-ssl.conf:30:{alt} = {lt(caps)}/etc/ssl/ecdsa.pem",
    ]
    found = host_conf.render(validate(PAIR, "mx1"), info(caps, tree=tree)).refusals
    assert len(found) == 1 and found[0].startswith(f"/etc/dovecot/conf.d/10-ssl.conf:30: {alt}")
    assert "served beside the certificate" in found[0]
    empty = STOCK_TREE[major(caps)] + [f"/etc/dovecot/conf.d/10-ssl.conf:30:{alt} ="]
    assert host_conf.render(validate(PAIR, "mx1"), info(caps, tree=empty)).refusals == ()


def test_dovecot_same_certificate_after_ours_is_no_override():
    copy, key = certs.COPIES["dovecot"]
    tree = STOCK_TREE["2.3"] + [
        f"/etc/dovecot/local.conf:1:ssl_cert = <{copy}",
        f'/etc/dovecot/local.conf:2:ssl_key = "<{key}"',
    ]
    assert host_conf.render(validate(PAIR, "mx1"), info(tree=tree)).refusals == ()


def test_the_fact_greps_the_certificate_keys_of_both_versions():
    """tasks/facts.py greps for dovecot_conf.POLICY_KEYS: the certificate keys are among them;
    what the deploy reads back after a reload (readback) stays the TLS policy only."""
    command = MailHost().command()
    for k in (*dovecot_conf.CERT_KEYS["2.3"], *dovecot_conf.CERT_KEYS["2.4"]):
        assert f"|{k}|" in command or f"|{k})" in command, k
    text = dovecot_conf.render(resolve("intermediate", DEB12), DEB12, "/c.pem", "/k.pem")
    assert not set(dovecot_conf.readback(text)) & {"ssl_cert", "ssl_key"}


# --- Finding 5: unset certificate settings keep what the daemon serves now ------------------


def after_watch(caps=DEB12, profile="intermediate", copies=True) -> HostFacts:
    """The fact of a host a deploy with certificate settings and the watcher left behind."""
    policy = resolve(profile, caps)
    ours = dovecot_conf.render(policy, caps, *certs.COPIES["dovecot"])
    files = {dovecot_conf.CONF_PATH: sha256(ours.encode())}
    if copies:
        files.update({p: "x" for d in ("postfix", "dovecot") for p in certs.COPIES[d]})
    postconf = {
        **SNAKEOIL,
        "smtpd_tls_cert_file": certs.COPIES["postfix"][0],
        "smtpd_tls_key_file": certs.COPIES["postfix"][1],
    }
    return info(caps, postconf=postconf, files=files)


@pytest.mark.parametrize("caps", [DEB12, DEB13])
def test_unset_keeps_the_copies_and_warns_for_both_daemons(caps):
    conf = host_conf.render(validate({}, "mx1"), after_watch(caps))
    assert conf.refusals == () and not conf.read_dovecot_named
    assert dovecot_conf.certificate(conf.dovecot or "") == certs.COPIES["dovecot"]
    # main.cf keeps what it has (nothing set): the copy
    assert conf.postfix is not None and "smtpd_tls_cert_file" not in conf.postfix.main
    pf, dc = conf.warnings
    assert pf.startswith("postfix: mailtls_postfix_cert_file/_key_file are unset: main.cf keeps")
    assert dc.startswith("dovecot: mailtls_dovecot_cert_file/_key_file are unset:")
    for warning, copy in ((pf, certs.COPIES["postfix"][0]), (dc, certs.COPIES["dovecot"][0])):
        assert copy in warning and "nothing renews" in warning
        assert f"openssl x509 -noout -enddate -in {copy}" in warning
        assert "again to follow renewals" in warning
    assert f"set {keys(caps)[0]} and {keys(caps)[1]}" in dc
    # the commit checks that 993 serves the copy the config still names
    assert f"cert dovecot {certs.COPIES['dovecot'][0]}" in (conf.verify or "")


def test_unset_rerun_renders_the_same_file():
    """The second run after unsetting finds our file as the first rendered it: no change."""
    first = host_conf.render(validate({}, "mx1"), after_watch())
    fact = after_watch()
    fact = replace(
        fact, files={**fact.files, dovecot_conf.CONF_PATH: sha256((first.dovecot or "").encode())}
    )
    second = host_conf.render(validate({}, "mx1"), fact)
    assert second.dovecot == first.dovecot and second.warnings == first.warnings


def test_a_file_without_certificate_stays_without_one():
    policy = resolve("intermediate", DEB12)
    files = {
        dovecot_conf.CONF_PATH: sha256(dovecot_conf.render(policy, DEB12).encode()),
        **{p: "x" for p in certs.COPIES["dovecot"]},  # left over from long ago: not named
    }
    conf = host_conf.render(validate({}, "mx1"), info(files=files))
    assert dovecot_conf.certificate(conf.dovecot or "") is None
    assert conf.warnings == () and not conf.read_dovecot_named
    # a first deploy: no file of ours yet, nothing to read
    first = host_conf.render(validate({}, "mx1"), info())
    assert not first.read_dovecot_named and first.warnings == ()


def test_what_the_checksum_cannot_tell_is_read_and_kept():
    """Another profile now: our file's checksum matches no render; the deploy reads its
    certificate lines (info.dovecot_named) and keeps them."""
    fact = after_watch(profile="modern")
    conf = host_conf.render(validate({}, "mx1"), fact)
    assert conf.read_dovecot_named
    fact = replace(fact, dovecot_named=certs.COPIES["dovecot"], named_read=True)
    conf = host_conf.render(validate({}, "mx1"), fact)
    assert not conf.read_dovecot_named
    assert dovecot_conf.certificate(conf.dovecot or "") == certs.COPIES["dovecot"]
    assert any(w.startswith("dovecot:") for w in conf.warnings)
    # the settings' own files, named directly (mailtls_cert_watch=false): kept, no warning
    fact = replace(
        fact, dovecot_named=(f"{LE}/fullchain.pem", f"{LE}/privkey.pem"), named_read=True
    )
    conf = host_conf.render(validate({}, "mx1"), fact)
    assert dovecot_conf.certificate(conf.dovecot or "") == fact.dovecot_named
    assert not any(w.startswith("dovecot:") for w in conf.warnings)
    fact = replace(fact, dovecot_named=None, named_read=True)
    assert (
        dovecot_conf.certificate(host_conf.render(validate({}, "mx1"), fact).dovecot or "") is None
    )


@pytest.mark.parametrize("caps", [DEB12, DEB13])
def test_a_certificate_set_after_ours_ends_the_keeping(caps):
    """The admin did what the warning says (local.conf names their files): ours is never
    served, so it goes, without a warning and without a refusal."""
    fact = after_watch(caps)
    fact = replace(
        fact,
        dovecot_tree=(
            *fact.dovecot_tree,
            f"/etc/dovecot/local.conf:1:{keys(caps)[0]} = {lt(caps)}/etc/ssl/mine.pem",
        ),
    )
    conf = host_conf.render(validate({}, "mx1"), fact)
    assert conf.refusals == ()
    assert dovecot_conf.certificate(conf.dovecot or "") is None
    assert not any(w.startswith("dovecot:") for w in conf.warnings)


def test_kept_copies_are_not_refused_for_other_certificates():
    """Kept, not set: a per-protocol certificate elsewhere stays the admin's business."""
    fact = after_watch()
    fact = replace(
        fact,
        dovecot_tree=(
            *fact.dovecot_tree,
            "/etc/dovecot/conf.d/20-pop3.conf:1:protocol pop3 {",
            "/etc/dovecot/conf.d/20-pop3.conf:2:  ssl_cert = </etc/ssl/pop3.pem",
            "/etc/dovecot/conf.d/20-pop3.conf:3:}",
        ),
    )
    conf = host_conf.render(validate({}, "mx1"), fact)
    assert conf.refusals == ()
    assert dovecot_conf.certificate(conf.dovecot or "") == certs.COPIES["dovecot"]


def test_postfix_warning_only_while_main_cf_names_the_copy():
    fact = after_watch()
    fact = replace(fact, postconf=dict(SNAKEOIL))
    conf = host_conf.render(validate({}, "mx1"), fact)
    assert not any(w.startswith("postfix:") for w in conf.warnings)
    # set again: the watcher follows renewals again, no warning
    fact = after_watch()
    conf = host_conf.render(validate(PAIR, "mx1"), fact)
    assert conf.warnings == ()


def test_a_missing_copy_is_said():
    conf = host_conf.render(validate({}, "mx1"), after_watch(copies=False))
    pf = next(w for w in conf.warnings if w.startswith("postfix:"))
    assert "missing" in pf


def test_fact_files_ask_for_every_copy_without_settings():
    files = certs.fact_files(validate({}, "mx1"))
    assert set(certs.COPIES["postfix"]) | set(certs.COPIES["dovecot"]) <= set(files)
    assert len(files) == len(set(files))


def test_kept_copies_beaten_in_a_block_are_not_expected_on_every_port():
    fact = after_watch()
    fact = replace(
        fact,
        dovecot_tree=(
            *fact.dovecot_tree,
            "/etc/dovecot/conf.d/20-pop3.conf:1:protocol pop3 {",
            "/etc/dovecot/conf.d/20-pop3.conf:2:  ssl_cert = </etc/ssl/pop3.pem",
            "/etc/dovecot/conf.d/20-pop3.conf:3:}",
        ),
    )
    conf = host_conf.render(validate({}, "mx1"), fact)
    assert "cert dovecot" not in (conf.verify or "")
    assert "cert dovecot" in (host_conf.render(validate({}, "mx1"), after_watch()).verify or "")
