"""Errors a user can read (issue 12 item 9), on real hosts: one line naming the host and the cause,
no traceback; a host that fails at run time does not stop the others; the audit's failures are
printed once, as a list."""

from __future__ import annotations

import os
import subprocess

from test_safety import established, grand_total, hosts_file_line, output, pending, snapshot

from conftest import PYINFRA, ROOT, printed, run_pyinfra


def no_traceback(out: str) -> None:
    assert "Traceback" not in out and "Unexpected error" not in out, out[-4000:]


def test_a_host_that_fails_at_run_time_does_not_stop_the_others(fresh_host, tmp_path):
    good, bad = fresh_host("bookworm"), fresh_host("trixie")
    # Postfix not installed (its commands gone from PATH): that host fails, with one line.
    bad.ssh("mkdir -p /root/hidden && mv /usr/sbin/postconf /usr/sbin/postfix /root/hidden/")
    res = run_pyinfra([good, bad], check=False)
    out = output(res)
    assert res.returncode != 0, out[-3000:]
    no_traceback(out)
    said = [line for line in out.splitlines() if "Postfix is not installed" in line]
    assert len(said) == 1 and printed(said[0], bad, f"{bad.name}: Postfix is not installed"), out[
        -3000:
    ]
    assert pending(good) == "" and established(good.address, 25)[0] == "TLSv1.3"
    assert "Mail TLS" in out and printed(out, good, "Success"), out[-3000:]
    assert not bad.ssh("ls /usr/local/sbin/mailtls-apply 2>/dev/null; true").stdout  # untouched

    # An unsupported Dovecot: the same.
    bad.ssh(
        "mv /root/hidden/* /usr/sbin/ && printf '#!/bin/sh\\necho \"2.2.36 (1f10bfa63)\"\\n' "
        "> /usr/local/bin/dovecot && chmod 755 /usr/local/bin/dovecot"
    )
    res = run_pyinfra([good, bad], check=False)
    out = output(res)
    assert res.returncode != 0, out[-3000:]
    no_traceback(out)
    assert printed(out, bad, f"{bad.name}: Dovecot 2.2 is not supported (2.3 and 2.4 are)"), out[
        -3000:
    ]
    assert grand_total(run_pyinfra(good))[3] == "-"

    # A change one host rejects (and rolls back) does not stop the other's.
    bad.ssh("rm /usr/local/bin/dovecot")
    hosts = tmp_path / "hosts.txt"
    hosts.write_text(
        hosts_file_line(
            bad,
            "postfix_cert_file=/etc/ssl/certs/missing.pem "
            "postfix_key_file=/etc/ssl/private/missing.key mailtls_cert_watch=false",
        )
        + hosts_file_line(good, "tls_profile=modern")
    )
    # the hosts file names the hosts (it beats the test-host list run_pyinfra also sets)
    res = run_pyinfra([bad, good], env={"MAILTLS_HOSTS_FILE": str(hosts)}, check=False, timeout=600)
    out = output(res)
    assert res.returncode != 0, out[-3000:]
    assert "mailtls: postfix rejected the new configuration" in out and "rolled back" in out, out[
        -3000:
    ]
    assert (
        pending(good) == ""
        and "TLSv1.3"
        in good.ssh("grep ssl_min_protocol /etc/dovecot/conf.d/99-mailtls.conf").stdout
    )


def test_audit_errors_and_failures_are_readable(stock):
    host = stock["bookworm"]  # stock Postfix accepts TLS 1.0 and anonymous suites: it fails
    env = {"MAILTLS_AUDIT_JSON": "/tmp/mailtls-test-audit/{host}.json"}
    res = run_pyinfra(host, "audit.py", "--data", "audit_ports=25", env=env, check=False)
    out = output(res)
    assert res.returncode != 0, out[-3000:]
    no_traceback(out)
    assert out.count("TLS audit FAILED") == 1, out[-4000:]
    report = out[out.index("TLS audit FAILED") :].splitlines()
    assert report[1].startswith(f"  - {host.name} port 25: "), report[:5]

    res = run_pyinfra(host, "audit.py", "--data", "audit_ports=25,26", check=False)
    out = output(res)
    assert res.returncode != 0
    no_traceback(out)
    assert (
        f"invalid settings: {host.name}: audit_ports='25,26': '26' is not a mail port this audit knows"
        in out
    ), out[-3000:]
    assert "Starting operation" not in out


