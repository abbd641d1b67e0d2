"""Audit: is every TLS session on this host's mail ports forward-secret? Exits non-zero if not.

    pyinfra -y inventory.py audit.py
    pyinfra -y 10.213.0.2 audit.py --ssh-user root --ssh-key KEY

Host data (all optional): tls_profile (intermediate), audit_ports (expected TLS ports,
"25,587,465,143,993"; closed = failure), audit_log_hours (24), audit_json (JSON path;
else $MAILTLS_AUDIT_JSON; else audit-results/HOST.json; "{host}" is replaced),
audit_exclude_self (true: leave the auditing controller's own sessions out of the log report).
Scans run from this machine with sslyze; logs are read over SSH.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pyinfra import host, logger  # noqa: E402
from pyinfra.api.exceptions import PyinfraError  # noqa: E402
from pyinfra.operations import python  # noqa: E402

from tasks.audit import MailTlsLog, audit_host, failure_report, parse_ports  # noqa: E402
from tasks.policy import DEFAULT_PROFILE, PROFILES  # noqa: E402
from tasks.verdict import DEFAULT_EXPECTED_PORTS  # noqa: E402

# Bad host data stops the run before any scan, with one line naming the host and the key.
profile = host.data.get("tls_profile") or DEFAULT_PROFILE
if profile not in PROFILES:
    raise PyinfraError(f"invalid settings: {host.name}: tls_profile={profile!r}; choose one of {', '.join(PROFILES)}")
try:
    expected = parse_ports(host.data.get("audit_ports") or DEFAULT_EXPECTED_PORTS)
    log_hours = float(host.data.get("audit_log_hours") or 24)
except ValueError as exc:
    raise PyinfraError(f"invalid settings: {host.name}: {exc}") from None
log = host.get_fact(MailTlsLog)


def _audit(state, host) -> bool:
    """The audit of this host; False (the host fails, the run exits non-zero) on any finding,
    printed once as a list."""
    result = audit_host(host.name, host.data.get("ssh_hostname") or host.name, profile, log,
                        expected_ports=expected, log_hours=log_hours,
                        json_file=host.data.get("audit_json"),
                        exclude_self=str(host.data.get("audit_exclude_self", True)).lower() not in ("false", "no", "off", "0"))
    report = failure_report(result)
    if report:
        host.log_styled(report, fg="red", log_func=logger.error)
        return False
    return True


python.call(name=f"TLS audit against profile {profile}", function=_audit)
