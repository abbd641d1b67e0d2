"""The morning after `apt full-upgrade`, on real hosts: a host of release N deployed with the
defaults, its state carried onto a host of N+1 the way a release upgrade leaves it (our drop-in,
main.cf and master.cf, mailtls-apply and its state kept; Debian's own conffiles the new
release's), the daemons restarted as the upgrade's postinsts do; 12 -> 13 and 13 -> 14. On 13,
Dovecot 2.4 refuses the 2.3 drop-in and stays down: the next run must rewrite it, start Dovecot
and verify it, never report Success over a dead IMAP server. And the daemon states a run meets on any host: one the admin
stopped or disabled stays as it is, and the run says so."""

from __future__ import annotations

import subprocess

import pytest
from probes import handshake, s_client
from test_safety import grand_total, output

from conftest import run_pyinfra

# What a release upgrade keeps of ours and of the admin's (conffiles they changed: main.cf,
# master.cf), as one tar stream from the old host to the new.
KEPT = (
    "/etc/postfix/main.cf",
    "/etc/postfix/master.cf",
    "/etc/dovecot/conf.d/99-mailtls.conf",
    "/etc/mailtls",
    "/usr/local/sbin/mailtls-apply",
    "/var/lib/mailtls",
)


def carry_over(old, new) -> None:
    """Copy KEPT from `old` to `new` (root to root, owners and modes kept), then restart the
    daemons as the upgrade's maintainer scripts do."""
    tar = subprocess.run(
        old.ssh_argv("tar", "--numeric-owner", "-cpf", "-", *KEPT),
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(new.ssh_argv("tar", "-xpf", "-", "-C", "/"), input=tar, check=True)
    new.ssh("systemctl restart postfix dovecot 2>/dev/null; true")


def unit_state(host, daemon: str) -> str:
    return host.ssh(f"systemctl is-active {daemon}; true").stdout.strip()


@pytest.mark.parametrize(
    ("before", "after"), [("bookworm", "trixie"), ("trixie", "forky")], ids=["12to13", "13to14"]
)
def test_a_release_upgrade_converges_with_every_daemon_up(fresh_host, before, after):
    old, new = fresh_host(before), fresh_host(after)
    run_pyinfra(old)
    carry_over(old, new)
    if before == "bookworm":
        # the upgrade's state: Dovecot 2.4 refused the 2.3 drop-in; Postfix runs the old main.cf
        assert unit_state(new, "dovecot") == "failed"
        assert "ssl_prefer_server_ciphers" in new.ssh(f"cat {KEPT[2]}").stdout  # 2.3's name
        # --dry says what the run would fix
        dry = run_pyinfra(new, "deploy.py", "--dry")
        assert "dovecot is down (systemd: its unit failed)" in output(dry), output(dry)
        assert "start dovecot (down)" in output(dry), output(dry)
        assert unit_state(new, "dovecot") == "failed"  # a dry run changes nothing
    res = run_pyinfra(new)
    if before == "bookworm":
        assert "start dovecot (down)" in output(res), output(res)
        log = new.ssh("journalctl -q -t mailtls-apply -o cat").stdout
        assert "dovecot: was down (systemd: failed); new TLS configuration checked, started" in log
    assert unit_state(new, "dovecot") == "active" and unit_state(new, "postfix") == "active"
    for port, starttls in ((25, "-starttls smtp"), (143, "-starttls imap"), (993, "")):
        out = new.ssh(  # OpenSSL >= 3.5: on the host
            f"echo | openssl s_client -connect 127.0.0.1:{port} {starttls} -brief "
            "-groups X25519MLKEM768 2>&1; true"
        ).stdout
        assert "Negotiated TLS1.3 group: X25519MLKEM768" in out, (port, out)
    again = run_pyinfra(new)
    assert grand_total(again)[3] == "-", output(again)  # nothing changed, nothing to start
    assert "is down" not in output(again), output(again)


def test_a_daemon_down_for_a_reason_not_ours_fails_the_run_naming_it(fresh_host, suite):
    host = fresh_host(suite)
    run_pyinfra(host)
    # the admin's own file, read after ours, that Dovecot refuses: down, and not ours to fix
    host.ssh(
        "echo 'ssl_no_such_setting = yes' > /etc/dovecot/conf.d/98-local.conf && "
        "systemctl restart dovecot 2>/dev/null; true"
    )
    assert unit_state(host, "dovecot") == "failed"
    res = run_pyinfra(host, check=False)
    assert res.returncode != 0, output(res)
    err = output(res)
    assert "dovecot was down (systemd: failed) and is not back: doveconf -x -n failed" in err, err
    assert "98-local.conf line 1: " in err and "Unknown setting" in err, err  # file and line
    assert unit_state(host, "dovecot") == "failed"


def test_a_daemon_the_admin_stopped_or_disabled_stays_as_it_is(fresh_host):
    host = fresh_host("trixie")
    run_pyinfra(host)
    host.ssh("systemctl stop dovecot")
    res = run_pyinfra(host)
    assert "dovecot is stopped (enabled, not running): left as it is" in output(res), output(res)
    assert unit_state(host, "dovecot") == "inactive"
    host.ssh("systemctl disable dovecot 2>/dev/null")
    res = run_pyinfra(host, "deploy.py", "--data", "mailtls_tls_profile=modern")
    assert "dovecot is disabled: left as it is" in output(res), output(res)
    assert unit_state(host, "dovecot") == "inactive"
    # its configuration was written and checked all the same: served once it starts
    host.ssh("systemctl enable --now dovecot 2>/dev/null")
    assert handshake(s_client(host.address, 993, "-tls1_3"))[0]
    assert not handshake(s_client(host.address, 993, "-tls1_2"))[0]  # modern: TLS 1.3 only
