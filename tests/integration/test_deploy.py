"""The deploy on real Debian 12, 13 and 14 hosts: real handshakes, real mail, real logs, idempotence.
The default deploy's convergence, outside checks and re-run on every release."""

from __future__ import annotations

import hashlib
import imaplib
import re
import smtplib
import ssl
import subprocess
import time
import uuid

import pytest
from probes import STOCK_TLS_PORTS as PORTS

from conftest import PYINFRA, ROOT, SUITES, run_pyinfra

MANDATORY = (587, 465, 143, 993)
CONFIG = "/etc/postfix/main.cf /etc/postfix/master.cf /etc/dovecot/conf.d/*"


def s_client(address: str, port: int, *args: str, on_host=None) -> str:
    """One real handshake; returns openssl's output. on_host: run it on that test host instead."""
    starttls = ["-starttls", s] if (s := PORTS.get(port)) else []
    argv = ["openssl", "s_client", "-connect", f"{address}:{port}", *starttls, *args]
    if on_host is not None:
        return on_host.ssh(" ".join(argv) + " </dev/null 2>&1", check=False).stdout
    res = subprocess.run(argv, input="", capture_output=True, text=True, timeout=30)
    return res.stdout + res.stderr


def established(out: str) -> bool:
    return bool(re.search(r"^New, TLSv1\.[0-3], Cipher is (?!\(NONE\))", out, re.M))


# Client-side SECLEVEL=0 so the controller's OpenSSL really offers old protocols and suites:
# a refusal must come from the server.
LEGACY = "DEFAULT:@SECLEVEL=0"


@pytest.mark.parametrize("suite", SUITES)
def test_every_port_negotiates_forward_secret_key_exchange(deployed, suite):
    host = deployed[suite]
    for port in PORTS:
        out = s_client(host.address, port)
        assert established(out), (port, out)
        assert re.search(r"Server Temp Key: (X25519|ECDH)", out), (port, out)


@pytest.mark.parametrize("suite", SUITES)
def test_hybrid_pq_offered_only_where_openssl_supports_it(deployed, suite):
    host = deployed[suite]
    for port in (25, 993):
        out = s_client("127.0.0.1", port, "-groups", "X25519MLKEM768:X25519", on_host=host)
        if suite != "bookworm":  # OpenSSL >= 3.5
            assert "Negotiated TLS1.3 group: X25519MLKEM768" in out, (port, out)
        else:  # OpenSSL 3.0 has no ML-KEM: the client cannot even ask; X25519 must still work
            assert established(s_client(host.address, port)), port


PQ_SUITES = [s for s in SUITES if s != "bookworm"]  # OpenSSL >= 3.5


@pytest.mark.parametrize("suite", PQ_SUITES)
@pytest.mark.parametrize(
    "groups",
    [
        "X25519MLKEM768",  # a client that offers only the hybrid group
        "X25519MLKEM768:*X25519",  # offers it with an X25519 key share only (Postfix 3.11's client)
    ],
)
def test_the_server_asks_for_the_hybrid_group_a_client_offers(deployed, suite, groups):
    """The hybrid group is in a tier of its own on the server: negotiated whenever the client
    offers it, by HelloRetryRequest when its share is a classic one (a flat list would take the
    X25519 share)."""
    host = deployed[suite]
    for port in (25, 143, 993):
        out = s_client("127.0.0.1", port, "-groups", groups, "-msg", on_host=host)
        assert "Negotiated TLS1.3 group: X25519MLKEM768" in out, (port, groups, out)
        # the retry is a first ServerHello (HelloRetryRequest), then the real one
        hellos = 2 if "*" in groups else 1
        assert out.count("ServerHello") == hellos, (port, groups, out[-3000:])


