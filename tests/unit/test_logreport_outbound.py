"""The outbound ledger: the sessions our Postfix opens as a client (smtp, lmtp), per service and
destination, from lines in the formats of Postfix's own sources (tls_misc.c tls_log_summary,
tls_client.c, smtp_proto.c, smtp_trouble.c, log_adhoc.c) as 3.7 and 3.10 write them."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from tasks.audit.facts import _PATTERN
from tasks.audit.logreport import (
    ClientStats,
    ServiceStats,
    log_warnings,
    outbound_warnings,
    summarize,
)

NOW = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)
MX = "mx.example.net[192.0.2.7]:25"
MX2 = "mx2.example.org[198.51.100.9]:25"
OLD = "old.example.com[203.0.113.20]:25"
BROKEN = "broken.example.com[203.0.113.30]:25"


def at(second: int, tag: str, pid: int, msg: str) -> str:
    """A journal line (short-iso-precise) of `tag`[`pid`], `second`s after 17:20."""
    stamp = datetime(2026, 11, 28, 17, 20, tzinfo=UTC) + timedelta(seconds=second)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.032962+00:00 mx1 {tag}[{pid}]: {msg}"


def tls(peer: str, rest: str, trust: str = "Trusted") -> str:
    return f"{trust} TLS connection established to {peer}: {rest}"


def sent(queue_id: str, rcpt: str, peer: str, extra: str = "", status: str = "sent") -> str:
    reason = (
        "250 2.0.0 Ok: queued as 7F3A2"
        if status == "sent"
        else "Cannot start TLS: handshake failure"
    )
    dsn = "2.0.0" if status == "sent" else "4.7.5"
    return (
        f"{queue_id}: to=<{rcpt}>, relay={peer}, {extra}delay=0.71, "
        f"delays=0.05/0.01/0.42/0.23, dsn={dsn}, status={status} ({reason})"
    )


TLS13_37 = (
    "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 "
    "server-signature RSA-PSS (2048 bits) server-digest SHA256"
)
TLS13_310 = (
    "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange x25519mlkem768 "
    "server-signature ECDSA (prime256v1) server-digest SHA256"
)
TLS12_ECDHE = "TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)"
TLS12_RSA = "TLSv1.2 with cipher AES256-GCM-SHA384 (256/256 bits)"


def smtp(report) -> ClientStats:
    stats = report.services["postfix/smtp"]
    assert isinstance(stats, ClientStats)
    return stats


def counts(s: ServiceStats) -> tuple[int, int, int, int]:
    return (s.sessions, s.forward_secret, s.plaintext, s.failed_handshakes)


def test_tls_sessions_per_destination_with_group_names_of_both_releases():
    r = summarize(
        [
            at(0, "postfix/smtp", 100, tls(MX, TLS13_37)),
            at(1, "postfix/smtp", 100, sent("4XyZ1", "a@example.net", MX)),
            at(2, "postfix/smtp", 101, tls(MX2, TLS13_310, "Verified")),
            at(3, "postfix/smtp", 101, sent("4XyZ2", "b@example.org", MX2)),
            at(4, "postfix/smtp", 102, tls(OLD, TLS12_ECDHE, "Untrusted")),
            at(5, "postfix/smtp", 102, sent("4XyZ3", "c@example.com", OLD)),
            at(6, "postfix/smtp", 103, tls(OLD, TLS12_RSA, "Anonymous")),
            at(7, "postfix/smtp", 103, sent("4XyZ4", "d@example.com", OLD)),
        ],
        NOW,
    )
    out = smtp(r)
    assert counts(out) == (4, 3, 0, 0)
    assert out.groups == {"X25519": 1, "X25519MLKEM768": 1, "not logged": 2}
    assert out.protocols == {"TLSv1.3": 2, "TLSv1.2": 2}
    assert counts(out.destinations[MX]) == (1, 1, 0, 0)
    assert out.destinations[MX2].groups == {"X25519MLKEM768": 1}  # 3.10's lower case
    old = out.destinations[OLD]
    assert counts(old) == (2, 1, 0, 0) and old.share_forward_secret == 0.5
    assert old.ciphers == {"ECDHE-RSA-AES256-GCM-SHA384": 1, "AES256-GCM-SHA384": 1}
    assert r.unparsed == 0
    assert outbound_warnings(r) == [
        f"outbound {OLD} (postfix/smtp): 1 of 2 sessions RSA key exchange (AES256-GCM-SHA384)"
    ]


def test_plaintext_deliveries_and_a_reused_plaintext_connection():
    r = summarize(
        [
            at(0, "postfix/smtp", 200, sent("4Ab1", "a@example.net", MX)),
            # the cached connection, the next message: conn_use=2, still no TLS line
            at(1, "postfix/smtp", 200, sent("4Ab2", "b@example.net", MX, "conn_use=2, ")),
        ],
        NOW,
    )
    assert counts(smtp(r).destinations[MX]) == (0, 0, 2, 0)
    assert smtp(r).share_forward_secret is None
    assert outbound_warnings(r) == [f"outbound {MX} (postfix/smtp): 2 of 2 sessions plaintext"]


def test_recipients_of_one_tls_delivery_are_not_plaintext_but_the_next_message_is():
    r = summarize(
        [
            at(0, "postfix/smtp", 300, tls(MX, TLS13_37)),
            at(1, "postfix/smtp", 300, sent("4Cd1", "a@example.net", MX)),
            at(1, "postfix/smtp", 300, sent("4Cd1", "b@example.net", MX)),
            # the same process, the next request: a plaintext connection from the cache
            at(9, "postfix/smtp", 300, sent("4Cd2", "c@example.net", MX, "conn_use=2, ")),
        ],
        NOW,
    )
    assert counts(smtp(r).destinations[MX]) == (1, 1, 1, 0)


def test_failed_handshake_then_plaintext_fallback_counts_one_failure():
    """TLS optional ("may"): SSL_connect error, "QUEUEID: Cannot start TLS: handshake failure"
    (smtp_proto.c, a non-final server), and the same address again in plaintext."""
    lines = [
        at(0, "postfix/smtp", 400, f"SSL_connect error to {BROKEN}: -1"),
        at(
            0,
            "postfix/smtp",
            400,
            "warning: TLS library problem: error:0A000410:SSL routines::"
            "sslv3 alert handshake failure:../ssl/record/rec_layer_s3.c:1605:SSL alert number 40:",
        ),
        at(0, "postfix/smtp", 400, "4Ef1: Cannot start TLS: handshake failure"),
        at(1, "postfix/smtp", 400, sent("4Ef1", "a@broken.example.com", BROKEN)),
    ]
    r = summarize(lines, NOW)
    assert counts(smtp(r)) == (0, 0, 1, 1)
    assert counts(smtp(r).destinations[BROKEN]) == (0, 0, 1, 1)
    assert r.unparsed == 1  # the TLS library warning, which the fact does not fetch


def test_tls_required_failure_defers_every_recipient_with_one_failure():
    lines = [
        at(0, "postfix/smtp", 410, f"SSL_connect error to {BROKEN}: lost connection"),
        at(1, "postfix/smtp", 410, sent("4Gh1", "a@broken.example.com", BROKEN, status="deferred")),
        at(1, "postfix/smtp", 410, sent("4Gh1", "b@broken.example.com", BROKEN, status="deferred")),
    ]
    r = summarize(lines, NOW)
    assert counts(smtp(r).destinations[BROKEN]) == (0, 0, 0, 1)
    assert outbound_warnings(r) == []  # a failure is not weak: nothing went out in the clear


def test_failure_logged_by_tlsproxy_counts_at_the_destination_of_its_retry():
    """smtp_tls_connection_reuse: the handshake is tlsproxy(8)'s, the smtp process logs only
    "Cannot start TLS"; the plaintext retry's delivery line names the destination."""
    lines = [
        at(0, "postfix/smtp", 420, "4Ij1: Cannot start TLS: handshake failure"),
        at(1, "postfix/smtp", 420, sent("4Ij1", "a@broken.example.com", BROKEN)),
    ]
    assert counts(smtp(summarize(lines, NOW)).destinations[BROKEN]) == (0, 0, 1, 1)


