"""audit.py against real Debian 12, 13 and 14 hosts: it must fail
stock, pass deployed, count real sessions."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC

import pytest

from conftest import PQ_SUITES, SUITES, run_pyinfra
from tasks.audit import internetnl
from testhosts.image import TEST_PASSWORD, TEST_USER


def run_audit(host, tmp_path, *args) -> tuple[subprocess.CompletedProcess, dict]:
    res = run_pyinfra(
        host,
        "audit.py",
        *args,
        check=False,
        timeout=300,
        env={"MAILTLS_AUDIT_JSON": str(tmp_path / "{host}.json")},
    )
    path = tmp_path / f"{host.name}.json"
    assert path.exists(), f"no JSON written:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    result = json.loads(path.read_text())
    print(res.stdout[-6000:])
    print(f"scan time {host.name} ({host.suite}): {result['scan_seconds']} s")
    return res, result


def port(result: dict, number: int) -> dict:
    return next(p for p in result["ports"] if p["port"] == number)


@pytest.mark.parametrize("suite", SUITES)
def test_stock_host_fails_and_names_offenders(stock, suite, tmp_path):
    host = stock[suite]
    res, result = run_audit(host, tmp_path)
    assert res.returncode != 0 and not result["ok"]
    assert "TLS audit FAILED" in res.stderr + res.stdout
    p25 = port(result, 25)
    assert {"TLSv1", "TLSv1.1"} <= set(p25["protocols"])
    assert "accepts TLSv1 (floor TLSv1.2)" in p25["failures"]
    assert "accepts TLSv1.1 (floor TLSv1.2)" in p25["failures"]
    text = "\n".join(p25["failures"])
    assert "TLS_RSA_WITH_AES_128_CBC_SHA (RSA key exchange, not forward-secret)" in text
    assert "_anon_" in text and "anonymous, no authentication" in text
    # stock master.cf has no submission services: expected ports that are closed fail
    assert port(result, 587)["state"] == "closed" and port(result, 587)["failures"]
    assert port(result, 993)["state"] == "open" and port(result, 993)["tls13"]


def test_pq_probe_agrees_with_openssl_on_the_host(stock, suite, tmp_path):
    """Our controller-side probe vs the host's own OpenSSL (3.5 on trixie, 3.0 on bookworm) over loopback."""
    from tasks.audit.probes import probe_pq_hybrid

    host = stock[suite]
    for number in (25, 993):
        ours, why = probe_pq_hybrid(host.address, number)
        assert ours is not None, why
        starttls = "-starttls smtp" if number == 25 else ""
        check = host.ssh(
            f"echo | timeout 10 openssl s_client -connect 127.0.0.1:{number} {starttls} "
            f"-groups X25519MLKEM768 -tls1_3 2>&1",
            check=False,
        )
        host_says = "Negotiated TLS1.3 group: X25519MLKEM768" in check.stdout or (
            "Server Temp Key: X25519MLKEM768" in check.stdout
        )
        if suite == "bookworm":
            assert ours is False  # OpenSSL 3.0 cannot do ML-KEM at all
        else:
            assert ours == host_says, (number, why, check.stdout[-1500:])


@pytest.mark.parametrize("suite", SUITES)
def test_deployed_host_passes(deployed, suite, tmp_path):
    host = deployed[suite]
    res, result = run_audit(host, tmp_path)
    failures = [f for p in result["ports"] for f in p["failures"]] + result["unscanned_failures"]
    assert res.returncode == 0 and result["ok"], failures
    for number in (25, 587, 465, 143, 993):
        p = port(result, number)
        assert p["state"] == "open" and p["suites"] and p["tls13"], p
        assert all(s["kex_type"] == "ECDH" for s in p["suites"]), p["suites"]
        assert set(p["protocols"]) <= {"TLSv1.2", "TLSv1.3"}
    # The demo host's own certificate names it (testhosts reissues the image's snakeoil one).
    assert [w for p in result["ports"] for w in p["warnings"]] == [], result["ports"]
    assert f"scan time {host.name} (fold)" in res.stdout


