"""What the certificate watcher reads, and how, on real Debian 12 and 13 hosts: a private key
never ends up in a file other users can read (a combined key+chain source; a non-root ACME user
who points its files at root's key), and a source that never ends (a FIFO, /dev/zero, a huge
file) is refused in bounded time, saying why."""

from __future__ import annotations

import subprocess
import time

from test_renewals import ARCHIVE, DATA, LIVE, PORTS, all_ports, renew, until_all_serve

from conftest import run_pyinfra

WATCH = "systemctl start mailtls-cert-watch.service"
STATE = "/var/lib/mailtls/cert-watch"
SERVED = "/etc/ssl/mailtls/served"
COMBINED = "/etc/ssl/combined/mx.pem"
ACME = "/home/acme/certs"


def sources(postfix: tuple[str, str], dovecot: tuple[str, str]) -> tuple[str, ...]:
    """--data arguments naming each daemon's certificate and key."""
    out: list[str] = []
    for daemon, (cert, key) in (("postfix", postfix), ("dovecot", dovecot)):
        out += ["--data", f"mailtls_{daemon}_cert_file={cert}"]
        out += ["--data", f"mailtls_{daemon}_key_file={key}"]
    return tuple(out)


def readable_keys(host, user: str = "nobody", group: str = "nogroup") -> list[str]:
    """Files under /etc/ssl/mailtls and /var/lib/mailtls that hold a private key and that `user`
    can read (opened as that user: modes of the file and of every directory above it count)."""
    out = host.ssh(
        "find /etc/ssl/mailtls /var/lib/mailtls -type f | while read -r f; do "
        "grep -q 'PRIVATE KEY' \"$f\" && "
        f'setpriv --reuid={user} --regid={group} --clear-groups cat "$f" >/dev/null 2>&1 && '
        'echo "$f"; done; true'
    ).stdout
    return out.split()


def pem_blocks(host, path: str) -> list[str]:
    """The PEM block types in a file, in order ("PRIVATE KEY", "CERTIFICATE", ...)."""
    out = host.ssh(f"sed -n 's/^-----BEGIN \\(.*\\)-----$/\\1/p' {path}").stdout
    return out.splitlines()


def fingerprint(host, path: str) -> str:
    out = host.ssh(f"openssl x509 -in {path} -noout -fingerprint -sha256").stdout
    return out.strip().split("=", 1)[1].replace(":", "").lower()


def combined(host, n: int) -> str:
    """A key followed by its certificate and an intermediate (haproxy's and
    smtpd_tls_chain_files' layout), root-only, renamed into place. Returns its fingerprint."""
    host.ssh(
        f"""set -e; umask 077; mkdir -p /etc/ssl/combined; cd /etc/ssl/combined
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k{n} -out c{n} \
    -days 30 -subj /CN=mx.test/O=combined{n} 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ik{n} -out i{n} \
    -days 30 -subj /CN=intermediate{n} 2>/dev/null
cat k{n} c{n} i{n} > .mx.pem.new && mv -f .mx.pem.new mx.pem"""
    )
    return fingerprint(host, f"/etc/ssl/combined/c{n}")