def test_tls_session_lost_then_plaintext_retry_is_plaintext():
    """smtp_trouble.c: with TLS optional, a TLS session lost mid-way is retried in plaintext
    (RETRY_AS_PLAINTEXT), the same request to the same address."""
    lines = [
        at(0, "postfix/smtp", 430, tls(MX, TLS12_ECDHE)),
        at(
            5,
            "postfix/smtp",
            430,
            "4Kl1: lost connection with mx.example.net[192.0.2.7] while sending message body",
        ),
        at(6, "postfix/smtp", 430, sent("4Kl1", "a@example.net", MX)),
    ]
    assert counts(smtp(summarize(lines, NOW)).destinations[MX]) == (1, 1, 1, 0)


def test_interleaved_processes_are_kept_apart():
    lines = [
        at(0, "postfix/smtp", 500, tls(MX, TLS13_37)),
        at(1, "postfix/smtp", 501, sent("4Mn2", "b@example.net", MX)),  # plaintext, other PID
        at(
            1,
            "postfix/smtpd",
            500,
            "Anonymous TLS connection established from c[10.0.0.9]: " + TLS12_ECDHE,
        ),  # a server with the same PID
        at(2, "postfix/smtp", 500, sent("4Mn1", "a@example.net", MX)),
        at(3, "postfix/smtp", 501, tls(MX, TLS12_RSA)),
        at(4, "postfix/smtp", 501, sent("4Mn3", "c@example.net", MX)),
    ]
    r = summarize(lines, NOW)
    assert counts(smtp(r).destinations[MX]) == (2, 1, 1, 0)
    assert r.services["postfix/smtpd"].sessions == 1
    assert "destinations" not in r.services["postfix/smtpd"].to_dict()


