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

from pyinfra import host  # noqa: E402
from pyinfra.operations import python  # noqa: E402

from tasks.audit import MailTlsLog, audit_host, failures_of, parse_ports  # noqa: E402
from tasks.policy import DEFAULT_PROFILE, PROFILES  # noqa: E402
from tasks.verdict import DEFAULT_EXPECTED_PORTS  # noqa: E402

profile = host.data.get("tls_profile") or DEFAULT_PROFILE
if profile not in PROFILES:
    raise ValueError(f"{host.name}: tls_profile={profile!r}; choose one of {', '.join(PROFILES)}")
expected = parse_ports(host.data.get("audit_ports") or DEFAULT_EXPECTED_PORTS)
log = host.get_fact(MailTlsLog, hours=float(host.data.get("audit_log_hours") or 24))


def _audit() -> None:
    result = audit_host(host.name, host.data.get("ssh_hostname") or host.name, profile, log,
                        expected_ports=expected, log_hours=float(host.data.get("audit_log_hours") or 24),
                        json_file=host.data.get("audit_json"),
                        exclude_self=str(host.data.get("audit_exclude_self", True)).lower() not in ("false", "no", "off", "0"))
    failures = failures_of(result)
    if failures:
        shown = "\n  ".join(failures[:40]) + (f"\n  ... and {len(failures) - 40} more" if len(failures) > 40 else "")
        raise RuntimeError(f"TLS audit FAILED on {host.name} ({len(failures)} failures):\n  {shown}")


python.call(name=f"TLS audit against profile {profile}", function=_audit)