def test_a_combined_key_and_chain_file_serves_and_its_key_stays_private(fresh_host, suite):
    host = fresh_host(suite)
    first = combined(host, 1)
    data = sources((COMBINED, COMBINED), (COMBINED, COMBINED))
    run_pyinfra(host, "deploy.py", *data)
    assert all_ports(host) == dict.fromkeys(PORTS, first)
    # the served certificate holds the chain and nothing else; Postfix's file the key, then the
    # chain, each once
    assert readable_keys(host) == []
    assert pem_blocks(host, f"{SERVED}/dovecot.crt") == ["CERTIFICATE", "CERTIFICATE"]
    assert pem_blocks(host, f"{SERVED}/postfix.pem") == [
        "PRIVATE KEY",
        "CERTIFICATE",
        "CERTIFICATE",
    ]

    # A renewal: the previous copies go to mailtls-apply's backups, which stay private too.
    second = combined(host, 2)
    host.ssh(WATCH)
    assert until_all_serve(host, second) == dict.fromkeys(PORTS, second)
    assert readable_keys(host) == []
    assert pem_blocks(host, f"{SERVED}/dovecot.crt") == ["CERTIFICATE", "CERTIFICATE"]
    assert pem_blocks(host, f"{SERVED}/postfix.pem") == [
        "PRIVATE KEY",
        "CERTIFICATE",
        "CERTIFICATE",
    ]
    assert grand_total(run_pyinfra(host, "deploy.py", *data))[3] == "-"

    # What an older watcher left (the whole combined file as the certificate, 0644) is closed
    # and replaced by the next tick, though the source did not change.
    host.ssh(f"cp {COMBINED} {SERVED}/dovecot.crt && chmod 0644 {SERVED}/dovecot.crt && {WATCH}")
    assert readable_keys(host) == []
    assert pem_blocks(host, f"{SERVED}/dovecot.crt") == ["CERTIFICATE", "CERTIFICATE"]
    assert until_all_serve(host, second) == dict.fromkeys(PORTS, second)


def grand_total(res) -> list[str]:
    return next(line for line in res.stderr.splitlines() if "Grand total" in line).split()


def acme_pair(host, n: int) -> str:
    """The acme user's own pair in a directory it owns (acme.sh's, dehydrated's layout), written
    by that user. Returns the certificate's fingerprint."""
    host.ssh(
        f"""set -e; setpriv --reuid=acme --regid=acme --init-groups sh -ec '
umask 077; mkdir -p {ACME}; cd {ACME}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key{n} \
    -out cert{n} -days 30 -subj /CN=mx.test/O=acme{n} 2>/dev/null
chmod 0644 cert{n}; cp cert{n} .f && mv -f .f fullchain.pem; cp key{n} .k && mv -f .k privkey.pem'"""
    )
    return fingerprint(host, f"{ACME}/cert{n}")


def test_a_non_root_acme_user_cannot_make_the_watcher_read_roots_key(fresh_host, suite):
    host = fresh_host(suite)
    host.ssh("useradd -m acme")
    postfix_fp = renew(host, 1)  # root's own pair, certbot's layout
    dovecot_fp = acme_pair(host, 1)
    data = sources(
        (f"{LIVE}/fullchain.pem", f"{LIVE}/privkey.pem"),
        (f"{ACME}/fullchain.pem", f"{ACME}/privkey.pem"),
    )
    run_pyinfra(host, "deploy.py", *data)
    want = {p: (dovecot_fp if p in (143, 993) else postfix_fp) for p in PORTS}
    assert all_ports(host) == want

    # The user swaps its files for links to root's Postfix key; one timer tick later.
    host.ssh(
        "setpriv --reuid=acme --regid=acme --init-groups sh -ec '"
        f"cd {ACME}; for f in fullchain privkey; do "
        f"ln -s {SERVED}/postfix.pem .$f.new && mv -T .$f.new $f.pem; done'"
    )
    run = host.ssh(WATCH, check=False)
    assert readable_keys(host, "acme", "acme") == []
    assert run.returncode != 0
    status = host.ssh(f"cat {STATE}/dovecot.status").stdout
    assert "rejected" in status and "unreadable by acme" in status, status
    assert all_ports(host) == want  # both keep the last good pair
    # the user's files are read as that user (and it says so); root's own path as root
    said = host.ssh("journalctl -q --no-pager -t mailtls-cert-watch -o cat").stdout
    assert f"dovecot: read {ACME}/privkey.pem as user acme" in said, said
    assert f"postfix: read {LIVE}" not in said, said

    # A directory on the way anyone may write to (no sticky bit): refused, saying why.
    host.ssh(
        "mkdir -m 0777 /srv/drop && cd /srv/drop && openssl req -x509 -newkey ec -pkeyopt "
        "ec_paramgen_curve:P-256 -nodes -keyout privkey.pem -out fullchain.pem -days 30 "
        "-subj /CN=mx.test/O=drop 2>/dev/null && chmod 0600 privkey.pem"
    )
    res = run_pyinfra(
        host,
        "deploy.py",
        *sources(
            (f"{LIVE}/fullchain.pem", f"{LIVE}/privkey.pem"),
            ("/srv/drop/fullchain.pem", "/srv/drop/privkey.pem"),
        ),
        check=False,
    )
    assert res.returncode != 0
    assert (
        "the directory drop (drwxrwxrwx, owner root) on the path of /srv/drop/fullchain.pem can be changed"
        in (res.stdout + res.stderr)
    ), res.stderr[-3000:]
    assert all_ports(host) == want


