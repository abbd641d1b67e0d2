"""mailtls-apply's transaction on real Debian 12 and 13 hosts (safety review, round 3): no window
between a change and its record, no foreign commit that swallows a change, copies that never
share a name, a symlinked main.cf that stays a link, a mark that cannot be made stops the change."""

from __future__ import annotations

import smtplib

from test_rollback import MISSING_POSTFIX_CERT, rejected
from test_safety import grand_total, output, pending, tls

from conftest import run_pyinfra

APPLY = "/usr/local/sbin/mailtls-apply"
DOVECOT_CONF = "/etc/dovecot/conf.d/99-mailtls.conf"
SUBMISSION_OFF = ("--data", "mailtls_postfix_submission=false")
# A postconf that, once (while the flag file exists), runs a hook just before or just after the
# run's first edit (an argument with `=`: reads have none): the moment another commit runs in
# between, or a run is killed.
SHIM = "/usr/local/sbin/postconf"
SHIM_FLAG = "/run/postconf-hook"


def hook_postconf(host, before: str = "true", after: str = "true") -> None:
    """Put a postconf before Postfix's own on root's PATH that runs `before`/`after` once around
    an edit, with $PPID the shell that called it."""
    host.ssh(
        f"""cat > {SHIM} <<'EOF'
#!/bin/sh
hook=
case "$*" in *=*) [ -e {SHIM_FLAG} ] && rm -f {SHIM_FLAG} && hook=1 ;; esac
[ -z "$hook" ] || {{ {before}; }}
/usr/sbin/postconf "$@"; rc=$?
[ -z "$hook" ] || {{ {after}; }}
exit $rc
EOF
chmod 0755 {SHIM} && touch {SHIM_FLAG}"""
    )


def unhook_postconf(host) -> None:
    host.ssh(f"rm -f {SHIM} {SHIM_FLAG}")


def listens(host, port: int) -> bool:
    return bool(host.ssh(f"ss -Hltn 'sport = :{port}'").stdout.strip())


def test_a_run_killed_right_after_its_write_can_still_be_rolled_back(fresh_host, suite):
    """The run's shell dies (kill -9, as a cut connection or an OOM kill does) the instant
    postconf has written a change Postfix will reject: nothing may be on disk that the next run
    cannot tell from an admin's edit. The next run, which has nothing left to write, commits
    what is pending; Postfix rejects it, and it must be rolled back: port 25 keeps STARTTLS."""
    host = fresh_host(suite)
    run_pyinfra(host)
    hook_postconf(host, after="kill -9 $PPID")
    killed = run_pyinfra(host, "deploy.py", *MISSING_POSTFIX_CERT, check=False)
    assert killed.returncode != 0, output(killed)[-3000:]
    unhook_postconf(host)
    res = run_pyinfra(host, "deploy.py", *MISSING_POSTFIX_CERT, check=False)
    line = rejected(res, "postfix")
    assert "-- rolled back" in line and "NOT rolled back" not in line, line
    assert tls(host.address, 25) is not None
    assert pending(host) == ""
    run_pyinfra(host)
    assert grand_total(run_pyinfra(host))[3] == "-"


def test_a_foreign_commit_before_the_write_does_not_swallow_the_change(fresh_host, suite):
    """Another commit (the certificate watcher's timer, a DH rotation, a second deploy) runs
    between the deploy's backup and its write: the deploy's own commit must still load the
    change, here the submission service on 587."""
    host = fresh_host(suite)
    run_pyinfra(host, "deploy.py", *SUBMISSION_OFF)
    assert not listens(host, 587)
    hook_postconf(host, before=f"{APPLY} commit postfix >/dev/null 2>&1; touch /run/hook-ran")
    res = run_pyinfra(host, "deploy.py", check=False)
    unhook_postconf(host)
    assert host.ssh("ls /run/hook-ran", check=False).returncode == 0  # the test did its part
    # Either the run failed saying why, or it loaded its whole change: never Success with half
    # of it (587 created, its mandatory TLS not yet written when the other commit loaded it).
    if res.returncode == 0:
        assert listens(host, 587) and plaintext_mail_refused(host.address, 587)
    assert grand_total(run_pyinfra(host))[3] == "-"
    assert listens(host, 587) and plaintext_mail_refused(host.address, 587)


def plaintext_mail_refused(address: str, port: int) -> bool:
    """Does the submission port refuse MAIL FROM before STARTTLS (its mandatory TLS loaded)?"""
    with smtplib.SMTP(address, port, timeout=20) as smtp:
        smtp.ehlo()
        code, _ = smtp.mail("probe@example.org")
        return code == 530


