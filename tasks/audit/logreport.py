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

The client side: the sessions our Postfix opens (smtp(8) and lmtp(8), any syslog_name:
postfix/smtp, postfix/relay/smtp, postfix-out/smtp, postfix/lmtp) are counted per service and
per destination, the peer as Postfix names it (`name[ip]:port`). Postfix logs no line when it
opens a plaintext connection, so the ledger follows each client process (tag and PID) through
the log: a delivery line with no TLS line of that process to that relay before it, in that
delivery request, was a plaintext delivery (_Ledger).

    >>> out = [f"2026-11-28T17:09:0{i}+00:00 mx postfix/smtp[41]: {m}" for i, m in enumerate((
    ...     "Trusted TLS connection established to mx.example.net[192.0.2.7]:25: TLSv1.2 with "
    ...     "cipher AES256-GCM-SHA384 (256/256 bits)",
    ...     "4XyZ1: to=<a@example.net>, relay=mx.example.net[192.0.2.7]:25, delay=0.4, "
    ...     "delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
    ...     "4XyZ2: to=<b@example.net>, relay=mx.example.net[192.0.2.7]:25, conn_use=2, delay=0.2, "
    ...     "delays=0.1/0/0/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok)"))]
    >>> r = summarize(out, now=datetime(2026, 11, 28, 18, tzinfo=UTC))
    >>> mx = r.services["postfix/smtp"].destinations["mx.example.net[192.0.2.7]:25"]
    >>> mx.sessions, mx.forward_secret, mx.plaintext
    (1, 0, 1)
    >>> outbound_warnings(r)
    ['outbound mx.example.net[192.0.2.7]:25 (postfix/smtp): 1 of 2 sessions plaintext, 1 RSA key exchange (AES256-GCM-SHA384)']
