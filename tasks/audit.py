"""The audit of one host, as audit.py runs it: scan, judge, log report, table, JSON.

    >>> result = audit_host("mx1", "10.213.0.2", "intermediate", log_fact)   # doctest: +SKIP
    >>> result["ok"]                                                         # doctest: +SKIP
    False
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pyinfra.api import FactBase
from rich.console import Console
from rich.table import Table

from tasks.logreport import PORTS, LogReport, summarize
from tasks.policy import PROFILES
from tasks.scan import HostScan, scan_host
from tasks.verdict import DEFAULT_EXPECTED_PORTS, MAIL_PORTS, PortVerdict, judge_host

DEFAULT_JSON = "audit-results/{host}.json"
_PATTERN = "TLS connection established from|SSL_accept error from|-login: "


class MailTlsLog(FactBase):
    """The host's clock, the controller's address as the host sees it, and the TLS lines of its mail log.

    Returns {'now': aware datetime, 'ssh_client': str | None, 'source': str, 'lines': [str]}: the
    newest `max_lines` lines of the last `hours` that can matter to logreport. Debian 12/13 keep
    the mail log in the journal only (read: facility mail, as rsyslog's mail.log has it, in
    `short-iso-precise`); where a syslog daemon runs and writes /var/log/mail.log (older installs,
    kept across upgrades) mail.log.1 + mail.log are read instead: they survive reboots that a
    volatile journal does not.

    Example:
        log = host.get_fact(MailTlsLog, max_lines=200000, hours=24)
    """

    def command(self, max_lines: int = 200000, hours: float = 24) -> str:
        since = int(float(hours) * 3600) + 3600  # an hour of slack: the report applies the window
        return ("export LC_ALL=C; now=$(date +%s); echo \"@@now $now $(date +%z)\"; echo \"@@client ${SSH_CLIENT%% *}\"; "
                "if systemctl is-active --quiet rsyslog syslog-ng 2>/dev/null && [ -r /var/log/mail.log ]; then "
                "echo '@@source /var/log/mail.log'; "
                "for f in /var/log/mail.log.1 /var/log/mail.log; do [ -r \"$f\" ] && "
                f"grep -hE '{_PATTERN}' \"$f\"; done; "
                "else echo '@@source journal'; "
                f"journalctl -q --no-pager -o short-iso-precise SYSLOG_FACILITY=2 --since \"@$((now - {since}))\" "
                f"| grep -E '{_PATTERN}'; fi | tail -n {int(max_lines)}; true")

    def process(self, output: list[str]) -> dict:
        now, client, source, lines = datetime.now(timezone.utc), None, "none", []
        for line in output:
            if line.startswith("@@now "):
                epoch, offset = line.split()[1:3]
                tz = datetime.strptime(offset, "%z").tzinfo
                now = datetime.fromtimestamp(int(epoch), tz)
            elif line.startswith("@@client"):
                client = line[8:].strip() or None
            elif line.startswith("@@source "):
                source = line[9:].strip()
            else:
                lines.append(line)
        return {"now": now, "ssh_client": client, "source": source, "lines": lines}


def parse_ports(value) -> tuple[int, ...]:
    """'25,587' or [25, 587] -> (25, 587); only the mail ports this audit knows."""
    items = value.split(",") if isinstance(value, str) else list(value)
    ports = tuple(int(str(p).strip()) for p in items if str(p).strip())
    unknown = [p for p in ports if p not in MAIL_PORTS]
    if unknown:
        raise ValueError(f"audit_ports: unknown port(s) {unknown}; choose from {sorted(MAIL_PORTS)}")
    return ports


def json_path(host_name: str, configured: str | None) -> Path:
    """Where the JSON goes: host data audit_json, else $MAILTLS_AUDIT_JSON, else audit-results/HOST.json.

    '{host}' in the path is replaced; a path ending in '/' (or an existing directory) gets HOST.json.
    """
    raw = configured or os.environ.get("MAILTLS_AUDIT_JSON") or DEFAULT_JSON
    if raw.endswith("/") or Path(raw).is_dir():
        raw = os.path.join(raw, "{host}.json")
    return Path(raw.replace("{host}", host_name))


def _console() -> Console:
    """Wide output when piped (CI logs), the terminal's width otherwise."""
    console = Console()
    return console if console.is_terminal else Console(width=220)


def _suites_cell(scan) -> str:
    kinds = sorted({" ".join(str(x) for x in (s.kex_type or "static", s.group or "", s.key_bits or "") if x)
                    for s in scan.suites})
    return f"{len(scan.suites)}: " + ", ".join(kinds) if scan.suites else "-"