def test_lmtp_over_a_unix_socket_and_local_relays_are_skipped():
    lines = [
        at(
            0,
            "postfix/lmtp",
            600,
            "4Op1: to=<u@mx1.example.org>, relay=mx1.example.org"
            "[private/dovecot-lmtp], delay=0.05, delays=0.02/0.01/0.01/0.01, dsn=2.0.0, "
            "status=sent (250 2.0.0 <u@mx1.example.org> kOFbMg1GSWlqCwAAyqaMPA Saved)",
        ),
        at(
            1,
            "postfix/smtp",
            601,
            "4Op2: to=<x@nowhere.example>, relay=none, delay=30, "
            "delays=0.01/0/30/0, dsn=4.4.1, status=deferred (connect to "
            "nowhere.example[192.0.2.99]:25: Connection timed out)",
        ),
        at(2, "postfix/lmtp", 602, sent("4Op3", "v@example.org", "lmtp.example.org[10.1.2.3]:24")),
    ]
    r = summarize(lines, NOW)
    assert "postfix/smtp" not in r.services
    lmtp = r.services["postfix/lmtp"]
    assert isinstance(lmtp, ClientStats)
    assert list(lmtp.destinations) == ["lmtp.example.org[10.1.2.3]:24"]
    assert counts(lmtp) == (0, 0, 1, 0) and r.unparsed == 0


def test_multi_instance_and_relay_tags_are_services_of_their_own():
    lines = [
        at(0, "postfix-out/smtp", 700, tls(MX, TLS13_37)),
        at(1, "postfix-out/smtp", 700, sent("4Qr1", "a@example.net", MX, "orig_to=<a@x>, ")),
        at(2, "postfix/relay/smtp", 701, sent("4Qr2", "b@example.net", MX)),
    ]
    r = summarize(lines, NOW)
    assert set(r.services) == {"postfix-out/smtp", "postfix/relay/smtp"}
    assert counts(r.services["postfix-out/smtp"]) == (1, 1, 0, 0)
    assert counts(r.services["postfix/relay/smtp"]) == (0, 0, 1, 0)
    assert outbound_warnings(r) == [
        f"outbound {MX} (postfix/relay/smtp): 1 of 1 sessions plaintext"
    ]


def test_traditional_syslog_lines_and_the_brief_warning():
    lines = [
        f"Nov 28 17:{minute} mx1 postfix/smtp[{pid}]: {msg}"
        for minute, pid, msg in [
            ("30:00", 800, tls(MX, TLS12_ECDHE)),
            ("30:01", 800, sent("4St1", "a@example.net", MX)),  # over TLS
            ("31:00", 801, sent("4St2", "b@example.net", MX)),  # plaintext
            ("32:00", 802, tls(MX, TLS12_RSA)),
            ("32:01", 801, sent("4St3", "c@example.net", MX, "conn_use=2, ")),  # plaintext
            ("32:02", 802, sent("4St4", "d@example.net", MX)),  # over TLS (RSA)
            ("33:00", 802, sent("4St5", "e@example.net", MX, "conn_use=2, ")),  # plaintext
        ]
    ]
    r = summarize(lines, NOW)
    assert counts(smtp(r).destinations[MX]) == (2, 1, 3, 0)
    assert outbound_warnings(r) == [
        f"outbound {MX} (postfix/smtp): 3 of 5 sessions plaintext, "
        "1 RSA key exchange (AES256-GCM-SHA384)"
    ]


def test_window_a_tls_line_before_it_still_covers_the_delivery_after():
    lines = [
        at(0, "postfix/smtp", 900, tls(MX, TLS13_37)),
        at(120, "postfix/smtp", 900, sent("4Uv1", "a@example.net", MX)),
    ]
    r = summarize(lines, datetime(2026, 11, 28, 17, 23, tzinfo=UTC), window=timedelta(minutes=2))
    assert "postfix/smtp" not in r.services  # the handshake outside, the delivery not plaintext


