"""The audit run as a textfile for node_exporter's textfile collector, from the per-host results
audit_host() writes as JSON (pure: dicts in, bytes out; report.py writes the file, renamed into
place, as the collector needs: it reads whatever *.prom is there when it is scraped).

The format is Prometheus' classic text format (prometheus_client.exposition.generate_latest),
not OpenMetrics: node_exporter's textfile collector parses the classic format, and
prometheus_client's own write_to_textfile, "intended for use with the Node exporter textfile
collector", writes exactly that. Every metric here is a gauge, so the same registry also renders
as valid OpenMetrics (openmetrics_text), should a scraper want that.

    >>> r = {"host": "mx1", "ok": True, "audited_at": "2026-12-07T15:00:00+00:00",
    ...      "expected_ports": [25], "log_report": {},
    ...      "ports": [{"port": 25, "state": "open", "failures": [], "warnings": []}]}
    >>> print(textfile([r]).decode().splitlines()[2])
    mailtls_audit_host_ok{host="mx1"} 1.0
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from tasks.audit.html import LEVELS, host_levels

PREFIX = "mailtls_audit_"
# port_level's values: alerting on `> 0` or `== 2` reads better than on a state set. A closed
# port that may be closed is nothing to act on: 0, as ok (port_open says which it is).
LEVEL_VALUE = {"closed": 0, "ok": 0, "warn": 1, "fail": 2}
assert set(LEVEL_VALUE) == set(LEVELS)


def _timestamp(iso: str) -> float:
    """Seconds since the epoch of an ISO 8601 time, as Prometheus keeps time.

    >>> _timestamp("1970-01-02T00:00:00+00:00")
    86400.0
    """
    return datetime.fromisoformat(iso).timestamp()


def registry(results: list[dict]) -> CollectorRegistry:
    """A registry (of its own: never the process's default one) holding the run's gauges."""
    reg = CollectorRegistry(auto_describe=True)

    def gauge(name: str, doc: str, *labels: str) -> Gauge:
        return Gauge(PREFIX + name, doc, labels, registry=reg)

    host_ok = gauge("host_ok", "1 when every port of the host passed the audit", "host")
    run = gauge("run_timestamp_seconds", "When the host was audited (Unix time)", "host")
    port_ok = gauge(
        "port_ok", "1 when the port has no failure (worst over addresses)", "host", "port"
    )
    level = gauge(
        "port_level",
        "Worst level of the port: 0 ok (or closed and allowed to be), 1 warn, 2 fail",
        "host",
        "port",
    )
    port_open = gauge(
        "port_open",
        "1 when the port answered on some address (with TLS or without)",
        "host",
        "port",
    )
    expiry = gauge(
        "certificate_expiry_timestamp_seconds",
        "End of the certificate the port serves (Unix time; the soonest over addresses)",
        "host",
        "port",
    )
    sessions = gauge(
        "log_sessions",
        "TLS sessions in the mail-log window whose cipher was logged, by forward secrecy",
        "host",
        "service",
        "forward_secret",
    )
    plaintext = gauge(
        "log_plaintext_sessions", "Sessions without TLS in the mail-log window", "host", "service"
    )
    failed = gauge(
        "log_failed_handshakes", "Failed TLS handshakes in the mail-log window", "host", "service"
    )
    for r in sorted(results, key=lambda r: r["host"]):
        host = r["host"]
        host_ok.labels(host).set(int(r["ok"]))
        run.labels(host).set(_timestamp(r["audited_at"]))
        for port, lvl in host_levels(r).items():
            port_ok.labels(host, str(port)).set(int(lvl != "fail"))
            level.labels(host, str(port)).set(LEVEL_VALUE[lvl])
            # no-tls answered (and refused STARTTLS); "error" (unresolvable, reset) says nothing
            answered = any(
                p["state"] in ("open", "no-tls") for p in r["ports"] if p["port"] == port
            )
            port_open.labels(host, str(port)).set(int(answered))
        ends: dict[int, float] = {}
        for p in r["ports"]:
            if p.get("certificate"):
                end = _timestamp(p["certificate"]["not_after"])
                ends[p["port"]] = min(end, ends.get(p["port"], end))
        for port, end in sorted(ends.items()):
            expiry.labels(host, str(port)).set(end)
        for service, st in sorted((r.get("log_report") or {}).get("services", {}).items()):
            known = st["sessions"] - st["details_unknown"]
            sessions.labels(host, service, "true").set(st["forward_secret"])
            sessions.labels(host, service, "false").set(known - st["forward_secret"])
            plaintext.labels(host, service).set(st["plaintext"])
            failed.labels(host, service).set(st["failed_handshakes"])
    return reg


def textfile(results: list[dict]) -> bytes:
    """The run's metrics in the classic text format, for a node_exporter *.prom file."""
    return generate_latest(registry(results))


def openmetrics_text(results: list[dict]) -> bytes:
    """The same metrics as OpenMetrics (ends in `# EOF`), for a scraper that asks for it."""
    return generate_openmetrics(registry(results))