def test_a_change_another_commit_rolled_back_fails_this_run(fresh_host, suite):
    """The deploy's change is installed; before its own commit, another commit runs it and the
    daemon rejects it: the deploy's commit finds no mark, and must fail saying so, not succeed."""
    host = fresh_host(suite)
    run_pyinfra(host)
    bad = f"{DOVECOT_CONF}.mailtls-new"
    script = (
        f"cp {DOVECOT_CONF} {bad} && echo 'ssl_bogus_setting = yes' >> {bad} && "
        f"MAILTLS_RUN=run1 {APPLY} install dovecot {DOVECOT_CONF} {bad} && "
        f"{{ {APPLY} commit dovecot; echo foreign=$?; }}; "
        f"MAILTLS_RUN=run1 {APPLY} commit dovecot; echo own=$?"
    )
    out = host.ssh(script, check=False)
    said = out.stdout + out.stderr
    assert "foreign=1" in said and "own=1" in said, said
    assert "another commit" in said and "rolled back" in said, said
    # Another run's id, or none, is not this failure: a commit with nothing pending succeeds.
    assert host.ssh(f"MAILTLS_RUN=run2 {APPLY} commit dovecot; echo rc=$?").stdout.strip() == (
        "rc=0"
    )
    assert tls(host.address, 993) is not None


def test_copies_of_two_files_never_share_a_backup(fresh_host, suite):
    """/srv/a_b and /srv/a/b: with `/` turned into `_` both copies had one name, so a rollback
    put one file's bytes into the other."""
    host = fresh_host(suite)
    run_pyinfra(host)
    out = host.ssh(
        "mkdir -p /srv/a && echo one > /srv/a_b && echo two > /srv/a/b && "
        f"{APPLY} begin dovecot /srv/a_b /srv/a/b {DOVECOT_CONF} && "
        "echo changed > /srv/a_b && echo changed > /srv/a/b && "
        f"echo 'ssl_bogus_setting = yes' >> {DOVECOT_CONF} && "
        f"{APPLY} written dovecot /srv/a_b /srv/a/b {DOVECOT_CONF} && "
        f"{{ {APPLY} commit dovecot; true; }} && cat /srv/a_b /srv/a/b",
        check=False,
    )
    assert "rolled back" in out.stderr, out.stdout + out.stderr
    assert out.stdout.split() == ["one", "two"], out.stdout + out.stderr


def test_backups_only_root_can_read(fresh_host):
    """Copies of what the deploy replaces may hold a key (a served pair, a file naming one)."""
    host = fresh_host("trixie")
    run_pyinfra(host)
    nobody = "setpriv --reuid=nobody --regid=nogroup --clear-groups"
    res = host.ssh(f"{nobody} ls /var/lib/mailtls/backup/postfix", check=False)
    assert res.returncode != 0 and "Permission denied" in res.stderr, res.stdout + res.stderr
    assert host.ssh("stat -c %a /var/lib/mailtls/backup").stdout.strip() == "700"


def test_a_symlinked_main_cf_stays_a_link(fresh_host, suite):
    """main.cf kept elsewhere (a config repository) and linked into /etc/postfix: postconf
    alone replaces the link by a file; the deploy writes the link's target, and a rollback too."""
    host = fresh_host(suite)
    host.ssh(
        "mkdir -p /srv/postfix && mv /etc/postfix/main.cf /srv/postfix/main.cf && "
        "ln -s /srv/postfix/main.cf /etc/postfix/main.cf"
    )
    run_pyinfra(host)
    assert host.ssh("readlink /etc/postfix/main.cf").stdout.strip() == "/srv/postfix/main.cf"
    assert "smtpd_tls_protocols" in host.ssh("cat /srv/postfix/main.cf").stdout
    assert tls(host.address, 25) is not None
    before = host.ssh("sha256sum < /srv/postfix/main.cf").stdout
    line = rejected(run_pyinfra(host, "deploy.py", *MISSING_POSTFIX_CERT, check=False), "postfix")
    assert "-- rolled back" in line, line
    assert host.ssh("readlink /etc/postfix/main.cf").stdout.strip() == "/srv/postfix/main.cf"
    assert host.ssh("sha256sum < /srv/postfix/main.cf").stdout == before
    run_pyinfra(host)
    assert grand_total(run_pyinfra(host))[3] == "-"
    assert host.ssh("readlink /etc/postfix/main.cf").stdout.strip() == "/srv/postfix/main.cf"