def test_loopback_content_filter_is_counted_but_not_warned():
    amavis = "127.0.0.1[127.0.0.1]:10024"
    r = summarize([at(0, "postfix/smtp", 950, sent("4Wx1", "a@example.org", amavis))], NOW)
    assert counts(smtp(r).destinations[amavis]) == (0, 0, 1, 0)
    assert outbound_warnings(r) == []


def test_json_shape_of_a_client_service():
    r = summarize(
        [
            at(0, "postfix/smtp", 100, tls(MX, TLS13_37)),
            at(1, "postfix/smtp", 100, sent("4XyZ1", "a@example.net", MX)),
        ],
        NOW,
    )
    service = r.to_dict()["services"]["postfix/smtp"]
    fields = {
        "sessions",
        "forward_secret",
        "plaintext",
        "failed_handshakes",
        "protocols",
        "ciphers",
        "groups",
        "share_forward_secret",
        "details_unknown",
    }
    assert set(service) == fields | {"destinations"}
    assert set(service["destinations"][MX]) == fields
    assert service["destinations"][MX]["groups"] == {"X25519": 1}


SAMPLE = [
    at(0, "postfix/smtp", 100, tls(MX, TLS13_37)),
    at(1, "postfix/smtp", 100, sent("4XyZ1", "a@example.net", MX)),
    at(2, "postfix-out/smtp", 101, f"SSL_connect error to {BROKEN}: -1"),
    at(3, "postfix/relay/smtp", 102, "4XyZ2: Cannot start TLS: handshake failure"),
    at(4, "postfix/lmtp", 103, "4XyZ3: lost connection with mx[192.0.2.1] while sending RCPT TO"),
    at(
        5,
        "postfix/smtp",
        104,
        "4XyZ4: conversation with mx[192.0.2.1] timed out while sending MAIL FROM",
    ),
    at(6, "postfix/smtp", 105, "Verified TLS connection reused to " + MX + ": " + TLS13_37),
    at(
        7,
        "postfix/smtpd",
        106,
        "Anonymous TLS connection established from c[10.0.0.9]: " + TLS12_ECDHE,
    ),
]
UNRELATED = [
    at(
        8,
        "postfix/local",
        200,
        "4XyZ5: to=<root@mx1>, orig_to=<root>, relay=local, delay=0.1, "
        "delays=0.1/0/0/0, dsn=2.0.0, status=sent (delivered to mailbox)",
    ),
    at(9, "postfix/virtual", 201, sent("4XyZ6", "u@example.org", "virtual")),
    at(10, "postfix/pipe", 202, sent("4XyZ7", "u@example.org", "dovecot")),
    at(11, "postfix/qmgr", 203, "4XyZ8: from=<a@example.org>, size=512, nrcpt=1 (queue active)"),
    at(12, "postfix/smtpd", 204, "connect from c[10.0.0.9]"),
    at(13, "postfix/smtp", 205, "4XyZ9: enabling PIX workarounds for mx[192.0.2.1]:25"),
    at(14, "postfix/cleanup", 206, "4XyZ9: message-id=<to=<x@y>>"),
]


@pytest.mark.skipif(shutil.which("grep") is None, reason="needs grep")
def test_fact_pattern_fetches_client_lines_and_not_other_status_lines():
    """The pattern as MailTlsLog's command runs it: single-quoted for the shell, `grep -E`."""
    out = subprocess.run(
        ["sh", "-c", f"grep -E '{_PATTERN}'"],
        input="\n".join(SAMPLE + UNRELATED) + "\n",
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "LC_ALL": "C"},  # as the command: export LC_ALL=C
    ).stdout.splitlines()
    assert out == SAMPLE


def test_a_server_service_under_the_policys_share_is_a_warning():
    """Another Postfix instance's smtpd (postfix-out/smtpd) that still negotiates RSA key
    exchange: a warning of the log report, as the issue's 49 % was; all forward-secret: none."""
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    est = (
        "2026-12-07T11:00:0{i}+00:00 mx {tag}[9]: Anonymous TLS connection established from "
        "c[192.0.2.{i}]: TLSv1.2 with cipher {cipher} (256/256 bits)"
    )
    lines = [
        est.format(i=1, tag="postfix-out/smtpd", cipher="ECDHE-RSA-AES256-GCM-SHA384"),
        est.format(i=2, tag="postfix-out/smtpd", cipher="AES256-GCM-SHA384"),
        est.format(i=3, tag="postfix/smtpd", cipher="ECDHE-RSA-AES256-GCM-SHA384"),
    ]
    r = summarize(lines, now=now)
    assert log_warnings(r) == [
        "inbound postfix-out/smtpd: 1 of 2 sessions forward-secret (the policy: every one)"
    ]
