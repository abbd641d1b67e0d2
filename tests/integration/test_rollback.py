"""Rollback on real Debian 12 and 13 hosts, the cases of issue 12: a file both daemons use stays
under the one that committed with it, a rollback never puts an old copy over an admin's later
edit, a symlinked config stays a link, and locks no other user can hold."""

from __future__ import annotations

import subprocess
import time

from test_dh import dhe_bits
from test_safety import established, output, pending, run_and_kill, tls

from conftest import run_pyinfra
from tasks.facts import DH_ROTATE_LOCK
from tasks.scripts import script

DH_FILE = "/etc/ssl/mailtls/dh.pem"
LEGACY = ("--data", "tls_profile=legacy-dhe")
# A pair the daemon itself must reject: without the certificate watcher, which would refuse it
# before any daemon saw it (tests/integration/test_renewals.py covers that path).
NO_WATCH = ("--data", "mailtls_cert_watch=false")
MISSING_POSTFIX_CERT = (
    "--data",
    "postfix_cert_file=/etc/ssl/certs/missing.pem",
    "--data",
    "postfix_key_file=/etc/ssl/private/missing.key",
    *NO_WATCH,
)
MISSING_DOVECOT_CERT = (
    "--data",
    "dovecot_cert_file=/etc/ssl/certs/missing.pem",
    "--data",
    "dovecot_key_file=/etc/ssl/private/missing.key",
    *NO_WATCH,
)


def rejected(res, daemon: str) -> str:
    """The one line in which mailtls-apply says `daemon` rejected its new configuration."""
    out = output(res)
    assert res.returncode != 0, out[-3000:]
    said = [
        line
        for line in out.splitlines()
        if f"mailtls: {daemon} rejected the new configuration" in line
    ]
    assert len(said) == 1, out[-3000:]
    return said[0]


def dovecot_starts_afresh(host) -> None:
    """What the next boot or `systemctl restart dovecot` does: read the config as it is on disk."""
    out = host.ssh(
        "doveconf -x -n >/dev/null && systemctl restart dovecot && systemctl is-active dovecot",
        check=False,
    )
    assert out.returncode == 0 and out.stdout.strip() == "active", out.stdout + out.stderr


def test_a_shared_dh_file_stays_under_the_daemon_that_committed_with_it(fresh_host, suite):
    """First legacy-dhe run: the DH file is new. Postfix rejects its change (a certificate that
    is not there), Dovecot commits with `ssl_dh = </etc/ssl/mailtls/dh.pem`: Postfix's rollback
    must not delete the file Dovecot now loads, on this run or the next."""
    host = fresh_host(suite)
    run_pyinfra(host)
    postfix_files = host.ssh("sha256sum /etc/postfix/main.cf /etc/postfix/master.cf").stdout
    assert host.ssh(f"test -e {DH_FILE}", check=False).returncode == 1
    for attempt in (1, 2):
        line = rejected(
            run_pyinfra(host, "deploy.py", *LEGACY, *MISSING_POSTFIX_CERT, check=False), "postfix"
        )
        assert "rolled back" in line, (attempt, line)
        assert (
            host.ssh("sha256sum /etc/postfix/main.cf /etc/postfix/master.cf").stdout
            == postfix_files
        )
        assert pending(host) == "", attempt
        dovecot_starts_afresh(host)
        assert dhe_bits(host.address, 993) == 3072, attempt  # Dovecot: the new profile, DHE
        assert established(host.address, 25)[0] == "TLSv1.3", (
            attempt
        )  # Postfix: its previous config
        if attempt == 1:  # the second run has no new DH file to write, hence none to keep
            assert f"kept {DH_FILE}, which dovecot runs with" in line, line
    # Postfix accepts once its certificate is right: both run the profile, nothing else to do.
    run_pyinfra(host, "deploy.py", *LEGACY)
    assert dhe_bits(host.address, 25) == 3072


def relayhost(host) -> str:
    return host.ssh("postconf -h relayhost").stdout.strip()


def test_a_stale_backup_never_undoes_an_admin_edit(fresh_host, suite):
    host = fresh_host(suite)
    # 1. A run dies right after changing main.cf (its backup and pending mark stay); the admin
    #    then sets relayhost by hand; the next run changes main.cf again and is rejected: the
    #    rollback goes back to the admin's main.cf, not to the copy from before the dead run.
    run_and_kill(host, "Dovecot TLS settings")
    host.ssh("postconf -e 'relayhost=[smarthost.example.net]'")
    admin = host.ssh("sha256sum < /etc/postfix/main.cf").stdout
    line = rejected(run_pyinfra(host, "deploy.py", *MISSING_POSTFIX_CERT, check=False), "postfix")
    assert "rolled back" in line, line
    assert relayhost(host) == "[smarthost.example.net]"
    assert host.ssh("sha256sum < /etc/postfix/main.cf").stdout == admin
    assert tls(host.address, 25) is not None

    # 2. A run dies after writing a change Postfix will reject; the admin edits main.cf; the next
    #    run has nothing to write, commits what is pending and Postfix rejects it: main.cf no
    #    longer holds what the deploy wrote, so no old copy goes over it. The run says so.
    run_and_kill(host, "Dovecot TLS settings", *MISSING_POSTFIX_CERT)
    host.ssh("postconf -e 'relayhost=[other.example.net]:587'")
    edited = host.ssh("sha256sum < /etc/postfix/main.cf").stdout
    line = rejected(run_pyinfra(host, "deploy.py", *MISSING_POSTFIX_CERT, check=False), "postfix")
    assert (
        "NOT rolled back" in line
        and "/etc/postfix/main.cf changed since the deploy wrote it" in line
    ), line
    assert relayhost(host) == "[other.example.net]:587"
    assert host.ssh("sha256sum < /etc/postfix/main.cf").stdout == edited
    assert "postfix" in pending(host).split()  # still to be committed once the admin fixes it


