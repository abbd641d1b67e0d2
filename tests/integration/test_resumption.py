"""Session resumption on real hosts, as a real client sees it: `openssl s_client -sess_out/-sess_in`.

The policy (docs/resumption.md): with tls_resumption=bounded Postfix resumes TLS 1.2 by ticket and
TLS 1.3 with a fresh ECDHE, lifetime hint 4800 s (ticket keys usable for at most 3600 s); Dovecot
issues no TLS 1.2 ticket and resumes nothing. With tls_resumption=off nothing resumes anywhere.
"""

from __future__ import annotations

import re
import subprocess

from conftest import run_pyinfra

POSTFIX, DOVECOT = (25, 587, 465), (143, 993)
STARTTLS = {25: "-starttls smtp", 587: "-starttls smtp", 143: "-starttls imap"}


def s_client(host, port: int, version: str, *extra: str) -> str:
    """One s_client connection that stays up 1.5 s (a TLS 1.3 server sends its tickets after the
    handshake) and then hangs up; its whole output."""
    cmd = (
        f"sleep 1.5 | timeout 20 openssl s_client -connect {host.address}:{port} {STARTTLS.get(port, '')} "
        f"-{version} {' '.join(extra)}"
    )
    return subprocess.run(
        cmd, shell=True, capture_output=True, text=True, errors="replace", timeout=60
    ).stdout


def resumption(host, port: int, version: str, tmp_path, *extra: str) -> dict:
    """Two connections, the second offering the first's session: what happened."""
    sess = tmp_path / f"{port}-{version}.sess"
    first = s_client(host, port, version, "-sess_out", str(sess), *extra)
    assert re.search(r"^(New|Reused), TLSv1", first, re.M), first[-2000:]
    second = s_client(host, port, version, "-sess_in", str(sess), *extra)
    hints = [int(h) for h in re.findall(r"lifetime hint: (\d+)", first)]
    return {
        "resumed": bool(re.search(r"^Reused, TLSv1", second, re.M)),
        "hints": hints,
        "tls13_tickets": first.count("Post-Handshake New Session Ticket arrived"),
        "temp_key": m.group(1).rstrip(",")
        if (m := re.search(r"Server Temp Key: (\S+)", second))
        else None,
    }


def test_deployed_host_resumes_as_the_policy_says(deployed, suite, tmp_path):
    host = deployed[suite]
    seen = {}
    for port in POSTFIX + DOVECOT:
        for version in ("tls1_2", "tls1_3"):
            seen[port, version] = r = resumption(host, port, version, tmp_path)
            print(port, version, r)
        seen[port, "id"] = resumption(host, port, "tls1_2", tmp_path, "-no_ticket")
    for port in POSTFIX:
        t12, t13 = seen[port, "tls1_2"], seen[port, "tls1_3"]
        assert t12["resumed"] and t12["hints"] == [4800], (port, t12)  # 2 T with T = 2400 s
        # TLS 1.3 resumes, and with a fresh ECDHE (psk_dhe_ke): the server still sends a key share
        assert t13["resumed"] and t13["hints"] == [4800] and t13["temp_key"], (port, t13)
        assert not seen[port, "id"][
            "resumed"
        ]  # no session cache: no master secrets kept server-side
    for port in DOVECOT:
        t12, t13 = seen[port, "tls1_2"], seen[port, "tls1_3"]
        assert not t12["resumed"] and t12["hints"] == [], (port, t12)  # no TLS 1.2 ticket at all
        assert not t13["resumed"] and not seen[port, "id"]["resumed"], (port, t13)


def test_tls13_resumption_always_has_a_fresh_ecdhe(deployed, suite):
    """A client that offers only psk_ke (tasks/audit/psk_probe.py) gets a full handshake on every port;
    the same client offering psk_dhe_ke resumes on Postfix's ports (the control)."""
    from tasks.audit.psk_probe import probe_psk_modes
    from tasks.audit.wire import starttls

    host = deployed[suite]
    for port in POSTFIX + DOVECOT:
        service = {25: "smtp", 587: "smtp", 143: "imap"}.get(port)
        result = probe_psk_modes(
            host.address,
            port,
            (lambda s, service=service: starttls(s, service)) if service else None,
        )
        print(port, result)
        assert result["ticket"] and result["psk_ke"] == "full handshake", (port, result)
        assert result["psk_dhe_ke"] == ("resumed" if port in POSTFIX else "full handshake"), (
            port,
            result,
        )


def test_resumption_off_resumes_nothing(fresh_host, suite, tmp_path):
    host = fresh_host(suite)
    run_pyinfra(host, "deploy.py", "--data", "mailtls_tls_resumption=off")
    assert host.ssh("postconf -h smtpd_tls_session_cache_timeout").stdout.strip() == "0s"
    for port in POSTFIX + DOVECOT:
        for version in ("tls1_2", "tls1_3"):
            r = resumption(host, port, version, tmp_path)
            assert not r["resumed"], (port, version, r)
            if version == "tls1_2":
                assert r["hints"] == [], (port, r)  # no TLS 1.2 ticket
            # TLS 1.3: OpenSSL with SSL_OP_NO_TICKET still sends stateful tickets (a bare session
            # ID, no key material) that point into a cache the daemon does not keep: never resumed.
