"""Parsing the MailHost fact's output, and the inventory sources."""

import pytest

from tasks.facts import MailHost
from tasks.host_facts import Unit
from tasks.inventory_source import (
    InventoryError,
    hosts_from_env,
    parse_hosts_file,
    parse_hosts_list,
)

FACT_OUTPUT = """@@postfix_version
3.10.13
@@dovecot_version
2.4.1-4 (7d8c0e5759)
@@openssl_version
OpenSSL 3.5.9 29 Sep 2026 (Library: OpenSSL 3.5.9 29 Sep 2026)
@@postconf_n
smtpd_tls_security_level = may
tls_ffdhe_auto_groups =
@@postconf_m
smtp       inet  n       -       y       -       -       smtpd
submission inet  n       -       y       -       -       smtpd -o syslog_name=postfix/submission
@@postconf_p
submission/inet/syslog_name = postfix/submission
@@asked
/etc/dovecot/conf.d/99-mailtls.conf
/etc/ssl/mailtls/dh.pem
@@files
4f2a  /etc/dovecot/conf.d/99-mailtls.conf
@@modes
644 /etc/dovecot/conf.d/99-mailtls.conf
@@pending
postfix
@@units
postfix enabled active
dovecot enabled failed
@@end""".splitlines()


def test_mailhost_fact_parses_every_section():
    info = MailHost().process(FACT_OUTPUT)
    assert info.caps.postfix == (3, 10, 13)
    assert info.caps.dovecot == (2, 4, 1)
    assert info.caps.openssl == (3, 5, 9)
    assert info.postconf == {"smtpd_tls_security_level": "may", "tls_ffdhe_auto_groups": ""}
    assert set(info.services) == {"smtp/inet", "submission/inet"}
    assert info.master_params == {"submission/inet/syslog_name": "postfix/submission"}
    assert info.files == {"/etc/dovecot/conf.d/99-mailtls.conf": "4f2a"}
    assert info.modes == {"/etc/dovecot/conf.d/99-mailtls.conf": "644"}
    assert info.asked == {"/etc/dovecot/conf.d/99-mailtls.conf", "/etc/ssl/mailtls/dh.pem"}
    assert info.pending == {"postfix"}
    assert {d: u.state for d, u in info.units.items()} == {"postfix": "running", "dovecot": "down"}


@pytest.mark.parametrize(
    "enabled,active,state",
    [
        ("enabled", "active", "running"),
        ("enabled", "failed", "down"),  # would not start, or died: the commit starts it
        ("disabled", "failed", "down"),  # failed all the same (started by hand, then died)
        ("enabled", "inactive", "stopped"),  # the admin's: left as it is
        ("disabled", "inactive", "disabled"),
        ("masked", "inactive", "disabled"),
    ],
)
def test_unit_states(enabled, active, state):
    assert Unit(enabled, active).state == state


def test_a_unit_line_that_systemd_left_short_is_no_state():
    # is-enabled prints nothing (to stdout) for a unit it does not know
    out = ["dovecot  failed" if x == "dovecot enabled failed" else x for x in FACT_OUTPUT]
    assert set(MailHost().process(out).units) == {"postfix"}


def test_mailhost_fact_without_dovecot():
    out = [line for line in FACT_OUTPUT if not line.startswith("2.4.1")]
    assert MailHost().process(out).caps.dovecot is None


def test_fact_command_quotes_paths():
    assert "'/etc/a b'" in MailHost().command(files=("/etc/a b",))


