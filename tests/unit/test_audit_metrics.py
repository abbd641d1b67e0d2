"""The run's node_exporter textfile (tasks/audit/metrics.py): parsed back as Prometheus parses
it, the values the results say; the same registry is valid OpenMetrics too."""

from __future__ import annotations

from datetime import datetime

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from tasks.audit import metrics


def samples(text: str, parser=text_string_to_metric_families) -> dict[tuple, float]:
    """{(name, sorted labels...): value} of every sample in `text`."""
    return {
        (s.name, *sorted(s.labels.items())): s.value
        for family in parser(text)
        for s in family.samples
    }


def test_textfile_parses_to_the_results_values(fleet):
    text = metrics.textfile(fleet).decode()
    assert "# EOF" not in text  # the classic format node_exporter reads, not OpenMetrics
    got = samples(text)
    mx1, mx2 = fleet

    def one(name: str, **labels: str) -> float:
        return got[("mailtls_audit_" + name, *sorted(labels.items()))]

    assert one("host_ok", host="mx1") == 1 and one("host_ok", host="mx2") == 0
    assert (
        one("run_timestamp_seconds", host="mx2")
        == datetime.fromisoformat(mx2["audited_at"]).timestamp()
    )
    # mx2: RSA key exchange on 25 (fail), 465 closed though expected (fail), 587 clean
    assert [one("port_ok", host="mx2", port=p) for p in ("25", "465", "587")] == [0, 0, 1]
    assert [one("port_level", host="mx2", port=p) for p in ("25", "465", "587")] == [2, 2, 0]
    assert one("port_level", host="mx1", port="993") == 1  # certificate ends in 10 days: warn
    assert one("port_open", host="mx2", port="465") == 0
    assert one("port_open", host="mx2", port="25") == 1

    end = datetime.fromisoformat(mx1["ports"][0]["certificate"]["not_after"]).timestamp()
    assert one("certificate_expiry_timestamp_seconds", host="mx1", port="25") == end
    assert (
        "mailtls_audit_certificate_expiry_timestamp_seconds",
        ("host", "mx2"),
        ("port", "465"),
    ) not in got
    # the log: smtpd 2 of 3 forward-secret; outbound smtp 1 TLS session, 1 plaintext delivery
    smtpd = {"host": "mx1", "service": "postfix/smtpd"}
    assert one("log_sessions", forward_secret="true", **smtpd) == 2
    assert one("log_sessions", forward_secret="false", **smtpd) == 1
    assert one("log_plaintext_sessions", **smtpd) == 0
    smtp = {"host": "mx1", "service": "postfix/smtp"}
    assert one("log_sessions", forward_secret="true", **smtp) == 1
    assert one("log_plaintext_sessions", **smtp) == 1
    assert one("log_failed_handshakes", **smtp) == 0


def test_every_name_has_the_prefix_and_one_type(fleet):
    families = list(text_string_to_metric_families(metrics.textfile(fleet).decode()))
    assert families and all(f.name.startswith("mailtls_audit_") for f in families)
    assert {f.type for f in families} == {"gauge"}


def test_the_same_registry_is_valid_openmetrics(fleet):
    text = metrics.openmetrics_text(fleet).decode()
    assert text.endswith("# EOF\n")
    assert samples(text, openmetrics_families) == samples(metrics.textfile(fleet).decode())


def test_label_values_are_escaped(fleet):
    """A service name is what the host logged: a quote or newline in it stays in its label."""
    evil = 'x"} 1\nmailtls_audit_host_ok{host="forged'
    mx1 = fleet[0]
    services = mx1["log_report"]["services"]
    r = mx1 | {"log_report": {"services": {evil: services["postfix/smtpd"]}}}
    got = samples(metrics.textfile([r]).decode())
    assert got[("mailtls_audit_log_plaintext_sessions", ("host", "mx1"), ("service", evil))] == 0
    assert not any(("host", "forged") in k for k in got)


def test_a_port_the_scan_could_not_reach_is_not_open(fleet):
    mx1 = fleet[0]
    ports = [p | {"state": "error", "error": "cannot resolve mx1"} for p in mx1["ports"]]
    got = samples(metrics.textfile([mx1 | {"ports": ports}]).decode())
    assert got[("mailtls_audit_port_open", ("host", "mx1"), ("port", "25"))] == 0
