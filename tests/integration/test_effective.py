"""Lived-in servers on real Debian 12 and 13 hosts: what the daemons really serve after a deploy.

Each test shapes a fresh host as admins' servers look (the legacy `smtps` entry with SASL, a
Dovecot local.conf override, an override only a handshake reveals, a duplicate master.cf entry)
and checks the deploy converges without breaking what was there, or stops naming the cause and
leaves the host as it was.
"""

from __future__ import annotations

import re
import smtplib
import ssl

import pytest

from conftest import run_pyinfra
from tasks.ops import APPLY

LEGACY_SMTPS = (
    "smtps inet n - y - - smtpd -o smtpd_tls_wrappermode=yes -o smtpd_sasl_auth_enable=yes "
    "-o smtpd_client_restrictions=permit_sasl_authenticated,reject"
)
DOVECOT_SASL = """service auth {
  unix_listener /var/spool/postfix/private/auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
"""
STATE = (
    "sha256sum /etc/postfix/main.cf /etc/postfix/master.cf /etc/dovecot/conf.d/* "
    "/etc/dovecot/local.conf 2>&1; ls -A /usr/local/sbin /var/lib/mailtls /etc/mailtls 2>&1; true"
)


def ctx() -> ssl.SSLContext:
    c = ssl.create_default_context()
    c.check_hostname, c.verify_mode = False, ssl.CERT_NONE
    return c


def auth_on_465(host, password: str) -> bool:
    """AUTH PLAIN over implicit TLS on 465: True when the server accepts the credentials."""
    with smtplib.SMTP_SSL(host.address, 465, context=ctx(), timeout=30) as smtp:
        smtp.ehlo("controller.mailtls.test")
        try:
            smtp.login("mailtest", password)
        except smtplib.SMTPAuthenticationError:
            return False
        return True


def with_legacy_smtps(host) -> None:
    """What Debian <= 10 shipped for 465 and upgrades keep, with Dovecot SASL wired up."""
    host.ssh(
        f"echo '{LEGACY_SMTPS}' >> /etc/postfix/master.cf && "
        "postconf -e smtpd_sasl_type=dovecot smtpd_sasl_path=private/auth && "
        f"printf '%s' '{DOVECOT_SASL}' > /etc/dovecot/conf.d/11-postfix-auth.conf && "
        "systemctl restart dovecot && postfix reload"
    )


def services_on_465(host) -> list[str]:
    names = host.ssh("postconf -M").stdout.split("\n")
    return [
        line.split()[0]
        for line in names
        if line.split()
        and line.split()[0].split(":")[-1].strip("[]") in ("465", "smtps", "submissions")
    ]


def commit_edit(host, daemon: str, path: str, edit: str):
    """`edit` (a shell command changing `path`) through the deploy's own protocol: begin, the
    change, written, commit (a rollback undoes only what was recorded as written)."""
    return host.ssh(
        f"{APPLY} begin {daemon} {path} && {edit} && "
        f"{APPLY} written {daemon} {path} && {APPLY} commit {daemon}",
        check=False,
    )


def test_legacy_smtps_keeps_one_listener_and_sasl(fresh_host, suite):
    host = fresh_host(suite)
    with_legacy_smtps(host)
    assert auth_on_465(host, "mailtest-pw") and not auth_on_465(host, "wrong")  # works before
    res = run_pyinfra(host)
    assert services_on_465(host) == ["smtps"]  # reused, no second listener
    params = host.ssh("postconf -P").stdout
    for kept in (
        "smtps/inet/smtpd_sasl_auth_enable = yes",
        "smtps/inet/smtpd_client_restrictions = permit_sasl_authenticated,reject",
    ):
        assert kept in params, params
    assert "smtps/inet/smtpd_tls_security_level = encrypt" in params
    assert auth_on_465(host, "mailtest-pw") and not auth_on_465(host, "wrong")  # and after
    log = host.ssh("journalctl -q --no-pager -o cat | grep 'duplicate master.cf'; true").stdout
    assert log == "", log
    again = run_pyinfra(host)
    assert "No changes" in again.stderr, again.stderr[-3000:]
    assert "Success" in res.stderr