def test_fact_command_keeps_quotes_in_paths(tmp_path):
    """A path with a quote is quoted (shlex), not mangled: its checksum is read under its name."""
    import subprocess

    odd = tmp_path / "it's; here"
    odd.write_bytes(b"x")
    guard = tmp_path / "dh'.pem"
    fact = MailHost()
    out = subprocess.run(
        ["sh", "-c", fact.command(files=(str(odd),), guard=str(guard))],
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    info = fact.process(out)
    assert info.asked == {str(odd)} and str(odd) in info.files
    assert f"real {guard}" in info.guard


def test_hosts_list():
    assert parse_hosts_list("mx1.example.org, root@mx2.example.org:2222") == [
        ("mx1.example.org", {}),
        ("mx2.example.org", {"ssh_user": "root", "ssh_port": 2222}),
    ]


@pytest.mark.parametrize("bad", ["mx1:99999", "@mx1", "mx1;reboot", "mx1:port"])
def test_hosts_list_refuses_bad_targets(bad):
    with pytest.raises(InventoryError, match="MAILTLS_HOSTS"):
        parse_hosts_list(bad)


def test_hosts_file(tmp_path):
    f = tmp_path / "hosts.txt"
    f.write_text(
        "# mail servers\nmx1.example.org tls_profile=modern dh_rotation=false\n\n"
        "admin@mx2.example.org:22  # second\n"
    )
    assert parse_hosts_file(f) == [
        ("mx1.example.org", {"tls_profile": "modern", "dh_rotation": False}),
        ("mx2.example.org", {"ssh_user": "admin", "ssh_port": 22}),
    ]


def test_hosts_file_bad_pair(tmp_path):
    f = tmp_path / "hosts.txt"
    f.write_text("mx1.example.org tls_profile\n")
    with pytest.raises(InventoryError, match=r"hosts.txt:1: expected key=value"):
        parse_hosts_file(f)


def test_env_precedence(tmp_path):
    f = tmp_path / "hosts.txt"
    f.write_text("from-file\n")
    assert hosts_from_env({"MAILTLS_HOSTS": "from-env", "MAILTLS_HOSTS_FILE": str(f)}) == [
        ("from-env", {})
    ]
    assert hosts_from_env({"MAILTLS_HOSTS_FILE": str(f)}) == [("from-file", {})]


# --- issue 12 item 9: IPv6 targets ----------------------------------------------------------------


def test_hosts_list_ipv6():
    assert parse_hosts_list("2001:db8::1, [2001:db8::1]:2222,root@[2001:db8::2],admin@fe80::1") == [
        ("2001:db8::1", {}),
        ("2001:db8::1", {"ssh_port": 2222}),
        ("2001:db8::2", {"ssh_user": "root"}),
        ("fe80::1", {"ssh_user": "admin"}),
    ]


@pytest.mark.parametrize(
    "bad,why",
    [
        ("[2001:db8::1", "IPv6 with a port"),
        ("[2001:db8::1]2222", "IPv6 with a port"),
        ("[2001:db8::1]:0", "bad port"),
        ("[mx.example.org]:22", "bad IPv6"),
        ("2001:db8::zz", "bad IPv6"),
        ("[2001:db8::1]:２２", "bad port"),
    ],
)
def test_hosts_list_bad_ipv6(bad, why):
    with pytest.raises(InventoryError, match=why):
        parse_hosts_list(bad)


def test_mailhost_fact_dovecot_tree_section():
    out = FACT_OUTPUT[:-1] + [
        "@@dovecot_tree",
        "/etc/dovecot/dovecot.conf:87:!include_try local.conf",
        "/etc/dovecot/local.conf:2:ssl_cipher_list = ALL",
        "@@end",
    ]
    info = MailHost().process(out)
    assert info.dovecot_tree == (
        "/etc/dovecot/dovecot.conf:87:!include_try local.conf",
        "/etc/dovecot/local.conf:2:ssl_cipher_list = ALL",
    )
    assert MailHost().process(FACT_OUTPUT).dovecot_tree == ()  # stock host: nothing printed
    command = MailHost().command()
    assert (
        "{keys}" not in command
        and "ssl_cipher_list|" in command
        and "--exclude=99-mailtls.conf" in command
    )


def test_mailhost_fact_oversize_section():
    """A file over the fact's size cap is named in `oversize` and is neither hashed nor given a
    mode: plan() sees it as absent (the certificate watcher is asked, and says why it refuses)."""
    out = FACT_OUTPUT[:-1] + ["@@oversize", "/srv/acme/huge.pem", "@@end"]
    info = MailHost().process(out)
    assert info.oversize == {"/srv/acme/huge.pem"}
    assert "/srv/acme/huge.pem" not in info.files and "/srv/acme/huge.pem" not in info.modes
    assert MailHost().process(FACT_OUTPUT).oversize == set()


def test_fact_reads_no_file_over_the_cap(tmp_path):
    """The paths asked for include the admin's certificate sources, in directories a non-root
    user may control: a huge (sparse) file there must not be read, a small one still is."""
    import subprocess
    import time

    from tasks.facts import READ_MAX

    small, huge = tmp_path / "cert.pem", tmp_path / "huge.pem"
    small.write_bytes(b"x" * READ_MAX)  # at the cap: read
    with open(huge, "wb") as fh:
        fh.truncate(READ_MAX + 1)
    fact = MailHost()
    started = time.monotonic()
    out = subprocess.run(
        ["sh", "-c", fact.command(files=(str(small), str(huge)))],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.splitlines()
    assert time.monotonic() - started < 30
    info = fact.process(out)
    assert set(info.files) == set(info.modes) == {str(small)}
    assert info.oversize == {str(huge)}