def timed_watch(host) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    res = host.ssh(f"timeout 150 {WATCH}", check=False, timeout=200)
    return time.monotonic() - start, res


def test_a_key_that_never_ends_is_refused_in_bounded_time(fresh_host, suite):
    host = fresh_host(suite)
    good = renew(host, 1)
    run_pyinfra(host, "deploy.py", *DATA)

    for n, (make, why) in enumerate(
        [
            ("mkfifo {new}", "is not a regular file"),
            ("ln -s /dev/zero {new}", "is not a regular file"),
            ("head -c 2000000 /dev/zero > {new}", "is larger than 1 MiB"),
        ],
        start=5,
    ):
        new = f"{ARCHIVE}/privkey{n}.pem"
        host.ssh(
            f"set -e; {make.format(new=new)}; ln -s {new} {LIVE}/.privkey.pem.new && "
            f"mv -T {LIVE}/.privkey.pem.new {LIVE}/privkey.pem"
        )
        took, res = timed_watch(host)
        # both daemons judged, each with its one 10 s second look: far from the 150 s cut-off
        said = host.ssh(
            f"cat {STATE}/*.status; journalctl -q --no-pager -u mailtls-cert-watch.service "
            "-t mailtls-cert-watch -o short"
        ).stdout
        assert took < 90 and res.returncode not in (0, 124), (took, res, said)
        for daemon in ("postfix", "dovecot"):
            status = host.ssh(f"cat {STATE}/{daemon}.status").stdout
            assert f"rejected {LIVE}/fullchain.pem: {LIVE}/privkey.pem {why}" in status, status
        warned = host.ssh("journalctl -q --no-pager -t mailtls-cert-watch -p warning -o cat").stdout
        assert (
            f"postfix: renewed certificate NOT put in service: {LIVE}/privkey.pem {why}" in warned
        )
        assert all_ports(host) == dict.fromkeys(PORTS, good)
        # what the deploy runs says so at once, too
        start = time.monotonic()
        res = host.ssh("timeout 100 mailtls-cert-watch --deploy postfix", check=False, timeout=150)
        assert time.monotonic() - start < 30 and res.returncode == 1, res
        assert f"{LIVE}/privkey.pem {why}" in res.stderr, res.stderr
    # The next deploy neither hangs nor waits for a lock: it fails at once, saying why.
    host.ssh(
        f"ln -s {ARCHIVE}/privkey5.pem {LIVE}/.privkey.pem.new && "
        f"mv -T {LIVE}/.privkey.pem.new {LIVE}/privkey.pem"
    )
    start = time.monotonic()
    res = run_pyinfra(host, "deploy.py", *DATA, check=False, timeout=300)
    assert time.monotonic() - start < 90 and res.returncode != 0, res.stderr[-3000:]
    assert f"{LIVE}/privkey.pem is not a regular file" in res.stdout + res.stderr, res.stderr[
        -3000:
    ]
    assert all_ports(host) == dict.fromkeys(PORTS, good)
    # and the unit itself has a time limit, whatever happens
    unit = host.ssh("systemctl show -p TimeoutStartUSec mailtls-cert-watch.service").stdout
    assert "infinity" not in unit, unit
