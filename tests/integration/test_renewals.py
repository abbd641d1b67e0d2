"""Certificate renewals on real Debian 12 and 13 hosts: a renewed pair written the way certbot
writes it (live/ symlinks -> archive/) is served on every mail port after the watcher runs; a
broken one never is, and the journal and the audit's status file say so."""

from __future__ import annotations

import hashlib
import re
import ssl
import subprocess
import time

from conftest import run_pyinfra

PORTS = {25: "smtp", 587: "smtp", 465: None, 143: "imap", 993: None}
LIVE = "/etc/letsencrypt/live/mx.test"
ARCHIVE = "/etc/letsencrypt/archive/mx.test"
DATA = (
    "--data",
    f"mailtls_postfix_cert_file={LIVE}/fullchain.pem",
    "--data",
    f"mailtls_postfix_key_file={LIVE}/privkey.pem",
    "--data",
    f"mailtls_dovecot_cert_file={LIVE}/fullchain.pem",
    "--data",
    f"mailtls_dovecot_key_file={LIVE}/privkey.pem",
)
TIMER = "mailtls-cert-watch.timer"


def renew(host, n: int, mismatch: bool = False) -> str:
    """What certbot does on a renewal: new files in archive/ (key 0600), then each live/ symlink
    replaced by a rename. `mismatch`: the new key belongs to no certificate. Returns the new
    certificate's SHA-256 fingerprint (hex, lower case)."""
    script = f"""set -e
umask 077; mkdir -p {ARCHIVE} {LIVE}; cd {ARCHIVE}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout privkey{n}.pem \
    -out cert{n}.pem -days 30 -subj /CN=mx.test/O=renewal{n} 2>/dev/null
{f"openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out privkey{n}.pem" if mismatch else ""}
chmod 0644 cert{n}.pem; cp cert{n}.pem fullchain{n}.pem
for f in cert fullchain privkey; do
    ln -s ../../archive/mx.test/${{f}}{n}.pem {LIVE}/.$f.new && mv -T {LIVE}/.$f.new {LIVE}/$f.pem
done
cat cert{n}.pem"""
    pem = host.ssh(script).stdout
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def served(address: str, port: int) -> str | None:
    """SHA-256 fingerprint of the certificate a full handshake on `port` presents, None if none."""
    starttls = ["-starttls", s] if (s := PORTS.get(port)) else []
    res = subprocess.run(
        ["openssl", "s_client", "-connect", f"{address}:{port}", *starttls],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", res.stdout, re.S)
    if not pem or not re.search(r"^New, TLSv1\.[23], Cipher is (?!\(NONE\))", res.stdout, re.M):
        return None
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.group(0))).hexdigest()


def all_ports(host) -> dict[int, str | None]:
    return {port: served(host.address, port) for port in PORTS}


def until_all_serve(host, fingerprint: str, timeout: float = 180) -> dict:
    """Poll (generously: a loaded machine) until every port serves `fingerprint`."""
    deadline = time.monotonic() + timeout
    while True:
        now = all_ports(host)
        if set(now.values()) == {fingerprint} or time.monotonic() > deadline:
            return now
        time.sleep(2)


def grand_total(res) -> list[str]:
    return next(line for line in res.stderr.splitlines() if "Grand total" in line).split()