def test_two_services_on_465_refused_naming_both(fresh_host, suite):
    host = fresh_host(suite)
    host.ssh(
        f"echo '{LEGACY_SMTPS}' >> /etc/postfix/master.cf && "
        "echo 'submissions inet n - y - - smtpd -o smtpd_tls_wrappermode=yes' >> /etc/postfix/master.cf"
    )
    before = host.ssh(STATE).stdout
    res = run_pyinfra(host, check=False)
    assert res.returncode != 0
    assert "two services on port 465: 'smtps' and 'submissions'" in res.stderr, res.stderr[-3000:]
    assert host.ssh(STATE).stdout == before


def test_local_conf_override_refused_and_nothing_changed(fresh_host, suite):
    host = fresh_host(suite)
    host.ssh(
        "printf '# site settings\\nssl_cipher_list = ALL:!aNULL:!eNULL:!EXPORT\\n' > /etc/dovecot/local.conf "
        "&& doveadm reload"
    )
    before = host.ssh(STATE).stdout
    res = run_pyinfra(host, check=False)
    assert res.returncode != 0
    assert "/etc/dovecot/local.conf:2: ssl_cipher_list = ALL:!aNULL:!eNULL:!EXPORT" in res.stderr, (
        res.stderr[-3000:]
    )
    assert "remove this line" in res.stderr and "nothing was changed" in res.stderr
    assert host.ssh(STATE).stdout == before


def forbidden_class(suite: str) -> str:
    """Why the profile forbids an OpenSSL TLS 1.2 suite, "" if it allows it (ECDHE + AEAD)."""
    kx = (
        ""
        if suite.startswith("ECDHE-")
        else "DHE key exchange"
        if suite.startswith(("DHE-", "EDH-"))
        else "RSA key exchange"
    )
    aead = any(c in suite for c in ("GCM", "CHACHA20", "CCM"))
    return " and ".join(c for c in (kx, "" if aead else "a non-AEAD suite") if c)


def test_override_only_a_handshake_shows_is_caught_and_rolled_back(fresh_host, suite):
    """A `remote` block included from outside /etc/dovecot: doveconf -f protocol=... reads back
    our values, only a handshake from 127.0.0.1 shows the weak suites. The negative probes must
    catch it and roll Dovecot's change back."""
    host = fresh_host(suite)
    host.ssh(
        "mkdir -p /usr/local/etc/dovecot && printf 'remote 127.0.0.0/8 {\\n  "
        "ssl_cipher_list = ALL:!aNULL:!eNULL:!EXPORT\\n}\\n' > /usr/local/etc/dovecot/internal.conf && "
        "echo '!include_try /usr/local/etc/dovecot/internal.conf' > /etc/dovecot/local.conf && doveadm reload"
    )
    res = run_pyinfra(host, check=False)
    assert res.returncode != 0
    # One handshake offers every forbidden TLS 1.2 suite; the server picks one of them (ALL, in
    # its own order), and the message names that suite and its class, read from the suite.
    for port in (993, 143):
        said = re.search(rf"port {port} accepted TLS 1\.2 with ([^:]+): TLSv1\.2 (\S+)", res.stderr)
        assert said, res.stderr[-3000:]
        assert said[1] == forbidden_class(said[2]) != "", said[0]
    assert "rolled back" in res.stderr
    assert (
        host.ssh(
            "ls /etc/dovecot/conf.d/99-mailtls.conf /var/lib/mailtls/pending/dovecot 2>/dev/null; true"
        ).stdout
        == ""
    )
    # Postfix's own commit passed its probes and stays.
    assert host.ssh("postconf -h smtpd_tls_ciphers").stdout.strip() == "high"


def test_duplicate_entry_warning_fails_the_commit_and_rolls_back(fresh_host, suite):
    """A change that makes Postfix warn `duplicate master.cf entry` (here: added behind the
    deploy's back between begin and commit) is rolled back, never reported as done."""
    host = fresh_host(suite)
    run_pyinfra(host)
    before = host.ssh("sha256sum /etc/postfix/master.cf").stdout
    res = commit_edit(
        host,
        "postfix",
        "/etc/postfix/master.cf",
        f"echo '{LEGACY_SMTPS}' >> /etc/postfix/master.cf",
    )
    assert res.returncode != 0, res.stdout + res.stderr
    assert re.search(r'duplicate master.cf entry for service "\w+" \(465\)', res.stderr), res.stderr
    assert "rolled back" in res.stderr
    assert host.ssh("sha256sum /etc/postfix/master.cf").stdout == before
    assert host.ssh("ls /var/lib/mailtls/pending").stdout.strip() == ""