@pytest.mark.parametrize("suite", PQ_SUITES)
def test_postfix_311s_own_client_gets_the_hybrid_group(deployed, suite):
    """posttls-finger with Postfix 3.11's default groups (?X25519MLKEM768:DEFAULT: an X25519
    share, the hybrid group offered), as a Debian 14 sender connects to port 25."""
    out = (
        deployed[suite]
        .ssh(
            "posttls-finger -c -l may -o 'tls_eecdh_auto_curves=?X25519MLKEM768:DEFAULT' "
            "'[127.0.0.1]:25' 2>&1",
            check=False,
        )
        .stdout
    )
    assert re.search(r"TLS connection established .* key-exchange X25519MLKEM768 ", out), out


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("proto", ["-tls1", "-tls1_1"])
def test_old_protocols_refused_everywhere(deployed, suite, proto):
    host = deployed[suite]
    for port in PORTS:
        out = s_client(host.address, port, proto, "-cipher", LEGACY)
        assert not established(out), (port, proto, out)


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize(
    "cipher",
    [
        "AES128-GCM-SHA256",
        "AES256-SHA",
        "ADH-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-SHA",
    ],
)
def test_non_fs_and_non_aead_suites_refused(deployed, suite, cipher):
    host = deployed[suite]
    for port in PORTS:
        out = s_client(host.address, port, "-tls1_2", "-cipher", f"{cipher}:@SECLEVEL=0")
        assert not established(out), (port, cipher, out)


@pytest.mark.parametrize("suite", SUITES)
def test_the_refusal_checks_can_fail(stock, suite):
    """The stock host accepts what the deployed one refuses: the probes above really probe."""
    host = stock[suite]
    assert established(s_client(host.address, 25, "-tls1_1", "-cipher", LEGACY))
    assert established(
        s_client(host.address, 25, "-tls1_2", "-cipher", "AES128-GCM-SHA256:@SECLEVEL=0")
    )


@pytest.mark.parametrize("suite", SUITES)
def test_mail_and_login_are_logged_with_protocol_and_cipher(deployed, suite):
    host = deployed[suite]
    tag = uuid.uuid4().hex
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP(host.address, 25, timeout=30) as smtp:
        smtp.starttls(context=ctx)
        smtp.sendmail(
            "probe@controller.mailtls.test",
            [f"mailtest@{host.fqdn}"],
            f"Subject: {tag}\r\n\r\nhello\r\n",
        )
    with imaplib.IMAP4_SSL(host.address, 993, ssl_context=ctx, timeout=30) as imap:
        imap.login("mailtest", "mailtest-pw")
        imap.logout()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        log = host.ssh("journalctl -q --no-pager -o short-iso -n 300 SYSLOG_FACILITY=2").stdout
        if tag in host.ssh("cat /var/mail/mailtest", check=False).stdout and re.search(
            r"imap-login: (Login|Logged in): user=<mailtest>", log
        ):
            break
        time.sleep(0.5)
    assert re.search(
        r"postfix/smtpd\[\d+\]: (Anonymous|Untrusted|Trusted|Verified) TLS connection "
        r"established from controller\S*: TLSv1\.3 with cipher TLS_\w+",
        log,
    ), log
    assert re.search(
        r"imap-login: (Login|Logged in): user=<mailtest>.*TLSv1\.3 with cipher TLS_\w+", log
    ), log
    assert tag in host.ssh("cat /var/mail/mailtest").stdout  # delivered


@pytest.mark.parametrize("suite", SUITES)
def test_postfix_and_postconf_print_no_warning(deployed, suite):
    host = deployed[suite]
    out = host.ssh(
        "postfix check 2>&1; postconf -n 2>&1 >/dev/null; postconf -P 2>&1 >/dev/null"
    ).stdout
    assert out == "", out


@pytest.mark.parametrize("suite", SUITES)
def test_second_run_changes_nothing(deployed, suite):
    res = run_pyinfra(deployed[suite])
    assert "No changes" in res.stderr, res.stderr[-3000:]
    grand = next(line for line in res.stderr.splitlines() if "Grand total" in line).split()
    assert grand[3] == "-", grand  # Success column: nothing changed