def render(console: Console, name: str, address: str, profile: str, scan: HostScan,
           verdicts: list[PortVerdict], report: LogReport, source: str = "mail log") -> None:
    ok = all(v.ok for v in verdicts)
    table = Table(title=f"{name} ({address}) profile {profile}: {'PASS' if ok else 'FAIL'}", title_justify="left")
    for col in ("port", "state", "protocols", "suites (kex group bits)", "TLS1.3", "PQ hybrid",
                "client reneg", "curves", "cert", "verdict"):
        table.add_column(col)
    by_port = {v.port: v for v in verdicts}
    for p in scan.ports:
        v = by_port[p.port]
        pq = {True: "yes", False: "no", None: "not checked"}[p.pq_hybrid]
        table.add_row(f"{p.port} {p.service}", p.state, " ".join(p.protocols) or "-", _suites_cell(p),
                      "yes" if p.tls13 else "no", pq, {True: "ACCEPTED", False: "refused", None: "-"}[p.client_renegotiation],
                      " ".join(p.curves or []) or "-", f"{p.cert_key_type or '-'} {p.cert_key_bits or ''}",
                      "[green]ok[/]" if v.ok else f"[red]FAIL ({len(v.failures)})[/]")
    console.print(table)
    for v in verdicts:
        for f in v.failures:
            console.print(f"  [red]FAIL[/] {v.port}: {f}")
        for w in v.warnings:
            console.print(f"  [yellow]warn[/] {v.port}: {w}")
    console.print(f"  sslyze scan time {name}: {scan.seconds:.1f} s for {len(scan.ports)} ports "
                  f"(one Scanner run); PQ probe {scan.pq_seconds:.2f} s")
    logs = Table(title=f"{name}: TLS sessions in the mail log ({source}), {report.since:%Y-%m-%d %H:%M} .. "
                       f"{report.until:%Y-%m-%d %H:%M %z} ({report.excluded} from the auditing controller left out)",
                 title_justify="left")
    for col in ("service", "port", "sessions", "forward-secret", "protocols", "ciphers", "groups", "failed", "plaintext"):
        logs.add_column(col)
    for service, st in sorted(report.services.items()):
        share = st.share_forward_secret
        logs.add_row(service, PORTS.get(service, "?"), str(st.sessions),
                     "-" if share is None else f"{share:.0%}" + (f" (+{st.details_unknown} unlogged)" if st.details_unknown else ""),
                     " ".join(f"{k}:{n}" for k, n in st.protocols.most_common()),
                     " ".join(f"{k}:{n}" for k, n in st.ciphers.most_common(4)),
                     " ".join(f"{k}:{n}" for k, n in st.groups.most_common()),
                     str(st.failed_handshakes), str(st.plaintext))
    console.print(logs)


def audit_host(name: str, address: str, profile: str, log: dict, expected_ports=DEFAULT_EXPECTED_PORTS,
               log_hours: float = 24, json_file: str | None = None, exclude_self: bool = True) -> dict:
    """Scan, judge and summarise one host; print the tables, write the JSON, return its dict."""
    scan = scan_host(address)
    verdicts = judge_host(scan.ports, PROFILES[profile], tuple(expected_ports))
    excluded = frozenset([log["ssh_client"]] if exclude_self and log.get("ssh_client") else [])
    report = summarize(log["lines"], now=log["now"], window=timedelta(hours=log_hours), exclude_clients=excluded)
    render(_console(), name, address, profile, scan, verdicts, report, log.get("source", "mail log"))
    result = {
        "host": name, "address": address, "profile": profile, "ok": all(v.ok for v in verdicts),
        "expected_ports": list(expected_ports), "scan_seconds": round(scan.seconds, 2),
        "pq_probe_seconds": round(scan.pq_seconds, 3), "audited_at": datetime.now(timezone.utc).isoformat(),
        "ports": [p.to_dict() | {"ok": v.ok, "failures": v.failures, "warnings": v.warnings}
                  for p, v in zip(scan.ports, verdicts)],
        "unscanned_failures": [f for v in verdicts[len(scan.ports):] for f in v.failures],
        "log_report": report.to_dict() | {"excluded_clients": sorted(excluded), "source": log.get("source")},
    }
    path = json_path(name, json_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    _console().print(f"  JSON: {path}")
    return result


def failures_of(result: dict) -> list[str]:
    """'HOST port N: message' for every failure in an audit_host() result."""
    out = [f"{result['host']} port {p['port']}: {f}" for p in result["ports"] for f in p["failures"]]
    return out + [f"{result['host']}: {f}" for f in result["unscanned_failures"]]
