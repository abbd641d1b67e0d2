"""The audit of one host, as audit.py runs it: scan, judge, log report, table, JSON; and the
run's HTML page and metrics file, written when its last host is done (host_done).

The host facts it reads are in tasks/audit/facts.py.

    >>> policy, expect = judged_against(settings, host.get_fact(AuditHost))   # doctest: +SKIP
    >>> result = audit_host("mx1", "10.213.0.2", policy, log_fact, expect=expect)   # doctest: +SKIP
    >>> result["ok"]                                                         # doctest: +SKIP
    False
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import weakref
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tasks.audit import html, internetnl, metrics
from tasks.audit.logreport import (
    PORTS,
    ClientStats,
    LogReport,
    is_client,
    log_warnings,
    summarize,
    worst_destinations,
)
from tasks.audit.scan import HostScan, scan_host
from tasks.audit.verdict import (
    Expect,
    PortScan,
    PortVerdict,
    judge_host,
    judge_resumption,
    window,
)
from tasks.policy import REQUIRED_PORTS, HostCaps, Policy, offers_pq_hybrid
from tasks.settings import Settings

DEFAULT_JSON = "audit-results/{host}.json"
# The run's files, by default beside the host's JSON (audit-results/ unless set otherwise).
DEFAULT_HTML = "report.html"
DEFAULT_METRICS = "mailtls_audit.prom"  # node_exporter's textfile collector reads *.prom
# The console report fits CONSOLE_WIDTH columns (a terminal, a cron mail): in the outbound
# part the destination's name gets PEER_WIDTH of them; the console lists WARNINGS_SHOWN
# warnings, the JSON and the HTML page all of them.
CONSOLE_WIDTH = 100
PEER_WIDTH = 56
# The console's short names of the NIST curves (sslyze's and OpenSSL's names in the JSON and the
# HTML page).
GROUP_NAMES = {
    "secp256r1": "P-256",
    "prime256v1": "P-256",
    "secp384r1": "P-384",
    "secp521r1": "P-521",
}
WARNINGS_SHOWN = 10


def judged_against(settings: Settings, facts: dict) -> tuple[Policy, Expect]:
    """The policy the deploy applies to this host (its settings, resolved for the OpenSSL it
    runs) and what else the audit knows: an unknown OpenSSL leaves the hybrid group unjudged."""
    openssl = facts.get("openssl")
    caps = HostCaps(postfix=None, dovecot=None, openssl=openssl or (0,))
    policy = settings.policy(caps)
    pq = offers_pq_hybrid(caps, settings.tls_pq_hybrid) if openssl else None
    return policy, Expect(pq_hybrid=pq, cert_name=facts.get("myhostname"))


def json_path(host_name: str, configured: str | None) -> Path:
    """Where the JSON goes: host data audit_json, else $MAILTLS_AUDIT_JSON, else audit-results/HOST.json.

    '{host}' in the path is replaced; a path ending in '/' (or an existing directory) gets HOST.json.
    """
    raw = configured or os.environ.get("MAILTLS_AUDIT_JSON") or DEFAULT_JSON
    if raw.endswith("/") or Path(raw).is_dir():
        raw = os.path.join(raw, "{host}.json")
    return Path(raw.replace("{host}", host_name))


def run_file_path(json_file: Path, configured: str | None, env: str, default: str) -> Path:
    """Where a file of the whole run goes: the setting, else $`env`, else `default` beside the
    host's JSON; a directory (a path ending in '/', or one that exists) gets `default` in it.

    >>> run_file_path(Path("audit-results/mx1.json"), None, "MAILTLS_UNSET", "report.html")
    PosixPath('audit-results/report.html')
    >>> run_file_path(Path("x/mx1.json"), "/srv/www/", "MAILTLS_UNSET", "report.html")
    PosixPath('/srv/www/report.html')
    """
    raw = configured or os.environ.get(env)
    if not raw:
        return json_file.parent / default
    if raw.endswith("/") or Path(raw).is_dir():
        return Path(raw) / default
    return Path(raw)


def write_atomic(path: Path, data: bytes) -> None:
    """`data` as the whole of `path`: written beside it, then renamed over it, so a reader (a
    browser, a web server, node_exporter) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the page from a web server
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@dataclass(frozen=True)
class HostDone:
    """One host's part of the run: its result (None: its audit raised) and where the run's
    files go by its settings."""

    result: dict | None
    html: Path
    metrics: Path


