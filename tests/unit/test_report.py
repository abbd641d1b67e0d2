"""The audit's console report prints host text as it is: a log line, a certificate name or a
status with `[/]` or `[red]` in it is data, never Rich markup (safety review, round 3)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

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