def test_hosts_alike_get_the_same_main_cf_bytes(fresh_host, suite):
    """Two stock hosts of a release, one run: byte-identical main.cf. postconf appends the ~13
    new settings in one run, in an order fixed on every host (postfix.apply.postconf_commands; on
    bookworm's Postfix 3.7, only with NORANDOMIZE: 13! orders otherwise)."""
    hosts = [fresh_host(suite), fresh_host(suite)]
    before = {h.ssh("sha256sum < /etc/postfix/main.cf").stdout for h in hosts}
    assert len(before) == 1, before  # the same stock file
    run_pyinfra(hosts)
    after = [h.ssh("cat /etc/postfix/main.cf").stdout for h in hosts]
    assert after[0] == after[1], "\n".join(after)
    assert (
        after[0].count("smtpd_tls_") > 5
        and {h.ssh("sha256sum < /etc/postfix/main.cf").stdout for h in hosts} != before
    )


def _remote_commands(res: subprocess.CompletedProcess) -> list[str]:
    """Every command a `pyinfra --debug` run ran on the host, facts included, one entry each."""
    return [line for line in res.stderr.splitlines() if "Running command on" in line]


def test_a_script_that_lost_its_mode_gets_it_back(deployed, suite):
    """Same bytes, mode 0644: the next run restores 0755 with a chmod and nothing else (no
    upload, no reload); the run after that is back to the fact's one remote command."""
    host = deployed[suite]
    apply = "/usr/local/sbin/mailtls-apply"
    host.ssh(f"chmod 644 {apply}")
    try:
        res = run_pyinfra(host, "deploy.py", "--debug")
        assert host.ssh(f"stat -c %a {apply}").stdout.strip() == "755"
        commands = _remote_commands(res)
        assert len(commands) == 2 and f"chmod 0755 -- {apply}" in commands[1], commands
    finally:
        host.ssh(f"chmod 755 {apply}")
    commands = _remote_commands(run_pyinfra(host, "deploy.py", "--debug"))
    assert len(commands) == 1, commands  # the MailHost fact


def _config_digest(host) -> str:
    out = host.ssh(
        f"cat {CONFIG} 2>/dev/null | sha256sum; ls /var/lib/mailtls /usr/local/sbin 2>&1; true"
    ).stdout
    return hashlib.sha256(out.encode()).hexdigest()


def test_dry_run_lists_changes_and_changes_nothing(fresh_host, suite):
    host = fresh_host(suite)
    before = _config_digest(host)
    res = run_pyinfra(host, "deploy.py", "--dry")
    changes = res.stderr.split("Detected changes:")[1]
    for op in ("Postfix TLS settings", "Dovecot TLS settings", "Postfix, Dovecot: check, reload"):
        assert re.search(re.escape(op) + r".*\s1 \(" + host.name + r"\)", changes), (op, changes)
    assert _config_digest(host) == before


def test_modern_refuses_tls12_where_tls_is_mandatory(fresh_host, suite):
    """Deployed with the host given inline, without inventory.py, as `pyinfra HOST deploy.py`."""
    host = fresh_host(suite)
    data = [
        a
        for k, v in host.pyinfra_data().items()
        if k != "ssh_hostname"
        for a in ("--data", f"{k}={v}")
    ]
    res = subprocess.run(
        [PYINFRA, "-y", host.address, "deploy.py", *data, "--data", "tls_profile=modern"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    for port in MANDATORY:
        assert not established(s_client(host.address, port, "-tls1_2")), port
        assert established(s_client(host.address, port, "-tls1_3")), port
    # port 25 keeps the intermediate floor: refusing TLS 1.2 there would push senders to plaintext
    out = s_client(host.address, 25, "-tls1_2")
    assert established(out) and "ECDHE" in out, out
