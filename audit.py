"""Audit: is every TLS session on this host's mail ports forward-secret? Exits non-zero if not.

    pyinfra -y inventory.py audit.py
    pyinfra -y 10.213.0.2 audit.py --ssh-user root --ssh-key KEY

Host data (all optional, checked like the deploy's: tasks/settings.py): the deploy's settings
(mailtls_tls_profile, mailtls_tls_pq_hybrid, mailtls_tls_resumption: the audit judges the host against
what they promise), mailtls_audit_ports (expected TLS ports; closed = failure),
mailtls_audit_log_hours, mailtls_audit_json ("{host}" is replaced; else $MAILTLS_AUDIT_JSON; else
audit-results/HOST.json), mailtls_audit_html (the run's one page for all its hosts; else
$MAILTLS_AUDIT_HTML; else report.html beside the JSON), mailtls_audit_metrics (the run's
node_exporter textfile; else $MAILTLS_AUDIT_METRICS; else mailtls_audit.prom beside the JSON),
mailtls_audit_exclude_self. The old names
(tls_profile, audit_ports, ...) work too.
Scans run from this machine with sslyze; logs are read over SSH.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pyinfra import host, logger, state  # noqa: E402
from pyinfra.api.exceptions import PyinfraError  # noqa: E402
from pyinfra.operations import python  # noqa: E402

from tasks.audit.facts import AuditHost, MailTlsLog  # noqa: E402
from tasks.audit.report import (  # noqa: E402
    DEFAULT_HTML,
    DEFAULT_METRICS,
    HostDone,
    audit_host,
    failure_report,
    host_done,
    json_path,
    judged_against,
    run_file_path,
    start_scan,
)
from tasks.settings import SettingsError, inventory_settings  # noqa: E402

# As deploy.py: every host's settings checked before anything runs on any host, one line naming
# the host and the key. The audit judges each host against the same settings the deploy applied.
try:
    settings = inventory_settings(state.inventory)[host.name]
except SettingsError as exc:
    raise PyinfraError(f"invalid settings: {exc}") from None

policy, expect = judged_against(settings, host.get_fact(AuditHost))
# The scan runs from here on, while the log is read over SSH and the other hosts get ready.
address = host.data.get("ssh_hostname") or host.name
scanning = start_scan(address, policy, settings.audit_ports)
log = host.get_fact(MailTlsLog, hours=settings.audit_log_hours)


def _audit(state, host) -> bool:
    """The audit of this host; False (the host fails, the run exits non-zero) on any finding,
    printed once as a list. The last host of the run to finish writes the run's page and
    metrics."""
    result = None
    try:
        result = audit_host(
            host.name,
            address,
            policy,
            log,
            expected_ports=settings.audit_ports,
            log_hours=settings.audit_log_hours,
            json_file=settings.audit_json,
            exclude_self=settings.audit_exclude_self,
            expect=expect,
            scanning=scanning,
        )
    finally:
        # Also when the audit raised: the other hosts' page must not wait for this one forever.
        beside = json_path(host.name, settings.audit_json)
        done = HostDone(
            result,
            html=run_file_path(beside, settings.audit_html, "MAILTLS_AUDIT_HTML", DEFAULT_HTML),
            metrics=run_file_path(
                beside, settings.audit_metrics, "MAILTLS_AUDIT_METRICS", DEFAULT_METRICS
            ),
        )
        active = [h.name for h in state.inventory.get_active_hosts()]
        for path in host_done(state, host.name, done, active):
            logger.info(f"Audit of the run written: {path}")
    report = failure_report(result)
    if report:
        host.log_styled(report, fg="red", log_func=logger.error)
        return False
    return True


python.call(name=f"TLS audit against profile {policy.name}", function=_audit)