def test_rollback_of_a_symlinked_config_keeps_the_link(fresh_host, suite):
    """A config kept elsewhere and linked into conf.d: the deploy writes through the link, and a
    rollback puts the previous contents back into the link's target; the link stays."""
    host = fresh_host(suite)
    run_pyinfra(host)
    conf = "/etc/dovecot/conf.d/99-mailtls.conf"
    host.ssh(
        f"mkdir -p /srv/dovecot && mv {conf} /srv/dovecot/tls.conf && ln -s /srv/dovecot/tls.conf {conf}"
    )
    before = host.ssh("sha256sum < /srv/dovecot/tls.conf").stdout
    line = rejected(run_pyinfra(host, "deploy.py", *MISSING_DOVECOT_CERT, check=False), "dovecot")
    assert "rolled back" in line, line
    assert host.ssh(f"readlink {conf}").stdout.strip() == "/srv/dovecot/tls.conf"
    assert host.ssh("sha256sum < /srv/dovecot/tls.conf").stdout == before
    assert not host.ssh("ls -A /srv/dovecot /etc/dovecot/conf.d | grep mailtls-; true").stdout
    assert established(host.address, 993)[0] == "TLSv1.3"
    # A change the daemon accepts goes through the link too.
    run_pyinfra(host, "deploy.py", "--data", "tls_profile=modern")
    assert host.ssh(f"readlink {conf}").stdout.strip() == "/srv/dovecot/tls.conf"
    assert "TLSv1.3" in host.ssh(f"grep ssl_min_protocol {conf}").stdout


def test_locks_no_other_user_can_hold(fresh_host):
    """Any user can create files in /run/lock: there the deploy's and the rotation's locks could
    be held by `nobody` (deploys stall and fail, rotations stop without a word). The locks live in
    a root-only directory, and a rotation kept from running for long says so."""
    host = fresh_host("bookworm")
    run_pyinfra(host, "deploy.py", *LEGACY)
    nobody = "setpriv --reuid=nobody --regid=nogroup --clear-groups"
    for lock in ("mailtls-apply.lock", "mailtls-dh-rotate.lock"):
        host.ssh(f"setsid {nobody} flock /run/lock/{lock} sleep 900 >/dev/null 2>&1 </dev/null &")
    assert host.ssh("pgrep -u nobody -c flock").stdout.strip() == "2"
    # The script from this tree as the deploy installs it (its library inlined), where the
    # deploy (which installs it only for generated parameters) leaves it alone.
    subprocess.run(
        host.ssh_argv("cat > /root/mailtls-dh-rotate && chmod 0755 /root/mailtls-dh-rotate"),
        input=script("mailtls-dh-rotate"),
        check=True,
        timeout=60,
    )
    rotate = f"/root/mailtls-dh-rotate -f {DH_FILE} -b 2048"
    out = host.ssh(f"{rotate}; echo rc=$?", timeout=600, check=False).stdout
    assert out.strip().endswith("rc=0"), out
    assert dhe_bits(host.address, 25) == 2048 and dhe_bits(host.address, 993) == 2048
    started = time.monotonic()
    run_pyinfra(host, "deploy.py", "--data", "tls_profile=modern", timeout=240)
    assert time.monotonic() - started < 200  # not the 300 s wait for a lock
    assert host.ssh("stat -c '%U %a' /var/lib/mailtls/lock").stdout.split() == ["root", "700"]

    # A rotation that holds the lock for longer than the bound (12 h): the next one warns on
    # stderr and in syslog and exits 1 (cron mails it); before the bound it leaves quietly (75).
    lock = DH_ROTATE_LOCK
    host.ssh(f"setsid flock {lock} sleep 900 >/dev/null 2>&1 </dev/null & sleep 0.5")
    res = host.ssh(f"{rotate}", check=False)
    assert res.returncode == 75 and not res.stderr, (res.returncode, res.stderr)
    host.ssh(f"echo $(( $(date +%s) - 13 * 3600 )) > {lock}.since")
    res = host.ssh(f"{rotate}", check=False)
    assert res.returncode == 1 and "another rotation has held" in res.stderr, (
        res.returncode,
        res.stderr,
    )
    log = host.ssh("journalctl -q --no-pager -t mailtls-dh-rotate -p warning -o cat").stdout
    assert "another rotation has held" in log, log
