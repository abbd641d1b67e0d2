"""What root's scripts believe comes only from root's and the daemons' own processes (safety
review, round 3), on real Debian 12 and 13 hosts: a local user's log lines and processes named
like the daemons' do not steer a commit."""

from __future__ import annotations

import shlex
import ssl

from test_safety import established, output, tls

from conftest import run_pyinfra

MODERN = ("--data", "tls_profile=modern")
USER = "eve"


def as_user(host, script: str) -> None:
    """Start `script` in the background as an ordinary local user (created if need be)."""
    host.ssh(
        f"id {USER} >/dev/null 2>&1 || useradd -m {USER}; "
        f"setsid setpriv --reuid={USER} --regid={USER} --init-groups sh -c {shlex.quote(script)} "
        ">/dev/null 2>&1 </dev/null &"
    )


def test_log_lines_any_user_can_write_do_not_roll_a_commit_back(fresh_host, suite):
    """Anyone can write to /dev/log with any tag: lines that look like Postfix's fatal errors
    and Dovecot's config errors, written in a loop while a deploy commits, must not roll back a
    good change (nor, in the watcher, get a good renewal recorded as rejected for good)."""
    host = fresh_host(suite)
    run_pyinfra(host)
    as_user(
        host,
        "while :; do logger -t postfix/smtpd 'fatal: config injected by a user'; "
        "logger -t 'dovecot' 'master: Error: config injected by a user'; "
        "logger -t 'dovecot' 'master: Warning: SIGHUP received - reloading configuration'; "
        "sleep 0.02; done",
    )
    res = run_pyinfra(host, "deploy.py", *MODERN, check=False)
    assert res.returncode == 0, output(res)[-3000:]
    assert "injected" not in output(res)
    for port in (465, 993):  # the change is served: TLS 1.2 refused where TLS is mandatory
        assert tls(host.address, port, ssl.TLSVersion.TLSv1_2) is None, port
        assert established(host.address, port)[0] == "TLSv1.3", port
    host.ssh(f"pkill -u {USER}; true")


def test_processes_named_like_the_daemons_do_not_steer_the_commit(fresh_host, suite):
    """A user's process called `master` listening on 127.0.0.1:2525, which exits as the commit
    reloads Postfix, and one called `smtpd` that never exits: neither is Postfix's. The commit must not
    take the first for a listener Postfix lost in its reload, nor wait for the second."""
    host = fresh_host(suite)
    run_pyinfra(host)
    perl = (
        "use IO::Socket::INET; $0 = 'master'; "
        "my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1:2525', Listen => 5, "
        "ReuseAddr => 1) or die; "
        "until (`pgrep -f 'postfix(-script)? reload'`) { select(undef, undef, undef, 0.01) } "
        "exit 0"
    )
    as_user(host, f"exec perl -e {shlex.quote(perl)}")
    as_user(host, "exec perl -e '$0 = \"smtpd\"; sleep 600'")
    host.ssh(
        "for i in $(seq 50); do ss -Hltn 'sport = :2525' | grep -q . && exit 0; sleep 0.1; done"
    )
    res = run_pyinfra(host, "deploy.py", *MODERN, check=False)
    assert res.returncode == 0, output(res)[-3000:]
    assert tls(host.address, 465, ssl.TLSVersion.TLSv1_2) is None
    host.ssh(f"pkill -u {USER}; true")