SMTP_SESSIONS = [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3"), ("-tls1_3", "TLSv1.3")]


@pytest.mark.parametrize("source", ["journal", "/var/log/mail.log"])
def test_log_report_counts_real_sessions(fresh_host, suite, tmp_path, source):
    """From the journal (Debian 12/13) and from rsyslog's mail.log (the rsyslog variant)."""
    host = fresh_host(suite, "rsyslog" if source.endswith("mail.log") else None)
    # What the deploy will do for logging, done by hand so this test does not depend on it.
    host.ssh(
        "postconf -e smtpd_tls_loglevel=1 && postfix reload >/dev/null 2>&1; "
        "E=$(doveconf -h login_log_format_elements); "
        'echo "login_log_format_elements = $E %{ssl_security}" > /etc/dovecot/conf.d/99-audit-test.conf; '
        "doveconf -n >/dev/null && systemctl reload dovecot"
    )
    # Real clients on the host itself (loopback): the audit leaves the controller's own sessions out.
    for flag, _ in SMTP_SESSIONS:
        # wait for the EHLO reply before QUIT: Postfix rejects unannounced pipelining
        out = host.ssh(
            f"(printf 'EHLO client.test\\r\\n'; sleep 1; printf 'QUIT\\r\\n') | timeout 20 openssl s_client -quiet "
            f"-connect 127.0.0.1:25 -starttls smtp {flag} 2>&1"
        ).stdout
        assert "221" in out, out
    imap = f"printf 'a LOGIN {TEST_USER} {TEST_PASSWORD}\\r\\nb LOGOUT\\r\\n' | timeout 20 openssl s_client -quiet"
    for target in ("-connect 127.0.0.1:143 -starttls imap", "-connect 127.0.0.1:993 -tls1_2"):
        out = host.ssh(f"{imap} {target} 2>&1").stdout
        assert "a OK" in out, out
    host.ssh("sleep 1")  # rsyslog writes asynchronously
    _, result = run_audit(host, tmp_path)
    assert result["log_report"]["source"] == source
    services = result["log_report"]["services"]
    smtpd, imap_stats = services["postfix/smtpd"], services["dovecot/imap-login"]
    assert smtpd["sessions"] == len(SMTP_SESSIONS)
    assert smtpd["protocols"] == {"TLSv1.2": 1, "TLSv1.3": 2}
    assert smtpd["share_forward_secret"] == 1.0
    assert imap_stats["sessions"] == 2 and imap_stats["details_unknown"] == 0
    assert imap_stats["protocols"] == {"TLSv1.3": 1, "TLSv1.2": 1}
    assert result["log_report"]["excluded_clients"]  # the controller, seen via SSH_CLIENT


@pytest.mark.parametrize("suite", SUITES)
def test_deployed_host_reports_every_check(deployed, suite, tmp_path):
    """The JSON's per-port checks on a host deployed with the defaults (tls_resumption=bounded)."""
    host = deployed[suite]
    res, result = run_audit(host, tmp_path)
    assert res.returncode == 0 and result["ok"], failures_in(result)
    assert result["addresses"] == [host.address]
    pq = suite != "bookworm"  # OpenSSL >= 3.5
    assert result["expect"]["tls_resumption"] == "bounded" and result["expect"]["pq_hybrid"] is pq
    for number in (25, 587, 465, 143, 993):
        p = port(result, number)
        assert (
            p["incomplete"] == []
            and p["compression"] is False
            and p["extended_master_secret"] is True
        ), p
        assert p["secure_renegotiation"] is True and p["pq_hybrid"] is pq
        cert = p["certificate"]
        assert (
            cert["key_type"] == "RSA"
            and cert["key_bits"] >= 2048
            and cert["signature_hash"] == "sha256"
        )
        # internet.nl: nothing the profile sets below sufficient; the snakeoil key is RSA 2048
        # (phase-out there) on Debian 12/13 and RSA 3072 (good) on 14.
        inl = p["internet_nl"]
        key = "good" if cert["key_bits"] >= 3072 else "phase-out"
        assert inl.pop("cert_public_key") == key, (key, p["internet_nl"])
        assert inl["version"] == "sufficient" and inl["key_exchange"] == "good", inl
        # Debian's OpenSSL signs no TLS 1.2 key exchange with SHA-1 (STARTTLS or not)
        assert p["sha1_key_exchange"] is False and inl["key_exchange_hash"] == "good", p
        assert internetnl.worst(inl) == "sufficient", inl
        r = p["resumption"]
        assert r["tls12_session_id"] is False
        if number in (25, 587, 465):
            assert r["tls12_ticket"] and r["tls12_lifetime_hint"] == 4800 and r["tls13"], r
            assert p["window_seconds"] == 3600
        else:
            assert not r["tls12_ticket"] and not r["tls12_ticket_issued"] and r["tls13"] is False, r
            assert p["window_seconds"] == 0


def failures_in(result: dict) -> list[str]:
    return [f for p in result["ports"] for f in p["failures"]] + result["unscanned_failures"]


def expired_pair(name: str) -> tuple[str, str]:
    """(certificate PEM, key PEM) for `name`, expired yesterday."""
    from datetime import datetime, timedelta

    from cryptography.hazmat.primitives.asymmetric import rsa
    from selfsigned import self_signed

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    cert, key_pem = self_signed(key, name, now - timedelta(days=90), now - timedelta(days=1))
    return cert.decode(), key_pem.decode()


def test_audit_fails_an_expired_certificate(fresh_host, tmp_path):
    host = fresh_host("bookworm")
    name = host.ssh("hostname -f").stdout.strip()
    cert, key = expired_pair(name)
    host.ssh("mkdir -p /etc/mailtls-test && cat > /etc/mailtls-test/expired.pem", input=cert)
    host.ssh("umask 077 && cat > /etc/mailtls-test/expired.key", input=key)
    data = (
        "--data",
        "postfix_cert_file=/etc/mailtls-test/expired.pem",
        "--data",
        "postfix_key_file=/etc/mailtls-test/expired.key",
    )
    # The certificate watcher would (rightly) refuse to put an expired pair in service: without
    # it main.cf names the files directly, as an admin's own config would.
    run_pyinfra(host, "deploy.py", *data, "--data", "mailtls_cert_watch=false")
    res, result = run_audit(host, tmp_path, *data)
    assert res.returncode != 0 and not result["ok"]
    for number in (25, 587, 465):
        p = port(result, number)
        assert any(f.startswith("certificate expired on") for f in p["failures"]), p["failures"]
        assert name in p["certificate"]["names"]
        assert not any("do not match" in w for w in p["warnings"])  # the name is the host's own
    assert not any("expired" in f for f in port(result, 993)["failures"])  # Dovecot keeps snakeoil
    assert "certificate expired on" in res.stderr + res.stdout


@pytest.mark.parametrize("pq_suite", PQ_SUITES)
def test_audit_fails_a_host_missing_the_hybrid_group_where_promised(fresh_host, tmp_path, pq_suite):
    host = fresh_host(pq_suite)  # OpenSSL >= 3.5: X25519MLKEM768 is promised with tls_pq_hybrid on
    run_pyinfra(host)
    # An admin removes the hybrid group by hand from both daemons.
    host.ssh(
        "postconf -e 'tls_eecdh_auto_curves = X25519 prime256v1 secp384r1' && postfix reload; "
        "sed -i 's|^ssl_curve_list = X25519MLKEM768/|ssl_curve_list = |' /etc/dovecot/conf.d/99-mailtls.conf && "
        "doveconf -n >/dev/null && systemctl reload dovecot && sleep 1"
    )
    res, result = run_audit(host, tmp_path)
    assert res.returncode != 0 and not result["ok"]
    for number in (25, 587, 465, 143, 993):
        p = port(result, number)
        assert p["pq_hybrid"] is False
        assert any(f.startswith("X25519MLKEM768 not offered") for f in p["failures"]), p["failures"]


def test_audit_fails_legacy_dhe_without_server_order(fresh_host, tmp_path):
    host = fresh_host("bookworm")
    legacy = ("--data", "tls_profile=legacy-dhe")
    run_pyinfra(host, "deploy.py", *legacy)
    host.ssh(
        "postconf -e tls_preempt_cipherlist=no && postfix reload"
    )  # Postfix only; Dovecot keeps its order
    res, result = run_audit(host, tmp_path, *legacy)
    assert res.returncode != 0 and not result["ok"]
    for number in (25, 587, 465, 143, 993):
        # internet.nl: DHE suites and their RFC 7919 group (dh_source's ffdhe3072) phase-out
        p = port(result, number)
        dh = {s["dh_group"] for s in p["suites"] if s["kex_type"] == "DH"}
        assert dh == {"ffdhe3072"}, p["suites"]
        levels = p["internet_nl"]
        assert levels["ciphers"] == levels["key_exchange"] == "phase-out", levels
        assert levels["cipher_order"] == ("insufficient" if number in (25, 587, 465) else "good"), (
            levels
        )
    for number in (25, 587, 465):
        p = port(result, number)
        assert p["server_order"] is False and "got DHE-" in p["server_order_note"], p
        assert any(f.startswith("server cipher order not enforced") for f in p["failures"]), p[
            "failures"
        ]
    for number in (143, 993):
        p = port(result, number)
        assert p["server_order"] is True and "got ECDHE-" in p["server_order_note"] and p["ok"], p


def _answers(scan) -> list[tuple]:
    """What the verdicts read of a scan, port by port: the two scanners must agree on all of it
    (the resumption probes and the certificate come from the same code in both)."""
    return [
        (
            p.port,
            p.ip,
            p.state,
            p.protocols,
            [(s.protocol, s.name, s.kex_type, s.group, s.key_bits, s.dh_group) for s in p.suites],
            p.curves,
            p.secure_renegotiation,
            p.client_renegotiation,
            p.compression,
            p.extended_master_secret,
            p.cert_key_type,
            p.cert_key_bits,
            p.resumption.tls12_session_id,
            p.resumption.tls12_ticket,
            p.sha1_key_exchange,
            p.starttls_injection,
            p.pq_hybrid,
        )
        for p in scan.ports
    ]


def _settle(address: str, folded, reference) -> list[str]:
    """Where the scanners differ on a port's suites or groups, ask the server each of those
    alone, three times (sslyze counts a connection the server drops under load, Dovecot over
    its login limits, as a refusal): accepted in any of them is accepted. The fold must agree
    with every answer; the reference port then takes the settled answers (sslyze's run lost
    them), so the comparison below holds the rest. Returns what was settled."""
    from nassl.ephemeral_key_info import OpenSslEcNidEnum
    from sslyze.plugins.openssl_cipher_suites._test_cipher_suite import (
        CipherSuiteAcceptedByServer,
        connect_with_cipher_suite,
    )
    from sslyze.plugins.openssl_cipher_suites.cipher_suites import CipherSuitesRepository

    from tasks.audit import fold, scan

    info = fold.info_for(address, folded.ip, folded.port, scan._configuration(address, folded.port))
    versions = {
        proto: v for c, v in scan.SUITE_VERSIONS.items() for proto in [scan.SUITE_COMMANDS[c]]
    }

    def suite_alone(protocol: str, name: str) -> bool:
        version = versions[protocol]
        (cs,) = [c for c in CipherSuitesRepository.get_all_cipher_suites(version) if c.name == name]
        for _ in range(3):
            try:
                if isinstance(
                    connect_with_cipher_suite(info, version, cs), CipherSuiteAcceptedByServer
                ):
                    return True
            except Exception:  # a connection error: ask again
                pass
        return False

    def group_alone(name: str) -> bool:
        (nid,) = [n for n in OpenSslEcNidEnum if fold._curve(n).name == name]
        highest = max((versions[p] for p in folded.protocols), key=lambda v: v.value)
        for _ in range(3):
            try:
                if fold._pick_group(info, highest, [nid]) == nid:
                    return True
            except Exception:
                pass
        return False

    done = []
    mine = {(s.protocol, s.name): s for s in folded.suites}
    theirs = {(s.protocol, s.name): s for s in reference.suites}
    for key in sorted(mine.keys() ^ theirs.keys()):
        alone = suite_alone(*key)
        assert alone == (key in mine), f"port {folded.port}: {key} alone accepted={alone}"
        done.append(f"{folded.port} {key} accepted={alone}")
    for name in sorted(set(folded.curves or []) ^ set(reference.curves or [])):
        alone = group_alone(name)
        assert alone == (name in (folded.curves or [])), f"port {folded.port}: {name} {alone}"
        done.append(f"{folded.port} {name} accepted={alone}")
    if done:
        reference.suites, reference.curves = folded.suites, folded.curves
    return done


def _only(x, y):
    """What of `x` is not in `y`: the items of a list, else `x` itself."""
    return [v for v in x if v not in y] if isinstance(x, list) and isinstance(y, list) else x


# Each daemon with STARTTLS and with TLS from the first byte: sslyze's reference scan, one
# handshake per suite, is what this test's time goes to (the other listeners are the same
# daemons' settings).
COMPARED_PORTS = (25, 465, 143, 995)


@pytest.mark.parametrize("kind", ["stock", "deployed", "legacy-dhe"])
def test_the_fold_scanner_answers_as_sslyze_does(stock, deployed, fresh_host, suite, kind):
    """Folding (the audit's scanner) and sslyze's one handshake per suite, on the same host one
    after the other: the same suites with the same keys, groups and every other answer, and
    verdicts, on a stock host (TLS 1.0 up, RSA key exchange, anonymous suites), a deployed one
    and a legacy-dhe one (DHE with its RFC 7919 group)."""
    from tasks.audit.scan import scan_host
    from tasks.audit.verdict import judge_host
    from tasks.policy import HostCaps, resolve

    if kind == "legacy-dhe":
        host = fresh_host(suite)
        run_pyinfra(host, "deploy.py", "--data", "tls_profile=legacy-dhe")
    else:
        host = (stock if kind == "stock" else deployed)[suite]
    folded = scan_host(host.address, COMPARED_PORTS, scanner="fold")
    reference = scan_host(host.address, COMPARED_PORTS, scanner="sslyze")
    print(f"{kind} {suite}: fold {folded.seconds:.1f} s, sslyze {reference.seconds:.1f} s")
    assert [p.incomplete for p in folded.ports] == [[] for _ in folded.ports]
    assert [p.incomplete for p in reference.ports] == [[] for _ in reference.ports]
    pairs = zip(folded.ports, reference.ports, strict=True)
    settled = [_settle(host.address, f, r) for f, r in pairs]
    print(f"settled one by one: {[x for x in settled if x]}")
    differ = [
        f"port {a[0]} field {i}: only folded {_only(x, y)}, only sslyze {_only(y, x)}"
        for a, b in zip(_answers(folded), _answers(reference), strict=True)
        for i, (x, y) in enumerate(zip(a, b, strict=True))
        if x != y
    ]
    assert not differ, "\n".join(differ)
    # One policy for both: what matters is that both scans are judged alike.
    policy = resolve("intermediate", HostCaps(postfix=None, dovecot=None, openssl=(3, 0)))
    assert [(v.failures, v.warnings) for v in judge_host(folded.ports, policy)] == [
        (v.failures, v.warnings) for v in judge_host(reference.ports, policy)
    ]
    # Something was enumerated: the comparison is not of two empty scans (stock Postfix has
    # no 465).
    open_ports = [p for p in folded.ports if p.state == "open"]
    assert len(open_ports) >= 3 and all(p.suites and p.curves for p in open_ports)