@pytest.mark.parametrize("stop", ["rsyslog"])
def test_log_reads_work_from_the_journal_alone(fresh_host, suite, stop):
    """Debian 12/13 install no rsyslog: the warning check must read the journal."""
    host = fresh_host(suite)
    run_pyinfra(host)
    host.ssh(f"systemctl stop {stop} 2>/dev/null; rm -f /var/log/mail.log; true")
    res = host.ssh(
        f"{APPLY} begin postfix /etc/postfix/master.cf && "
        f"echo '{LEGACY_SMTPS}' >> /etc/postfix/master.cf && {APPLY} commit postfix",
        check=False,
    )
    assert res.returncode != 0 and "duplicate master.cf entry" in res.stderr, res.stderr


def test_a_port_lost_in_the_reload_fails_the_commit_and_rolls_back(fresh_host, suite):
    """Dovecot running before the commit must listen on every port it did: a change that drops
    993 (port = 0) passes doveconf and the 143 probe, and must still be rolled back."""
    host = fresh_host(suite)
    run_pyinfra(host)
    conf = "/etc/dovecot/conf.d/10-master.conf"
    before = host.ssh(f"sha256sum {conf}").stdout
    res = commit_edit(
        host,
        "dovecot",
        conf,
        f"sed -i 's/^    #port = 993/    port = 0/' {conf} && grep -q '^    port = 0' {conf}",
    )
    assert res.returncode != 0, res.stdout + res.stderr
    assert re.search(r"dovecot no longer listens on \S+:993", res.stderr), res.stderr
    assert "rolled back" in res.stderr
    assert host.ssh(f"sha256sum {conf}").stdout == before
    assert host.ssh("ss -Hltn 'sport = :993' | wc -l").stdout.strip() != "0"


def test_settings_that_serve_another_certificate_are_refused_before_any_change(fresh_host, suite):
    """With certificate settings, what would serve another certificate than the one the deploy
    names stops the host before any change, each named with what to do: main.cf's
    smtpd_tls_chain_files (it beats smtpd_tls_cert_file), a Dovecot certificate read after
    99-mailtls.conf. Debian's own 10-ssl.conf, read before ours, is not one of them."""
    host = fresh_host(suite)
    cert, key, lt = (
        ("ssl_cert", "ssl_key", "<")
        if suite == "bookworm"
        else ("ssl_server_cert_file", "ssl_server_key_file", "")
    )
    host.ssh(
        "umask 077; for d in mx other; do mkdir -p /etc/ssl/$d && "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        "-keyout /etc/ssl/$d/key.pem -out /etc/ssl/$d/cert.pem -days 30 -subj /CN=$d.test "
        "2>/dev/null && chmod 0644 /etc/ssl/$d/cert.pem && "
        "cat /etc/ssl/$d/key.pem /etc/ssl/$d/cert.pem > /etc/ssl/$d/both.pem; done && "
        "postconf -e smtpd_tls_chain_files=/etc/ssl/other/both.pem && "
        f"printf '# site certificate\\n{cert} = {lt}/etc/ssl/other/cert.pem\\n"
        f"{key} = {lt}/etc/ssl/other/key.pem\\n' > /etc/dovecot/local.conf && "
        "postfix reload && doveadm reload"
    )
    before = host.ssh(STATE).stdout
    pair = ("cert_file=/etc/ssl/mx/cert.pem", "key_file=/etc/ssl/mx/key.pem")
    data = [a for d in ("postfix", "dovecot") for p in pair for a in ("--data", f"mailtls_{d}_{p}")]
    res = run_pyinfra(host, "deploy.py", *data, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert (
        "/etc/postfix/main.cf: smtpd_tls_chain_files = /etc/ssl/other/both.pem" in out
        and "postconf -X smtpd_tls_chain_files" in out
    ), out[-3000:]
    assert f"/etc/dovecot/local.conf:2: {cert} = {lt}/etc/ssl/other/cert.pem" in out, out[-3000:]
    assert f"/etc/dovecot/local.conf:3: {key} = " in out, out[-3000:]
    assert "10-ssl.conf" not in out, out[-3000:]
    assert "nothing was changed on this host" in out, out[-3000:]
    assert host.ssh(STATE).stdout == before