# Per pyinfra run (its State): the hosts done so far. audit.py is executed once per host, so
# what they share lives here; weak, so a finished run's results go with its state.
_runs: weakref.WeakKeyDictionary[Any, dict[str, HostDone]] = weakref.WeakKeyDictionary()


def host_done(run: Any, name: str, done: HostDone, hosts: Iterable[str]) -> list[Path]:
    """Record host `name` as done in `run`; once every host of `hosts` (the run's hosts still
    active) is, write the run's page(s) and metrics file(s) and return their paths, else [].

    Counted per host rather than hooked on pyinfra's operation_end, which --serial and
    --no-wait never call. Hosts whose settings name different files get one file each, with
    the hosts that named it.
    """
    seen = _runs.setdefault(run, {})
    seen[name] = done
    if not set(hosts) <= set(seen):
        return []
    del _runs[run]  # a second call (pyinfra retrying a host) starts a new count, not a rewrite
    written = []
    for kind, render in (("html", _page), ("metrics", metrics.textfile)):
        files: dict[Path, list[dict]] = {}
        for d in seen.values():
            files.setdefault(getattr(d, kind), [])
            if d.result is not None:
                files[getattr(d, kind)].append(d.result)
        for path, of in files.items():
            write_atomic(path, render(of))
            written.append(path)
    return written


def _page(results: list[dict]) -> bytes:
    return html.render(results).encode()


def _console() -> Console:
    """At most CONSOLE_WIDTH columns, a narrower terminal's width, the same when piped (a cron
    mail). No markup: what the tables show comes from hosts and servers (log lines, certificate
    names, status text), and a `[/]` in a log line must print as it is, not end a style or crash
    the audit. Our own colours are Text styles (_styled)."""
    console = Console(markup=False)
    width = min(console.width, CONSOLE_WIDTH) if console.is_terminal else CONSOLE_WIDTH
    return Console(width=width, markup=False)


def _table(title: str) -> Table:
    """A console table: a rule under the heading, no vertical lines (their columns go to the
    content)."""
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )


def _styled(style: str, label: str, rest: str = "") -> Text:
    """`label` in `style`, then `rest` as plain text (never read as markup)."""
    return Text.assemble((label, style), rest)


def _cert_cell(p) -> str:
    c = p.certificate
    if c is None:
        return f"{p.cert_key_type or '-'} {p.cert_key_bits or ''}".strip()
    return f"{c.key_type} {c.key_bits or ''} {c.not_after[:10]}"


OUTCOME_STYLES = {"ok": "green", "warn": "yellow", "fail": "red"}  # internetnl.OUTCOME's


def _level_cell(level: str | None) -> Text:
    return _styled(OUTCOME_STYLES[internetnl.OUTCOME[level]], level) if level else Text("-")


def _kex_cell(scan) -> str:
    """The suites' key exchanges, then the groups: `ECDH: X25519 P-256`, `ECDH DH static: ...`."""
    kinds = " ".join(dict.fromkeys(s.kex_type or "static" for s in scan.suites)) or "-"
    groups = " ".join(GROUP_NAMES.get(g, g) for g in scan.curves or [])
    return f"{kinds}: {groups}" if groups else kinds


def _fit(peer: str, width: int = PEER_WIDTH) -> str:
    """`peer` in `width` columns: a long host name is cut, its [address]:port kept.

    >>> _fit("a-very-long-relay-name.example.com[192.0.2.7]:25", 30)
    'a-very-long-rel…[192.0.2.7]:25'
    """
    if len(peer) <= width:
        return peer
    tail = peer[peer.find("[") :] if "[" in peer else ""
    return peer[: max(width - len(tail) - 1, 0)] + "…" + tail


def destination_lines(service: str, stats: ClientStats) -> list[str]:
    """A client service's worst destinations (worst_destinations) as lines of <= 100 columns:
    TLS sessions, their forward-secret share, plaintext deliveries, failed handshakes."""
    weak = sum(1 for s in stats.destinations.values() if s.weak)
    lines = [
        f"  {service}: {weak} of {len(stats.destinations)} destinations weak",
        f"    {'destination':<{PEER_WIDTH}} {'TLS':>6} {'fs':>5} {'plain':>6} {'failed':>6}",
    ]
    for peer, s in worst_destinations(stats):
        share = s.share_forward_secret
        fs = "-" if share is None else f"{share:.0%}"
        lines.append(
            f"    {_fit(peer):<{PEER_WIDTH}} {s.sessions:>6} {fs:>5} {s.plaintext:>6} "
            f"{s.failed_handshakes:>6}"
        )
    return lines


