"""Log parsing on real Postfix 3.7/3.10 and Dovecot 2.3/2.4 lines captured from the test hosts."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tasks.audit.logreport import parse_line, parse_time, summarize

DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)


def lines(name: str) -> list[str]:
    return (DATA / name).read_text().splitlines()


def test_rfc3339_file_counts():
    r = summarize(lines("mail-rfc3339.log"), NOW)
    smtpd, imap, pop3 = (
        r.services[s] for s in ("postfix/smtpd", "dovecot/imap-login", "dovecot/pop3-login")
    )
    assert (smtpd.sessions, smtpd.forward_secret, smtpd.failed_handshakes) == (3, 2, 1)
    assert smtpd.protocols == {"TLSv1.2": 1, "TLSv1.3": 1, "TLSv1": 1}
    assert smtpd.ciphers["AES128-SHA"] == 1 and smtpd.groups == {
        "X25519": 1,
        "not logged": 2,
    }  # 3.10's 'x25519'
    share = smtpd.share_forward_secret
    assert share is not None and abs(share - 2 / 3) < 1e-9, share
    # 2.4 ssl_security lines, a 2.3 line with only "TLS", one with ssl_security after session=, one plaintext
    assert (imap.sessions, imap.details_unknown, imap.plaintext, imap.forward_secret) == (
        5,
        1,
        1,
        4,
    )
    assert (pop3.sessions, pop3.failed_handshakes) == (1, 1)  # "TLS handshaking" = failed
    assert r.services["postfix/submission/smtpd"].failed_handshakes == 1


def test_traditional_file_both_releases():
    r = summarize(lines("mail-traditional.log"), NOW)
    assert r.services["postfix/smtpd"].sessions == 6
    assert r.services["postfix/smtpd"].protocols["TLSv1"] == 2
    assert r.services["dovecot/imap-login"].sessions == 6  # 2.3 "Login:" and 2.4 "Logged in:"
    assert r.services["dovecot/pop3-login"].sessions == 2
    assert r.unparsed == 0


def test_window_and_excluded_clients():
    r = summarize(lines("mail-rfc3339.log"), NOW, window=timedelta(minutes=47))  # from 17:13
    assert "postfix/smtpd" in r.services and r.services["postfix/smtpd"].sessions == 0
    r = summarize(lines("mail-traditional.log"), NOW, exclude_clients=frozenset({"10.213.2.1"}))
    assert r.excluded == 7 and r.services["postfix/smtpd"].sessions == 3


def test_traditional_timestamp_year_rollover():
    jan = datetime(2027, 1, 1, 0, 10, tzinfo=UTC)
    dec31 = parse_time("Dec 31 23:59:59 mx x: y", jan)
    jan1 = parse_time("Jan  1 00:05:00 mx x: y", jan)
    assert dec31 is not None and dec31[0].year == 2026, dec31
    assert jan1 is not None and jan1[0] == datetime(2027, 1, 1, 0, 5, tzinfo=UTC), jan1


def test_rfc3339_offsets_and_other_lines():
    e = parse_line(
        "2026-11-28T18:30:00.1+01:00 mx postfix/submissions/smtpd[9]: Trusted TLS connection "
        "established from a[192.0.2.7]: TLSv1.2 with cipher DHE-RSA-AES256-GCM-SHA384 (256/256 bits)",
        NOW,
    )
    assert e is not None
    assert e.time == datetime(2026, 11, 28, 17, 30, 0, 100000, tzinfo=UTC)
    assert (e.service, e.client, e.protocol, e.cipher) == (
        "postfix/submissions/smtpd",
        "192.0.2.7",
        "TLSv1.2",
        "DHE-RSA-AES256-GCM-SHA384",
    )
    assert (
        parse_line(
            "2026-11-28T18:30:00+00:00 mx postfix/smtp[9]: Verified TLS connection established to x",
            NOW,
        )
        is None
    )
    assert parse_line("garbage", NOW) is None


def test_journal_short_iso_precise_lines_of_both_releases():
    """What MailTlsLog reads on journald-only hosts: systemd 252 writes +0000, 257 +00:00."""
    journal = [
        "2026-11-28T17:10:35.032962+0000 b.mailtls.test postfix/smtpd[378]: Anonymous TLS connection established "
        "from c[10.0.0.9]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519",
        "2026-11-28T17:10:39.672039+00:00 t.mailtls.test postfix/smtpd[274]: Anonymous TLS connection established "
        "from c[10.0.0.9]: TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)",
    ]
    r = summarize(journal, NOW)
    smtpd = r.services["postfix/smtpd"]
    assert (smtpd.sessions, smtpd.forward_secret) == (2, 2)
    assert smtpd.protocols == {"TLSv1.3": 1, "TLSv1.2": 1}


def test_mail_log_fact_reports_its_source():
    from tasks.audit.facts import MailTlsLog

    fact = MailTlsLog()
    out = fact.process(
        ["@@now 1795000000 +0000", "@@client 10.213.5.1", "@@source journal", "a line"]
    )
    assert (out["source"], out["ssh_client"], out["lines"]) == ("journal", "10.213.5.1", ["a line"])
    command = fact.command(hours=2)
    assert (
        "SYSLOG_FACILITY=2" in command
        and "now - 10800" in command
        and "/var/log/mail.log" in command
    )