def test_renewals_are_served_and_broken_ones_never(fresh_host, suite):
    host = fresh_host(suite)
    first = renew(host, 1)
    run_pyinfra(host, "deploy.py", *DATA)
    assert all_ports(host) == dict.fromkeys(PORTS, first)
    # the watcher is installed, enabled and scheduled; a second run changes nothing
    assert host.ssh(
        f"systemctl is-enabled {TIMER}; systemctl is-active {TIMER}"
    ).stdout.split() == ["enabled", "active"]
    assert (
        "mailtls-cert-watch.service" in host.ssh(f"systemctl list-timers --no-pager {TIMER}").stdout
    )
    assert grand_total(run_pyinfra(host, "deploy.py", *DATA))[3] == "-"

    # A good renewal: served on every port once the watcher ran (the timer's minute, run now).
    second = renew(host, 2)
    assert second != first
    host.ssh("systemctl start mailtls-cert-watch.service")
    now = until_all_serve(host, second)
    assert now == dict.fromkeys(PORTS, second), now
    assert "serving" in host.ssh("cat /var/lib/mailtls/cert-watch/postfix.status").stdout

    # A broken renewal (the key belongs to no certificate): never served.
    renew(host, 3, mismatch=True)
    run = host.ssh("systemctl start mailtls-cert-watch.service", check=False)
    assert run.returncode != 0  # the unit fails: `systemctl --failed` shows it too
    for _ in range(3):  # handshakes keep working, with the last good pair
        assert all_ports(host) == dict.fromkeys(PORTS, second)
        time.sleep(1)
    # new smtpd processes read the copy themselves: still the good pair after a reload
    host.ssh("postfix reload && doveadm reload")
    assert until_all_serve(host, second) == dict.fromkeys(PORTS, second)
    warned = host.ssh("journalctl -q --no-pager -t mailtls-cert-watch -p warning -o cat").stdout
    for daemon in ("postfix", "dovecot"):
        assert (
            f"{daemon}: renewed certificate NOT put in service: the key {LIVE}/privkey.pem does not "
            "match" in warned
        ), warned
        assert "rejected" in host.ssh(f"cat /var/lib/mailtls/cert-watch/{daemon}.status").stdout
    # the deploy neither serves it nor retries it: it warns and changes nothing
    res = run_pyinfra(host, "deploy.py", *DATA)
    assert "refused by mailtls-cert-watch" in res.stderr and grand_total(res)[3] == "-", res.stderr[
        -3000:
    ]
    assert all_ports(host) == dict.fromkeys(PORTS, second)

    # Fixed by the next renewal; then switched off: the timer goes, the daemons name the files.
    fourth = renew(host, 4)
    host.ssh("systemctl start mailtls-cert-watch.service")
    assert until_all_serve(host, fourth) == dict.fromkeys(PORTS, fourth)
    run_pyinfra(host, "deploy.py", *DATA, "--data", "mailtls_cert_watch=false")
    gone = host.ssh(
        f"systemctl is-enabled {TIMER}; ls /usr/local/sbin /etc/systemd/system", check=False
    ).stdout
    assert "enabled" not in gone and "mailtls-cert-watch" not in gone, gone
    assert host.ssh("postconf -h smtpd_tls_cert_file").stdout.strip() == f"{LIVE}/fullchain.pem"
    assert all_ports(host) == dict.fromkeys(PORTS, fourth)
    assert (
        grand_total(run_pyinfra(host, "deploy.py", *DATA, "--data", "mailtls_cert_watch=false"))[3]
        == "-"
    )


def test_unset_certificate_settings_keep_the_certificate_served(fresh_host, suite):
    """The certificate settings removed after the watcher served them: both daemons keep serving
    the same (now frozen) copies, never another certificate (Dovecot's 10-ssl.conf snakeoil);
    every run warns naming the copy and what to do; a re-run changes nothing."""
    host = fresh_host(suite)
    first = renew(host, 1)
    run_pyinfra(host, "deploy.py", *DATA)
    assert all_ports(host) == dict.fromkeys(PORTS, first)
    for n in (1, 2):
        res = run_pyinfra(host, "deploy.py")
        assert all_ports(host) == dict.fromkeys(PORTS, first), (n, res.stderr[-3000:])
        for daemon, copy in (("postfix", "postfix.pem"), ("dovecot", "dovecot.crt")):
            assert (
                f"{daemon}: mailtls_{daemon}_cert_file/_key_file are unset" in res.stderr
                and f"/etc/ssl/mailtls/served/{copy}" in res.stderr
                and "nothing renews" in res.stderr
            ), (n, daemon, res.stderr[-3000:])
        assert "mailtls-cert-watch" not in host.ssh("ls /usr/local/sbin").stdout
    assert grand_total(res)[3] == "-", res.stderr[-3000:]  # the re-run changes nothing
