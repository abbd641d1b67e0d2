"""The audit's facts: the host's mail log and clock, and what its certificate and OpenSSL promise.

Read over SSH by audit.py; everything else of the audit runs on the controller.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from pyinfra.api import FactBase

from tasks.policy import parse_version
from tasks.scripts import CONTRACT

CERT_STATUS = CONTRACT["CERT_WATCH_STATE"]  # files/mailtls-cert-watch writes DAEMON.status there
# The server side's lines, then those of our own smtp/lmtp clients (any syslog_name: the process
# name is the tag's last component): their TLS summaries and handshake failures, and of their
# "QUEUEID: ..." lines only deliveries (to=<...>) and the three that end a TLS attempt, so that
# every other daemon's status lines (local, virtual, pipe, qmgr) stay on the host. An ERE for
# grep -E, without a single quote (the command quotes it); logreport.py reads what it selects.
_PATTERN = (
    "TLS connection established from|SSL_accept error from|-login: |"
    r"postfix[^ ]*/[sl]mtp\[[0-9]+\]: ([A-Za-z]+ TLS connection (established|reused) to |"
    "SSL_connect error to |"
    "[0-9A-Za-z]+: (to=<|Cannot start TLS: |lost connection with |conversation with ))"
)


class MailTlsLog(FactBase):
    """The host's clock, the controller's address as the host sees it, the certificate watcher's
    status per daemon, and the TLS lines of its mail log: the servers' and those of the
    sessions its Postfix opens as a client (TLS summaries, failures, deliveries by smtp/lmtp).

    Returns {'now': aware datetime, 'ssh_client': str | None, 'source': str,
    'certs': {daemon: status line}, 'lines': [str]}: the newest `max_lines` lines of the last
    `hours` that can matter to logreport. Debian 12/13 keep the mail log in the journal only
    (read: facility mail, as rsyslog's mail.log has it, in `short-iso-precise`); where a syslog
    daemon runs and writes /var/log/mail.log (older installs, kept across upgrades) mail.log.1 +
    mail.log are read instead: they survive reboots that a volatile journal does not.

    Example:
        log = host.get_fact(MailTlsLog, max_lines=200000, hours=24)
    """

    def command(self, max_lines: int = 200000, hours: float = 24) -> str:
        since = int(float(hours) * 3600) + 3600  # an hour of slack: the report applies the window
        return (
            'export LC_ALL=C; now=$(date +%s); echo "@@now $now $(date +%z)"; echo "@@client ${SSH_CLIENT%% *}"; '
            f'for f in {CERT_STATUS}/*.status; do [ -r "$f" ] && '
            'echo "@@cert $(basename "$f" .status) $(head -n 1 "$f")"; done; '
            "if systemctl is-active --quiet rsyslog syslog-ng 2>/dev/null && [ -r /var/log/mail.log ]; then "
            "echo '@@source /var/log/mail.log'; "
            'for f in /var/log/mail.log.1 /var/log/mail.log; do [ -r "$f" ] && '
            f"grep -hE '{_PATTERN}' \"$f\"; done; "
            "else echo '@@source journal'; "
            f'journalctl -q --no-pager -o short-iso-precise SYSLOG_FACILITY=2 --since "@$((now - {since}))" '
            f"| grep -E '{_PATTERN}'; fi | tail -n {int(max_lines)}; true"
        )

    def process(self, output: list[str]) -> dict:
        now, client, source, lines, certs = datetime.now(UTC), None, "none", [], {}
        for line in output:
            if line.startswith("@@now "):
                epoch, offset = line.split()[1:3]
                tz = datetime.strptime(offset, "%z").tzinfo
                now = datetime.fromtimestamp(int(epoch), tz)
            elif line.startswith("@@client"):
                client = line[8:].strip() or None
            elif line.startswith("@@source "):
                source = line[9:].strip()
            elif line.startswith("@@cert "):
                _, daemon, status = (line + " ").split(" ", 2)
                certs[daemon] = status.strip()
            else:
                lines.append(line)
        return {"now": now, "ssh_client": client, "source": source, "certs": certs, "lines": lines}


class AuditHost(FactBase):
    """What the audit needs to know about the host beyond its ports: the name its certificate
    should carry (Postfix's myhostname) and its OpenSSL version (can it offer hybrid PQ?).

    Example:
        facts = host.get_fact(AuditHost)   # {'myhostname': 'mx1.example.org', 'openssl': (3, 5, 1)}
    """

    def command(self) -> str:
        return 'echo "@@name $(postconf -h myhostname 2>/dev/null)"; echo "@@openssl $(openssl version 2>/dev/null)"'

    def process(self, output: list[str]) -> dict:
        facts: dict[str, Any] = {"myhostname": None, "openssl": None}
        for line in output:
            if line.startswith("@@name "):
                facts["myhostname"] = line[7:].strip() or None
            elif line.startswith("@@openssl "):
                with suppress(ValueError):  # no OpenSSL: PQ is not judged
                    facts["openssl"] = parse_version(line[10:])
        return facts