def print_report(
    console: Console,
    name: str,
    address: str,
    profile: str,
    scan: HostScan,
    verdicts: list[PortVerdict],
    report: LogReport,
    certs: dict | None = None,
    source: str = "mail log",
) -> None:
    certs = certs or {}
    ok = all(v.ok for v in verdicts)
    table = _table(f"{name} ({address}) profile {profile}: {'PASS' if ok else 'FAIL'}")
    multi = len(scan.ips) > 1
    # The console's few columns (CONSOLE_WIDTH): renegotiation, compression, EMS, server order
    # and resumption are in the HTML page and the JSON, and in the findings when they fail.
    # Only the key exchange wraps.
    # internet.nl: the worst of its subtests there (tasks/audit/internetnl.py; each in the JSON).
    for col in ("port", "TLS", "key exchange", "PQ", "certificate", "internet.nl", "verdict"):
        table.add_column(col, no_wrap=col != "key exchange")
    for p, v in zip(scan.ports, verdicts, strict=False):  # more verdicts: ports not scanned
        where = f" {p.ip}" if multi else ""
        state = p.state + (f" ({p.retries} retries)" if p.retries else "")
        table.add_row(
            f"{p.port} {p.service}{where}",
            " ".join(x.removeprefix("TLSv") for x in p.protocols) or state,
            _kex_cell(p),
            {True: "yes", False: "no", None: "-"}[p.pq_hybrid],
            _cert_cell(p),
            _level_cell(internetnl.worst(internetnl.grade(p))),
            _styled("green", "ok") if v.ok else _styled("red", f"FAIL ({len(v.failures)})"),
        )
    console.print(table)
    for v in verdicts:
        where = f" ({v.ip})" if multi and v.ip else ""
        for f in v.failures:
            console.print(_styled("red", "  FAIL", f" {v.port}{where}: {f}"))
        for w in v.warnings:
            console.print(_styled("yellow", "  warn", f" {v.port}{where}: {w}"))
    for daemon, status in sorted(certs.items()):
        rejected = " rejected " in f" {status} "
        console.print(
            _styled(
                "yellow" if rejected else "",
                "  warn" if rejected else "  cert",
                f" {daemon} certificate watcher: {status}",
            )
        )
    console.print(
        f"  scan time {name} ({scan.scanner}): {scan.seconds:.1f} s, {len(scan.ports)} ports, "
        f"{len(scan.ips)} address(es), retries included; probes "
        f"{scan.probe_seconds:.2f} s, PQ {scan.pq_seconds:.2f} s"
    )
    logs = _table(
        f"{name}: TLS sessions in the mail log ({source}), {report.since:%Y-%m-%d %H:%M} .. "
        f"{report.until:%Y-%m-%d %H:%M %z}, {report.excluded} of the auditing controller left out"
    )
    # The ciphers: in the JSON (log_report.services).
    for col in ("service", "port", "sessions", "FS", "TLS", "groups", "failed", "plain"):
        logs.add_column(col, no_wrap=col not in ("groups", "FS"))
    for service, st in sorted(report.services.items()):
        share = st.share_forward_secret
        logs.add_row(
            service,
            PORTS.get(service) or ("out" if is_client(service) else "?"),
            str(st.sessions),
            "-"
            if share is None
            else f"{share:.0%}"
            + (f" (+{st.details_unknown} unlogged)" if st.details_unknown else ""),
            " ".join(f"{k.removeprefix('TLSv')}:{n}" for k, n in st.protocols.most_common()),
            " ".join(f"{GROUP_NAMES.get(k, k)}:{n}" for k, n in st.groups.most_common()),
            str(st.failed_handshakes),
            str(st.plaintext),
        )
    console.print(logs)
    for service, st in sorted(report.services.items()):
        if isinstance(st, ClientStats) and st.destinations:
            for line in destination_lines(service, st):
                console.print(Text(line))  # as Text: an IPv6 peer's ":a:" is no emoji code
    warnings = log_warnings(report)
    for w in warnings[:WARNINGS_SHOWN]:
        console.print(_styled("yellow", "  warn", f" {w}"))
    if len(warnings) > WARNINGS_SHOWN:
        console.print(f"  ... and {len(warnings) - WARNINGS_SHOWN} more log warnings (JSON)")


