"""What clients really negotiated, from Postfix and Dovecot log lines. Pure: no I/O.

Counts TLS sessions per service (postfix/smtpd = 25, postfix/submission/smtpd = 587,
postfix/submissions/smtpd = 465, dovecot/imap-login = 143+993, dovecot/pop3-login = 110+995)
by protocol, cipher and key-exchange group, with the share that was forward-secret.

    >>> line = ("2026-11-28T17:08:54.17+00:00 mx postfix/smtpd[27]: Anonymous TLS connection established "
    ...         "from c[10.0.0.9]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519")
    >>> from datetime import UTC
    >>> r = summarize([line], now=datetime(2026, 11, 28, 18, tzinfo=UTC))
    >>> r.services["postfix/smtpd"].sessions, r.services["postfix/smtpd"].groups
    (1, Counter({'X25519': 1}))

Where the logs say less: Postfix logs the group for TLS 1.3 only (and on 3.10 in lower case,
normalised here); Dovecot logs protocol and cipher only once `%{ssl_security}` is in
login_log_format_elements, before that just "TLS" (counted under `details_unknown`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tasks import policy
from tasks.audit.verdict import classify_suite

_RFC3339 = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)\s+\S+\s+(.*)$"
)
_TRADITIONAL = re.compile(r"^([A-Z][a-z]{2})\s+(\d{1,2})\s+(\d\d:\d\d:\d\d)\s+\S+\s+(.*)$")
_TAG = re.compile(r"^([\w./-]+?)(?:\[\d+\])?:\s(.*)$")
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}
_ESTABLISHED = re.compile(
    r"TLS connection established from [^\[]*\[([^\]]+)\]:\s+(\S+) with cipher (\S+)"
    r"(?: \((\d+)/\d+ bits\))?(?:.*? key-exchange (\S+))?"
)
_SSL_ACCEPT_ERROR = re.compile(r"SSL_accept error from [^\[]*\[([^\]]+)\]")
_SECURITY = re.compile(r"\b(TLSv[\d.]+|SSLv3) with cipher (\S+)(?: \((\d+)/\d+ bits\))?")
_DOVECOT_LOGIN = re.compile(r"^(\w+-login): (.*)$")
_RIP = re.compile(r"\brip=([^,\s]+)")
_GROUP_NAMES = {
    g.lower(): g
    for g in (
        "X25519",
        "X448",
        "X25519MLKEM768",
        "SecP256r1MLKEM768",
        "secp256r1",
        "secp384r1",
        "secp521r1",
        "prime256v1",
        "ffdhe2048",
        "ffdhe3072",
        "ffdhe4096",
    )
}
# Log tag -> the ports its sessions come from, for the report ("dovecot/imap-login": "143, 993").
PORTS = {
    tag: ", ".join(str(n) for n, p in policy.PORTS.items() if tag in p.log_tags)
    for tag in dict.fromkeys(t for p in policy.PORTS.values() for t in p.log_tags)
}


@dataclass(frozen=True)
class TlsEvent:
    """One log line about a client connection. kind: session | failed | plaintext."""

    time: datetime
    service: str
    client: str
    kind: str
    protocol: str | None = None
    cipher: str | None = None
    group: str | None = None


@dataclass
class ServiceStats:
    sessions: int = 0  # completed TLS handshakes
    forward_secret: int = 0
    details_unknown: int = 0  # TLS sessions logged without protocol/cipher
    failed_handshakes: int = 0
    plaintext: int = 0  # Dovecot logins/disconnects without TLS
    protocols: Counter = field(default_factory=Counter)
    ciphers: Counter = field(default_factory=Counter)
    groups: Counter = field(default_factory=Counter)

    @property
    def share_forward_secret(self) -> float | None:
        """Forward-secret share of the sessions whose cipher was logged (None: none logged)."""
        known = self.sessions - self.details_unknown
        return self.forward_secret / known if known else None

    def to_dict(self) -> dict:
        return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in vars(self).items()} | {
            "share_forward_secret": self.share_forward_secret
        }


@dataclass
class LogReport:
    since: datetime
    until: datetime
    services: dict[str, ServiceStats] = field(default_factory=dict)
    excluded: int = 0  # events from excluded clients (the auditing controller itself)
    unparsed: int = 0

    def to_dict(self) -> dict:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "excluded": self.excluded,
            "unparsed": self.unparsed,
            "services": {k: v.to_dict() for k, v in sorted(self.services.items())},
        }


def parse_time(line: str, now: datetime) -> tuple[datetime, str] | None:
    """Timestamp and the rest of a syslog line; RFC3339 or 'Nov 28 17:00:00' (year from `now`).

    >>> from datetime import UTC
    >>> parse_time("Nov 28 17:00:00 mx postfix/smtpd[1]: x", datetime(2027, 1, 2, tzinfo=UTC))[0]
    datetime.datetime(2026, 11, 28, 17, 0, tzinfo=datetime.timezone.utc)
    """
    m = _RFC3339.match(line)
    if m:
        stamp = datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=now.tzinfo)), m.group(2)
    m = _TRADITIONAL.match(line)
    if not m or m.group(1) not in _MONTHS:
        return None
    hh, mm, ss = map(int, m.group(3).split(":"))
    stamp = datetime(now.year, _MONTHS[m.group(1)], int(m.group(2)), hh, mm, ss, tzinfo=now.tzinfo)
    if stamp - now > timedelta(days=1):  # no year in the line: December's lines read in January
        stamp = stamp.replace(year=now.year - 1)
    return stamp, m.group(4)


def _group(name: str | None) -> str | None:
    return _GROUP_NAMES.get(name.lower(), name) if name else None


def parse_line(line: str, now: datetime) -> TlsEvent | None:
    """One TlsEvent from a Postfix smtpd or Dovecot login line; None for any other line."""
    parsed = parse_time(line, now)
    if not parsed:
        return None
    when, rest = parsed
    m = _TAG.match(rest)
    if not m:
        return None
    tag, msg = m.groups()
    if tag.startswith("postfix") and tag.endswith("/smtpd"):
        if e := _ESTABLISHED.search(msg):
            return TlsEvent(
                when, tag, e.group(1), "session", e.group(2), e.group(3), _group(e.group(5))
            )
        if e := _SSL_ACCEPT_ERROR.search(msg):
            return TlsEvent(when, tag, e.group(1), "failed")
        return None
    if tag == "dovecot":
        d = _DOVECOT_LOGIN.match(msg)
        if not d:
            return None
        tag, msg = d.groups()
    if not tag.endswith("-login") or not (rip := _RIP.search(msg)):
        return None
    service, client = f"dovecot/{tag}", rip.group(1)
    if s := _SECURITY.search(msg):
        return TlsEvent(when, service, client, "session", s.group(1), s.group(2))
    if re.search(r", TLS handshaking\b", msg):
        return TlsEvent(when, service, client, "failed")
    if re.search(r", TLS\b", msg):
        return TlsEvent(when, service, client, "session")
    return TlsEvent(when, service, client, "plaintext")


def summarize(
    lines: list[str],
    now: datetime,
    window: timedelta = timedelta(hours=24),
    exclude_clients: frozenset[str] = frozenset(),
) -> LogReport:
    """Count the TLS events of `lines` newer than `now - window`, skipping `exclude_clients`."""
    report = LogReport(since=now - window, until=now)
    for line in lines:
        event = parse_line(line, now)
        if event is None:
            report.unparsed += 1
            continue
        if not report.since <= event.time <= now + timedelta(minutes=5):
            continue
        if event.client in exclude_clients:
            report.excluded += 1
            continue
        stats = report.services.setdefault(event.service, ServiceStats())
        if event.kind == "failed":
            stats.failed_handshakes += 1
        elif event.kind == "plaintext":
            stats.plaintext += 1
        else:
            stats.sessions += 1
            if event.cipher is None:
                stats.details_unknown += 1
                continue
            stats.protocols[event.protocol] += 1
            stats.ciphers[event.cipher] += 1
            stats.groups[event.group or "not logged"] += 1
            stats.forward_secret += int(classify_suite(event.cipher).forward_secret)
    return report