"""

from __future__ import annotations

import ipaddress
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
_TAG = re.compile(r"^([\w./-]+?)(?:\[(\d+)\])?:\s(.*)$")
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
        "SecP384r1MLKEM1024",
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

# The client side, from Postfix's own format strings (src/tls, src/smtp, src/global).
# mail_task(): the tag is syslog_name + "/" + the process name (the master.cf command), so the
# last component says which program logged: smtp(8) or lmtp(8), whatever syslog_name is.
CLIENT_PROCESSES = ("smtp", "lmtp")
# tls_misc.c tls_log_summary(): "%s TLS connection %s %s %s%s%s: %s with cipher %s (%d/%d bits)"
# (trust, "established" or "reused", "to", namaddrport; no SNI on the client side), then for
# TLS 1.3 " key-exchange %s" with " (%s)" (a curve) or " (%d bits)", then server-signature ...
_CLIENT_TLS = re.compile(
    r"^(?:Anonymous|Untrusted|Trusted|Verified) TLS connection (established|reused) to "
    r"(\S+): (\S+) with cipher (\S+) \(\d+/\d+ bits\)"
    r"(?: key-exchange (\S+)(?: \(([^\s)]+)\))?)?"
)
# tls_client.c: "SSL_connect error to %s: %d", ": %m" or ": lost connection" (namaddrport).
_SSL_CONNECT_ERROR = re.compile(r"^SSL_connect error to (\S+): ")
# A line of one delivery request: "QUEUEID: ...". Short (hex) or long queue IDs.
_QUEUE_LINE = re.compile(r"^([0-9A-Za-z]+): (.*)$")
# log_adhoc.c: "%s: to=<%s>" [", orig_to=<%s>"] ", relay=%s" [", conn_use=%d"] ", delay=...,
# delays=..." [", tls=..."] ", dsn=%s, status=%s (%s)"; the statuses of sent.c, defer.c,
# bounce.c and verify.c (address probes open sessions too).
_DELIVERY = re.compile(
    r"^to=<.*?>, (?:orig_to=<.*?>, )?relay=([^,\s]+), .*?\bdsn=[^,]*, "
    r"status=(sent|deferred|bounced|deliverable|undeliverable) \((.*)\)$"
)
# smtp_proto.c: the reason when the handshake failed (a non-final "QUEUEID: reason" line before
# the plaintext retry, or the reason of the deferral when TLS was required).
CANNOT_START_TLS = "Cannot start TLS: handshake failure"
# smtp_trouble.c smtp_stream_except(): a non-final "QUEUEID: reason" line that ends the session
# (after which, with TLS optional, Postfix retries the same address in plaintext).
_SESSION_LOST = re.compile(
    r"^(?:lost connection with \S+ while|conversation with \S+ timed out while)"
)
# A network peer as smtp_session_alloc() names it, "name[addr]:port". relay=none, relay=local
# and unix sockets (lmtp to "host[private/dovecot-lmtp]", no port) are not network sessions.
_NETWORK_PEER = re.compile(r"^[^\s\[\]]*\[[^\]/]+\]:\d+$")


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
    plaintext: int = 0  # Dovecot logins/disconnects without TLS; outbound: deliveries without TLS
    protocols: Counter = field(default_factory=Counter)
    ciphers: Counter = field(default_factory=Counter)
    groups: Counter = field(default_factory=Counter)

    @property
    def share_forward_secret(self) -> float | None:
        """Forward-secret share of the sessions whose cipher was logged (None: none logged)."""
        known = self.sessions - self.details_unknown
        return self.forward_secret / known if known else None

    @property
    def weak(self) -> int:
        """Sessions readable by whoever records them: plaintext, or TLS without forward secrecy
        (readable once the server's key leaks). Sessions with an unlogged cipher are not counted.

        >>> ServiceStats(sessions=3, forward_secret=1, plaintext=2).weak
        4
        """
        return self.plaintext + self.sessions - self.details_unknown - self.forward_secret

    def add_session(self, protocol: str | None, cipher: str | None, group: str | None) -> None:
        """One completed handshake; cipher None: the log did not say which."""
        self.sessions += 1
        if cipher is None:
            self.details_unknown += 1
            return
        self.protocols[protocol] += 1
        self.ciphers[cipher] += 1
        self.groups[group or "not logged"] += 1
        self.forward_secret += int(classify_suite(cipher).forward_secret)

    def to_dict(self) -> dict:
        return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in vars(self).items()} | {
            "share_forward_secret": self.share_forward_secret
        }


@dataclass
class ClientStats(ServiceStats):
    """A client service (smtp, lmtp): the totals, and the same counts per destination."""

    destinations: dict[str, ServiceStats] = field(default_factory=dict)

    def destination(self, peer: str) -> ServiceStats:
        return self.destinations.setdefault(peer, ServiceStats())

    def to_dict(self) -> dict:
        return super().to_dict() | {
            "destinations": {p: s.to_dict() for p, s in sorted(self.destinations.items())}
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


def _split(line: str, now: datetime) -> tuple[datetime, str, str | None, str] | None:
    """(time, tag, PID or None, message) of a syslog line."""
    parsed = parse_time(line, now)
    if not parsed:
        return None
    m = _TAG.match(parsed[1])
    return (parsed[0], m.group(1), m.group(2), m.group(3)) if m else None


def is_client(tag: str) -> bool:
    """Is `tag` Postfix's SMTP or LMTP client? Only the process name (the last component)
    counts: syslog_name may hold slashes of its own (postfix/relay, postfix/submission).

    >>> [is_client(t) for t in ("postfix/smtp", "postfix-out/smtp", "postfix/relay/smtp",
    ...                         "postfix/lmtp", "postfix/smtpd", "postfix/submission/smtpd")]
    [True, True, True, True, False, False]
    """
    head, _, process = tag.rpartition("/")
    return head.startswith("postfix") and process in CLIENT_PROCESSES


def parse_line(line: str, now: datetime) -> TlsEvent | None:
    """One TlsEvent from a Postfix smtpd or Dovecot login line; None for any other line
    (client lines need their process's earlier lines: summarize reads those)."""
    split = _split(line, now)
    if split is None:
        return None
    when, tag, _, msg = split
    return _server_event(when, tag, msg)


def _server_event(when: datetime, tag: str, msg: str) -> TlsEvent | None:
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


@dataclass(frozen=True)
class _Mark:
    """A TLS connection or a failed handshake of one client process: the peer, and the delivery
    request (queue ID) it belongs to once a line names it. None: not (yet) known."""

    peer: str | None
    queue_id: str | None = None
    counted: bool = True  # inside the window: a later line may still add to its destination

    def fits(self, peer: str | None, queue_id: str) -> bool:
        return (peer is None or self.peer in (None, peer)) and self.queue_id in (None, queue_id)


@dataclass
class _Process:
    tls: _Mark | None = None  # the TLS connection the process holds
    failure: _Mark | None = None  # its last failed handshake, so its second line counts no more


class _Ledger:
    """The client side of summarize(): each smtp/lmtp process (tag and PID) followed through
    its lines, which interleave with every other process's. One pass, one dict lookup a line.

    What one process logs, per delivery request (smtp_connect.c, smtp_proto.c):
    - TLS: "... TLS connection established to PEER: ..." (or "reused", a cached TLS connection
      through tlsproxy(8), not a new handshake), then one delivery line per recipient;
    - plaintext: the delivery lines alone (Postfix logs no line for a plaintext connect, and the
      connection cache hands plaintext connections to other processes, never TLS ones);
    - a failed handshake: "SSL_connect error to PEER: ...", then either "QUEUEID: Cannot start
      TLS: handshake failure" and, TLS being optional, the plaintext retry to the same address,
      or (TLS required) deliveries deferred with that reason; two lines, one failure.
    """

    def __init__(self, report: LogReport) -> None:
        self.report = report
        self.processes: dict[tuple[str, str | None], _Process] = {}

    def _stats(self, tag: str, peer: str | None, counted: bool) -> list[ServiceStats]:
        """The service's and the destination's counters, none outside the window."""
        if not counted:
            return []
        service = self.report.services.get(tag)
        if not isinstance(service, ClientStats):
            service = self.report.services[tag] = ClientStats()
        return [service, service.destination(peer)] if peer else [service]

    def feed(self, when: datetime, tag: str, pid: str | None, msg: str, counted: bool) -> bool:
        """Follow one line of a client process (`counted`: inside the window); False when it
        says nothing the ledger reads."""
        proc = self.processes.setdefault((tag, pid), _Process())
        if m := _CLIENT_TLS.match(msg):
            new, peer, protocol, cipher, kex, curve = m.groups()
            proc.tls, proc.failure = _Mark(peer), None
            if new == "established":  # "reused": the handshake was counted when it was made
                for s in self._stats(tag, peer, counted):
                    s.add_session(protocol, cipher, _group(curve or kex))
            return True
        if m := _SSL_CONNECT_ERROR.match(msg):
            proc.tls, proc.failure = None, _Mark(m.group(1), counted=counted)
            for s in self._stats(tag, m.group(1), counted):
                s.failed_handshakes += 1
            return True
        if not (q := _QUEUE_LINE.match(msg)):
            return False
        queue_id, rest = q.groups()
        if rest.startswith(CANNOT_START_TLS):
            self._failed(proc, tag, queue_id, None, counted)
        elif _SESSION_LOST.match(rest):
            proc.tls = None  # a retry, if any, is a new connection, in plaintext
        elif d := _DELIVERY.match(rest):
            peer, _, reason = d.groups()
            if _NETWORK_PEER.match(peer):
                self._delivery(proc, tag, queue_id, peer, reason, counted)
        else:
            return False
        return True

    def _failed(
        self, proc: _Process, tag: str, queue_id: str, peer: str | None, counted: bool
    ) -> None:
        """A "Cannot start TLS" line: the second line of the failure on record, or a failure of
        its own (the handshake was tlsproxy(8)'s: its SSL_connect error is not this process's)."""
        proc.tls, known = None, proc.failure
        if known is not None and known.fits(peer, queue_id):
            if known.peer is None and peer and known.counted:
                self._stats(tag, peer, True)[1].failed_handshakes += 1
            proc.failure = _Mark(peer or known.peer, queue_id, known.counted)
            return
        proc.failure = _Mark(peer, queue_id, counted)
        # Without the peer (a "QUEUEID: Cannot start TLS" line), the service counts it now and
        # the destination once the plaintext retry's delivery line names the peer.
        for s in self._stats(tag, peer, counted):
            s.failed_handshakes += 1

    def _delivery(
        self, proc: _Process, tag: str, queue_id: str, peer: str, reason: str, counted: bool
    ) -> None:
        if reason.startswith(CANNOT_START_TLS):  # TLS required and failed: deferred, not sent
            self._failed(proc, tag, queue_id, peer, counted)
            return
        known = proc.failure
        if known and known.peer is None and known.queue_id == queue_id:
            if known.counted:
                self._stats(tag, peer, True)[1].failed_handshakes += 1
            proc.failure = _Mark(peer, queue_id, known.counted)
        tls = proc.tls
        if tls is not None and tls.queue_id is None:  # the request its TLS connection serves
            tls = proc.tls = _Mark(tls.peer, queue_id)
        if tls is not None and tls.peer == peer and tls.queue_id == queue_id:
            return
        # One plaintext session per delivery line: one per recipient, and one per message on a
        # cached plaintext connection (conn_use=N) too, as no line tells its connects apart.
        for s in self._stats(tag, peer, counted):
            s.plaintext += 1


def summarize(
    lines: list[str],
    now: datetime,
    window: timedelta = timedelta(hours=24),
    exclude_clients: frozenset[str] = frozenset(),
) -> LogReport:
    """Count the TLS events of `lines` newer than `now - window`, skipping `exclude_clients`.

    Lines in log order: client lines are read against their process's earlier lines (outside
    the window too, as a TLS line just before it still covers the deliveries after)."""
    report = LogReport(since=now - window, until=now)
    ledger = _Ledger(report)
    for line in lines:
        split = _split(line, now)
        if split is None:
            report.unparsed += 1
            continue
        when, tag, pid, msg = split
        inside = report.since <= when <= now + timedelta(minutes=5)
        if is_client(tag):
            if not ledger.feed(when, tag, pid, msg, inside):
                report.unparsed += 1
            continue
        event = _server_event(when, tag, msg)
        if event is None:
            report.unparsed += 1
            continue
        if not inside:
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
            stats.add_session(event.protocol, event.cipher, event.group)
    return report


def _attempts(stats: ServiceStats) -> int:
    """TLS sessions plus plaintext deliveries: what a destination's warning counts against."""
    return stats.sessions + stats.plaintext


def worst_destinations(stats: ClientStats, limit: int = 5) -> list[tuple[str, ServiceStats]]:
    """Up to `limit` destinations, worst first: the weak ones (plaintext or not forward-secret),
    then by the forward-secret share of all their sessions, plaintext included."""

    def key(item: tuple[str, ServiceStats]) -> tuple:
        peer, s = item
        share = s.forward_secret / _attempts(s) if _attempts(s) else 0.0
        return (s.weak == 0, share, -s.failed_handshakes, -_attempts(s), peer)

    return sorted(stats.destinations.items(), key=key)[:limit]


def _loopback(peer: str) -> bool:
    """A peer on this host (a content filter on 127.0.0.1:10024): its traffic never leaves it."""
    try:
        return ipaddress.ip_address(peer[peer.find("[") + 1 : peer.rfind("]")]).is_loopback
    except ValueError:
        return False


def destination_warning(service: str, peer: str, s: ServiceStats) -> str | None:
    """What a weak destination did, as the audit's warning; None when it is not weak.

    >>> destination_warning("postfix/smtp", "mx[192.0.2.7]:25", ServiceStats(
    ...     sessions=2, forward_secret=1, plaintext=3, ciphers=Counter(
    ...         {"ECDHE-RSA-AES128-GCM-SHA256": 1, "AES256-GCM-SHA384": 1})))
    'outbound mx[192.0.2.7]:25 (postfix/smtp): 3 of 5 sessions plaintext, 1 RSA key exchange (AES256-GCM-SHA384)'
    """
    if not s.weak:
        return None
    parts = [(s.plaintext, "plaintext")] if s.plaintext else []
    for cipher, n in sorted(s.ciphers.items()):
        if (problem := classify_suite(cipher).problem) is not None:
            parts.append((n, f"{problem.split(',')[0]} ({cipher})"))
    said = [f"{n} {what}" for n, what in parts]
    said[0] = f"{parts[0][0]} of {_attempts(s)} sessions {parts[0][1]}"
    return f"outbound {peer} ({service}): " + ", ".join(said)


def inbound_warning(service: str, s: ServiceStats) -> str | None:
    """A server service (ours, or another Postfix instance's: postfix-out/smtpd) whose logged
    sessions were not all forward-secret, as the policy has them; None when they were.

    >>> inbound_warning("postfix-out/smtpd", ServiceStats(sessions=100, forward_secret=49))
    'inbound postfix-out/smtpd: 49 of 100 sessions forward-secret (the policy: every one)'
    """
    known = s.sessions - s.details_unknown
    if not known or s.forward_secret >= known:
        return None
    return (
        f"inbound {service}: {s.forward_secret} of {known} sessions forward-secret "
        "(the policy: every one)"
    )


def log_warnings(report: LogReport) -> list[str]:
    """The log report's warnings: server services under the policy's share, then the weak
    destinations of the client services."""
    inbound = [
        w
        for service, stats in sorted(report.services.items())
        if not isinstance(stats, ClientStats) and (w := inbound_warning(service, stats))
    ]
    return inbound + outbound_warnings(report)


def outbound_warnings(report: LogReport) -> list[str]:
    """A warning per weak destination of the client services; loopback peers left out."""
    return [
        w
        for service, stats in sorted(report.services.items())
        if isinstance(stats, ClientStats)
        for peer, s in sorted(stats.destinations.items())
        if not _loopback(peer) and (w := destination_warning(service, peer, s))
    ]