def _port_result(p: PortScan, v: PortVerdict, policy: Policy) -> dict:
    """One port of the JSON: its scan, its resumption window, its grades, its verdict."""
    seconds = window(p.port, p.resumption, policy.resumption)
    resumption_failed = bool(judge_resumption(p.port, p.resumption, policy.resumption)[0])
    return p.to_dict() | {
        "window_seconds": seconds,
        "internet_nl": internetnl.grade(p),
        "beyond_internet_nl": internetnl.beyond(p, seconds, resumption_failed),
        "ok": v.ok,
        "failures": v.failures,
        "warnings": v.warnings,
    }


def start_scan(address: str, policy: Policy, expected_ports=REQUIRED_PORTS) -> Future[HostScan]:
    """scan_host in the background (a thread; a greenlet under pyinfra's gevent), so that it
    runs while the host's log is read over SSH. audit_host(scanning=...) waits for it."""
    future: Future[HostScan] = Future()

    def run() -> None:
        try:
            future.set_result(
                scan_host(
                    address, server_order=policy.server_preference, expected=tuple(expected_ports)
                )
            )
        except BaseException as exc:  # audit_host re-raises it where the host's audit runs
            future.set_exception(exc)

    threading.Thread(target=run, name=f"scan {address}", daemon=True).start()
    return future


def audit_host(
    name: str,
    address: str,
    policy: Policy,
    log: dict,
    expected_ports=REQUIRED_PORTS,
    log_hours: float = 24,
    json_file: str | None = None,
    exclude_self: bool = True,
    expect: Expect | None = None,
    scanning: Future[HostScan] | None = None,
) -> dict:
    """Scan (or wait for start_scan's `scanning`), judge and summarise one host; print the
    tables, write the JSON, return its dict."""
    expect = expect or Expect()
    scan = (scanning or start_scan(address, policy, expected_ports)).result()
    verdicts = judge_host(scan.ports, policy, tuple(expected_ports), expect)
    excluded = frozenset([log["ssh_client"]] if exclude_self and log.get("ssh_client") else [])
    report = summarize(
        log["lines"], now=log["now"], window=timedelta(hours=log_hours), exclude_clients=excluded
    )
    result = {
        "host": name,
        "address": address,
        "addresses": scan.ips,
        "profile": policy.name,
        "ok": all(v.ok for v in verdicts),
        "expected_ports": list(expected_ports),
        "scanner": scan.scanner,
        "scan_seconds": round(scan.seconds, 2),
        "pq_probe_seconds": round(scan.pq_seconds, 3),
        "probe_seconds": round(scan.probe_seconds, 3),
        "audited_at": datetime.now(UTC).isoformat(),
        "expect": {
            "tls_resumption": policy.resumption.name,
            "pq_hybrid": expect.pq_hybrid,
            "cert_name": expect.cert_name,
            "postfix_window_seconds": policy.resumption.postfix_window,
            "postfix_lifetime_hint_seconds": policy.resumption.postfix_lifetime_hint,
        },
        "ports": [_port_result(p, v, policy) for p, v in zip(scan.ports, verdicts, strict=False)],
        "unscanned_failures": [f for v in verdicts[len(scan.ports) :] for f in v.failures],
        # Findings not of a port and never failures: today the weak outbound destinations.
        "warnings": log_warnings(report),
        "log_report": report.to_dict()
        | {"excluded_clients": sorted(excluded), "source": log.get("source")},
        # mailtls-cert-watch's last word per daemon: "... serving CERT sha256=..." or "... rejected CERT: why"
        "certificates": log.get("certs", {}),
    }
    # The JSON first: whatever reads it must see this run's result even if printing fails.
    path = json_path(name, json_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    console = _console()
    print_report(
        console,
        name,
        address,
        policy.name,
        scan,
        verdicts,
        report,
        log.get("certs"),
        log.get("source", "mail log"),
    )
    console.print(f"  JSON: {path}")
    return result


def failure_report(result: dict, limit: int = 40) -> str | None:
    """The failures of an audit_host() result as one readable list, None when it passed."""
    failures = failures_of(result)
    if not failures:
        return None
    shown = "\n".join(f"  - {f}" for f in failures[:limit])
    more = f"\n  ... and {len(failures) - limit} more" if len(failures) > limit else ""
    return f"TLS audit FAILED on {result['host']} ({len(failures)} failures):\n{shown}{more}"


def failures_of(result: dict) -> list[str]:
    """'HOST port N: message' for every failure in an audit_host() result."""
    multi = len(result.get("addresses") or []) > 1
    out = [
        f"{result['host']} port {p['port']}" + (f" ({p['ip']})" if multi else "") + f": {f}"
        for p in result["ports"]
        for f in p["failures"]
    ]
    return out + [f"{result['host']}: {f}" for f in result["unscanned_failures"]]
