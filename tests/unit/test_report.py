"""The audit's console report prints host text as it is: a log line, a certificate name or a
status with `[/]` or `[red]` in it is data, never Rich markup (safety review, round 3). And the
outbound part: the worst destinations within 100 columns, weak ones as warnings, never failures."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from auditresults import certificate, open_port
from rich.console import Console

from tasks.audit import report
from tasks.audit.logreport import summarize
from tasks.audit.scan import HostScan
from tasks.audit.verdict import PortScan, PortVerdict

NOW = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)
HOSTILE = ["[/]", "[red]", "[/red]", "[link=http://x]x[/link]", "[bold"]


def rendered(**kw) -> str:
    """print_report's text on a console built as the audit builds it (report._console)."""
    out = io.StringIO()
    console = report._console()
    plain = Console(file=out, width=400, markup=console._markup, color_system=None)
    scan = HostScan(
        address="10.0.0.2",
        ports=[PortScan(port=25, ip="10.0.0.2", service="smtp", state="open")],
        ips=["10.0.0.2"],
    )
    verdicts = [PortVerdict(port=25, failures=kw.get("failures", []), warnings=[])]
    logs = summarize(kw.get("lines", []), NOW)
    report.print_report(
        plain, "mx1", "10.0.0.2", "intermediate", scan, verdicts, logs, kw.get("certs")
    )
    return out.getvalue()


def test_host_text_with_markup_prints_literally():
    for text in HOSTILE:
        line = (
            "2026-11-28T17:10:35.032962+0000 mx1 postfix/smtpd[378]: Anonymous TLS connection "
            f"established from c[10.0.0.9]: TLSv1.3 with cipher {text} (256/256 bits)"
        )
        out = rendered(
            lines=[line],
            failures=[f"certificate subject CN={text}"],
            certs={"dovecot": f"2026-11-28T17:00:00Z rejected /etc/x{text}: why {text}"},
        )
        assert f"CN={text}" in out, out
        assert f"why {text}" in out, out


OUT = "2026-11-28T17:10:{:02d}.5+00:00 mx1 postfix/smtp[{}]: {}"


def delivery(queue_id: str, peer: str) -> str:
    return (
        f"{queue_id}: to=<a@example.net>, relay={peer}, delay=0.4, delays=0.1/0/0.2/0.1, "
        "dsn=2.0.0, status=sent (250 2.0.0 Ok)"
    )


def outbound_lines() -> list[str]:
    """Six destinations: one all plaintext with a long name, one RSA key exchange, four good."""
    long_peer = "a-relay-with-a-name-much-longer-than-the-column.mail.example.com[192.0.2.9]:25"
    lines = [
        OUT.format(0, 10, delivery("4A1", long_peer)),
        OUT.format(1, 10, delivery("4A2", long_peer)),
    ]
    peers = ["rsa.example.com[203.0.113.20]:25"] + [
        f"mx{i}.example.org[198.51.100.{i}]:25" for i in range(4)
    ]
    for i, peer in enumerate(peers):
        cipher = "AES256-GCM-SHA384" if i == 0 else "ECDHE-RSA-AES256-GCM-SHA384"
        tls = f"Trusted TLS connection established to {peer}: TLSv1.2 with cipher {cipher} (256/256 bits)"
        lines += [
            OUT.format(2 + 2 * i, 20 + i, tls),
            OUT.format(3 + 2 * i, 20 + i, delivery(f"4B{i}", peer)),
        ]
    return lines


def test_outbound_destinations_worst_first_within_100_columns():
    out = rendered(lines=outbound_lines())
    part = out[out.index("  postfix/smtp: 2 of 6 destinations weak") :].splitlines()
    rows = part[:7]  # heading, column names, the worst 5 of 6
    assert all(len(line) <= 100 for line in rows), [len(line) for line in rows]
    # TLS sessions, forward-secret share, plaintext, failed: the plaintext one first
    assert rows[2].split()[1:] == ["0", "-", "2", "0"], rows[2]
    assert rows[2].lstrip().startswith("a-relay-with-a-name")
    assert "…[192.0.2.9]:25" in rows[2]
    assert rows[3].lstrip().startswith("rsa.example.com[203.0.113.20]:25")
    assert not any("mx3.example.org" in line for line in rows)  # five shown, a good one left out
    assert (
        "  warn outbound rsa.example.com[203.0.113.20]:25 (postfix/smtp): 1 of 1 sessions RSA key exchange (AES256-GCM-SHA384)"
        in out
    )
    assert " out " in out  # the port column of a client service


def test_weak_destinations_are_warnings_of_the_result_never_failures(monkeypatch, tmp_path):
    from tasks.policy import HostCaps, resolve

    policy = resolve("intermediate", HostCaps(postfix=None, dovecot=None, openssl=(3, 0, 15)))
    scan = HostScan(
        address="10.0.0.2",
        ports=[
            PortScan(port=25, ip="10.0.0.2", service="smtp", state="open", protocols=["TLSv1.2"])
        ],
        ips=["10.0.0.2"],
    )
    monkeypatch.setattr(report, "scan_host", lambda *a, **kw: scan)

    def audit(lines: list[str]) -> dict:
        log = {"now": NOW, "ssh_client": None, "lines": lines, "source": "journal"}
        return report.audit_host(
            "mx1", "10.0.0.2", policy, log, (25,), json_file=str(tmp_path / "r.json")
        )

    clean, weak = audit([]), audit(outbound_lines())
    assert clean["warnings"] == [] and len(weak["warnings"]) == 2
    assert weak["warnings"][0].startswith("outbound a-relay-with-a-name")
    assert (weak["ok"], report.failures_of(weak)) == (clean["ok"], report.failures_of(clean))
    services = weak["log_report"]["services"]
    assert (
        services["postfix/smtp"]["destinations"]["rsa.example.com[203.0.113.20]:25"]["sessions"]
        == 1
    )


def test_ipv6_destination_prints_as_logged():
    """Rich reads ":a:" in a plain string as an emoji code; peers print as Text."""
    peer = "mx.example.net[2001:a:b::1]:25"
    out = rendered(lines=[OUT.format(0, 10, delivery("4C1", peer))])
    assert f"    {peer} " in out, out


def test_the_console_report_of_a_host_fits_100_columns(audit_result, capsys):
    """Five open ports with a long certificate name, inbound and outbound log sessions, findings
    and the watcher's status: every line within 100 columns, whatever the terminal (here: none,
    as in a cron mail), each port's row and the findings still there."""

    long_cert = certificate("CN=" + "a-long-certificate-name." * 3 + "example.org")
    ports = [open_port(n, cert=long_cert, rsa=n == 25) for n in (25, 587, 465, 143, 993)]
    result = audit_result("mx1", ports, certs={"postfix": "2026-11-28T17:00:00Z serving x"})
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= report.CONSOLE_WIDTH, [
        line for line in lines if len(line) > report.CONSOLE_WIDTH
    ]
    for row in ("25 smtp", "587 submission", "465 submissions", "143 imap", "993 imaps"):
        assert any(line.strip().startswith(row) for line in lines), (row, out)
    assert result["ports"][0]["failures"], result["ports"][0]
    assert "  FAIL 25:" in out and "certificate watcher" in out and "JSON:" in out, out