def test_ipv6_targets(tmp_path):
    """An IPv6 target with a port reaches pyinfra as that host and port (here the controller's
    own loopback, port 1: refused at once, nothing leaves the machine); a malformed one is one
    line naming it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILTLS_")}
    for target, said in (
        ("[::1]:1", "[::1] Could not connect ([Errno None] Unable to connect to port 1 on ::1)"),
        (
            "[2001:db8::1",
            "invalid inventory: MAILTLS_HOSTS: bad host '[2001:db8::1' (IPv6 with a port",
        ),
        ("2001:db8::zz", "invalid inventory: MAILTLS_HOSTS: bad IPv6 address in '2001:db8::zz'"),
    ):
        res = subprocess.run(
            [PYINFRA, "-y", "inventory.py", "deploy.py"],
            cwd=ROOT,
            env=dict(env, MAILTLS_HOSTS=target),
            capture_output=True,
            text=True,
            timeout=120,
        )
        out = output(res)
        assert res.returncode != 0
        no_traceback(out)
        assert said in out, out[-2000:]


def test_dh_file_checked_against_the_host_before_any_change(fresh_host):
    """What only the host can tell about dh_file (issue 12 item 5): a symlink, the certificate
    the host uses now under another name, a directory others can write to. Each stops the run
    with one line before anything changes."""
    host = fresh_host("trixie")
    host.ssh(
        "mkdir -p /srv/tls /srv/shared && chmod 1777 /srv/shared && "
        "cp /etc/ssl/certs/ssl-cert-snakeoil.pem /srv/tls/cert.pem && "
        "postconf -e smtpd_tls_cert_file=/srv/tls/cert.pem"
    )
    before = (
        snapshot(host) + host.ssh("sha256sum /srv/tls/cert.pem; ls -la /etc/dovecot/private").stdout
    )
    for dh_file, why in (
        (
            "/etc/dovecot/private/dovecot.pem",
            "is a symlink (to /etc/ssl/certs/ssl-cert-snakeoil.pem)",
        ),
        (
            "/srv//tls/./cert.pem",
            "dh_file='/srv/tls/cert.pem' is a certificate or key the host uses now",
        ),
        ("/srv/shared/dh.pem", "/srv/shared is writable by others or sticky (mode 1777)"),
    ):
        res = run_pyinfra(
            host,
            "deploy.py",
            "--data",
            "tls_profile=legacy-dhe",
            "--data",
            f"dh_file={dh_file}",
            check=False,
        )
        out = output(res)
        assert res.returncode != 0, out[-3000:]
        lines = [line for line in out.splitlines() if "invalid settings:" in line]
        assert len(lines) == 1 and f"{host.name}: " in lines[0] and why in lines[0], out[-3000:]
        assert "Starting operation" not in out, out[-3000:]
        assert (
            snapshot(host)
            + host.ssh("sha256sum /srv/tls/cert.pem; ls -la /etc/dovecot/private").stdout
            == before
        )


def test_a_second_postfix_instance_is_refused_naming_it(fresh_host, suite):
    """postmulti's postfix-out, its own smtpd on 127.0.0.2:25 with the stock TLS settings: a run
    that hardened /etc/postfix only would report the host forward-secret while postfix-out kept
    TLS 1.0 and RSA key exchange. The run stops before any change, naming the instance."""
    host = fresh_host(suite)
    host.ssh(
        "postmulti -e init >/dev/null && postmulti -I postfix-out -G mta -e create >/dev/null && "
        "postconf -c /etc/postfix-out -M# smtp/inet && "
        "postconf -c /etc/postfix-out -Me '127.0.0.2:25/inet=127.0.0.2:25 inet n - y - - smtpd' && "
        "postmulti -i postfix-out -e enable && postmulti -i postfix-out -p start"
    )
    before = snapshot(host)
    res = run_pyinfra(host, check=False)
    out = output(res)
    assert res.returncode != 0, out[-3000:]
    no_traceback(out)
    assert f"{host.name}: Postfix instance postfix-out (/etc/postfix-out, enabled)" in out, out
    assert f"{host.name}: nothing was changed on this host" in out, out
    assert snapshot(host) == before
    assert not host.ssh("ls /usr/local/sbin/mailtls-apply 2>/dev/null; true").stdout