def test_a_pending_mark_that_cannot_be_made_stops_the_change(fresh_host):
    """No inode left where the marks go: a change whose reload cannot be marked pending must not
    be made (a run that then died would leave it unloaded, and the next run would not know)."""
    host = fresh_host("bookworm")
    run_pyinfra(host, "deploy.py", *SUBMISSION_OFF)
    before = host.ssh("sha256sum /etc/postfix/main.cf /etc/postfix/master.cf").stdout
    host.ssh(
        "mount -t tmpfs -o size=64k,nr_inodes=1 marks /var/lib/mailtls/pending && "
        "! touch /var/lib/mailtls/pending/probe 2>/dev/null"
    )
    try:
        res = run_pyinfra(host, "deploy.py", check=False)
        assert res.returncode != 0, output(res)[-3000:]
        assert "cannot mark a postfix reload pending" in output(res), output(res)[-3000:]
        assert host.ssh("sha256sum /etc/postfix/main.cf /etc/postfix/master.cf").stdout == before
    finally:
        host.ssh("umount /var/lib/mailtls/pending")
    run_pyinfra(host)
    assert listens(host, 587)


def make_pair(host, directory: str, cn: str) -> None:
    """A self-signed P-256 certificate and key in DIRECTORY (cert.pem, key.pem 0600), and both in
    one file (both.pem, key first: smtpd_tls_chain_files' layout)."""
    host.ssh(
        f"umask 077; mkdir -p {directory} && cd {directory} && "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem "
        f"-out cert.pem -days 30 -subj /CN={cn} 2>/dev/null && chmod 0644 cert.pem && "
        "cat key.pem cert.pem > both.pem"
    )


def test_the_commit_checks_which_certificate_each_port_serves(fresh_host, suite):
    """A setting outside ours that serves another certificate (a master.cf -o on one service; a
    local.conf ssl_cert read after 99-mailtls.conf): a commit whose handshakes succeed with the
    wrong certificate must fail and roll back."""
    host = fresh_host(suite)
    make_pair(host, "/etc/ssl/mx", "mx.test")
    make_pair(host, "/etc/ssl/other", "other.test")
    key = "ssl_server_key_file" if suite != "bookworm" else "ssl_key"
    cert = "ssl_server_cert_file" if suite != "bookworm" else "ssl_cert"
    lt = "" if suite != "bookworm" else "<"
    pair = ("cert_file=/etc/ssl/mx/cert.pem", "key_file=/etc/ssl/mx/key.pem")
    run_pyinfra(
        host,
        "deploy.py",
        *(a for d in ("postfix", "dovecot") for p in pair for a in ("--data", f"mailtls_{d}_{p}")),
    )
    res = host.ssh(
        f"{APPLY} begin postfix /etc/postfix/master.cf && "
        "postconf -P submission/inet/smtpd_tls_cert_file=/etc/ssl/other/cert.pem "
        "submission/inet/smtpd_tls_key_file=/etc/ssl/other/key.pem && "
        f"{APPLY} written postfix /etc/postfix/master.cf && {APPLY} commit postfix",
        check=False,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "port 587 serves the certificate" in res.stderr, res.stderr
    assert "rolled back" in res.stderr, res.stderr
    assert "smtpd_tls_cert_file" not in host.ssh("postconf -P").stdout
    local = "/etc/dovecot/local.conf"
    res = host.ssh(
        f"{APPLY} begin dovecot {local} && "
        f"printf '{cert} = {lt}/etc/ssl/other/cert.pem\\n{key} = {lt}/etc/ssl/other/key.pem\\n' "
        f"> {local} && {APPLY} written dovecot {local} && {APPLY} commit dovecot",
        check=False,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "port 993 serves the certificate" in res.stderr, res.stderr
    assert "rolled back" in res.stderr, res.stderr
    assert host.ssh(f"ls {local}", check=False).returncode != 0


def test_a_half_converged_commit_says_which_daemon_serves_what(fresh_host, suite):
    """Postfix takes its change, Dovecot rejects its own (a local.conf that lowers the floor):
    Dovecot is rolled back and the last line says which daemon serves the new configuration."""
    host = fresh_host(suite)
    run_pyinfra(host, "deploy.py")
    local = "/etc/dovecot/local.conf"
    res = host.ssh(
        f"{APPLY} begin postfix /etc/postfix/main.cf && "
        "postconf -e 'smtpd_banner = $myhostname ESMTP half' && "
        f"{APPLY} written postfix /etc/postfix/main.cf && "
        f"{APPLY} begin dovecot {local} && echo 'ssl_min_protocol = TLSv1.1' > {local} && "
        f"{APPLY} written dovecot {local} && {APPLY} commit postfix dovecot",
        check=False,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[-1] == (
        "mailtls: half-converged: postfix serves the new TLS configuration; "
        "dovecot (rolled back) does not"
    ), res.stderr
    assert any("dovecot rejected the new configuration" in x for x in lines), res.stderr
    assert "ESMTP half" in host.ssh("postconf -h smtpd_banner").stdout  # Postfix kept its change
    assert host.ssh(f"ls {local}", check=False).returncode != 0  # Dovecot's was rolled back
