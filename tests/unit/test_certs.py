"""Certificate renewals: the pure plan (tasks/certs/plan.py) and the watcher's checks of a pair
(files/mailtls-cert-watch `check`, run here with this machine's openssl)."""

from __future__ import annotations

import datetime
import os
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from selfsigned import self_signed

from tasks.assets import FILES, sha256
from tasks.audit.facts import MailTlsLog
from tasks.certs import plan as certs
from tasks.settings import CERT_COPIES_DIR, validate

WATCH = FILES / "mailtls-cert-watch"
LE = "/etc/letsencrypt/live/mx.example.org"
PAIR = {
    "postfix_cert_file": f"{LE}/fullchain.pem",
    "postfix_key_file": f"{LE}/privkey.pem",
    "dovecot_cert_file": f"{LE}/fullchain.pem",
    "dovecot_key_file": f"{LE}/privkey.pem",
}


# --- plan -----------------------------------------------------------------------------------------


def settings(**extra):
    return validate({**PAIR, **extra}, "mx1")


def on_host(cert="c1", key="k1", good=True, copies=True, rejected=False) -> dict:
    """{path: sha256} as the MailHost fact would read it after a watcher run."""
    files = {f"{LE}/fullchain.pem": cert, f"{LE}/privkey.pem": key}
    for daemon in ("postfix", "dovecot"):
        if copies:
            files.update({p: "x" for p in certs.COPIES[daemon]})
        line = sha256(certs.state_line("c1", "k1").encode())
        if good:
            files[f"{certs.STATE_DIR}/{daemon}.good"] = line
        if rejected:
            files[f"{certs.STATE_DIR}/{daemon}.rejected"] = sha256(
                certs.state_line(cert, key).encode()
            )
    return files


def test_first_run_makes_the_copies_and_points_the_daemons_at_them():
    p = certs.plan(settings(), True, {})
    assert p.refresh == ("postfix", "dovecot") and not p.remove
    assert certs.served("postfix", settings(), p) == (f"{CERT_COPIES_DIR}/postfix.pem",) * 2
    assert certs.served("dovecot", settings(), p) == certs.COPIES["dovecot"]


def test_nothing_to_do_when_the_copies_are_of_the_current_pair():
    p = certs.plan(settings(), True, on_host())
    assert p.refresh == () and p.rejected == () and set(p.watch) == {"postfix", "dovecot"}


def test_a_renewal_the_timer_has_not_seen_yet_is_copied_by_the_deploy():
    assert certs.plan(settings(), True, on_host(cert="c2", key="k2")).refresh == (
        "postfix",
        "dovecot",
    )


def test_a_rejected_pair_is_not_retried_while_good_copies_serve():
    p = certs.plan(settings(), True, on_host(cert="c2", key="k2", rejected=True))
    assert p.refresh == () and p.rejected == ("postfix", "dovecot")
    # without copies there is nothing good to serve: the deploy runs the watcher, which fails
    assert certs.plan(
        settings(), True, on_host(cert="c2", key="k2", rejected=True, copies=False)
    ).refresh


def test_missing_source_files_go_to_the_watcher_to_be_refused():
    assert certs.plan(settings(), True, {}).refresh == ("postfix", "dovecot")


def test_unset_or_switched_off_means_no_watcher_and_settings_as_given():
    for s in (validate({}, "mx1"), settings(mailtls_cert_watch=False)):
        p = certs.plan(s, True, {})
        assert p.watch == {} and not p.remove
        assert certs.served("postfix", s, p) == (s.postfix_cert_file, s.postfix_key_file)
    # what an earlier run installed is removed
    assert certs.plan(validate({}, "mx1"), True, {certs.TIMER_LINK: "x"}).remove


def test_no_dovecot_no_dovecot_watch():
    assert set(certs.plan(settings(), False, {}).watch) == {"postfix"}


def test_conf_and_fact_files():
    s = settings()
    assert certs.watch_conf(certs.sources(s)).splitlines()[1:] == [
        f"postfix {LE}/fullchain.pem {LE}/privkey.pem",
        f"dovecot {LE}/fullchain.pem {LE}/privkey.pem",
    ]
    files = certs.fact_files(s)
    assert len(files) == len(set(files))
    assert {
        certs.TIMER_LINK,
        certs.WATCH_BIN,
        f"{LE}/privkey.pem",
        *certs.COPIES["dovecot"],
    } <= set(files)


def test_the_watcher_script_and_the_module_name_the_same_copies():
    """Both take them from the contract of files/mailtls-common.sh (tasks/scripts.py)."""
    text = WATCH.read_text()
    assert 'postfix) echo "$SERVED_POSTFIX"' in text
    assert 'dovecot) echo "$SERVED_DOVECOT_CERT $SERVED_DOVECOT_KEY"' in text
    assert "CONF=$CERT_WATCH_CONF\n" in text and '"$CERT_WATCH_STATE/$d.good"' in text
    assert {
        "postfix": (f"{CERT_COPIES_DIR}/postfix.pem", f"{CERT_COPIES_DIR}/postfix.pem"),
        "dovecot": (f"{CERT_COPIES_DIR}/dovecot.crt", f"{CERT_COPIES_DIR}/dovecot.key"),
    } == certs.COPIES


# --- the watcher's check of a pair ------------------------------------------------------------------


def _pair(tmp_path, name, days=(-1, 30), key=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert, key_pem = self_signed(
        key,
        "mx.example.org",
        now + datetime.timedelta(days=days[0]),
        now + datetime.timedelta(days=days[1]),
        san=False,
    )
    c, k = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    c.write_bytes(cert)
    k.write_bytes(key_pem)
    c.chmod(0o644)
    k.chmod(0o600)
    return c, k


def check(cert, key) -> tuple[int, str]:
    res = subprocess.run(
        ["sh", str(WATCH), "check", str(cert), str(key)], capture_output=True, text=True, timeout=60
    )
    return res.returncode, res.stdout.strip()


def test_a_good_pair_passes(tmp_path):
    assert check(*_pair(tmp_path, "good")) == (0, "")


def test_a_key_of_another_certificate_is_refused(tmp_path):
    cert, _ = _pair(tmp_path, "a")
    _, other = _pair(tmp_path, "b")
    rc, why = check(cert, other)
    assert rc == 1 and "does not match" in why, why


def test_an_expired_certificate_is_refused(tmp_path):
    rc, why = check(*_pair(tmp_path, "old", days=(-60, -1)))
    assert rc == 1 and "expired" in why, why


def test_a_certificate_not_yet_valid_is_refused(tmp_path):
    rc, why = check(*_pair(tmp_path, "early", days=(2, 30)))
    assert rc == 1 and "not valid before" in why, why


@pytest.mark.parametrize(
    "mode,why", [(0o644, "every user"), (0o604, "every user"), (0o620, "writable by its group")]
)
def test_a_key_others_can_read_is_refused(tmp_path, mode, why):
    cert, key = _pair(tmp_path, "perm")
    key.chmod(mode)
    rc, said = check(cert, key)
    assert rc == 1 and why in said, said
    key.chmod(0o640)  # group-readable (Debian's ssl-cert group) is fine
    assert check(cert, key) == (0, "")


def test_missing_unparsable_or_unreadable_files_are_refused(tmp_path):
    cert, key = _pair(tmp_path, "x")
    assert "does not exist" in check(cert, tmp_path / "nope.key")[1]
    (tmp_path / "dangling.pem").symlink_to(tmp_path / "gone.pem")
    assert "does not exist" in check(tmp_path / "dangling.pem", key)[1]
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    assert "no PEM certificate" in check(junk, key)[1]
    not_a_key = tmp_path / "not-a.key"
    not_a_key.write_bytes(cert.read_bytes())
    not_a_key.chmod(0o600)
    assert "no usable private key" in check(cert, not_a_key)[1]
    if os.geteuid() != 0:  # root reads any mode
        key.chmod(0)
        assert "unreadable" in check(cert, key)[1]


# --- the audit's view ----------------------------------------------------------------------------


def test_the_audit_fact_reads_the_watchers_status():
    out = MailTlsLog().process(
        [
            "@@now 1764547200 +0000",
            "@@client 10.213.0.1",
            "@@cert postfix 2026-12-01T00:00:00Z rejected /x/fullchain.pem: the key does not match",
            "@@cert dovecot 2026-12-01T00:00:00Z serving /x/fullchain.pem sha256=AB",
            "Dec  1 00:00:00 mx postfix/smtpd[1]: TLS connection established from x",
        ]
    )
    assert out["certs"] == {
        "postfix": "2026-12-01T00:00:00Z rejected /x/fullchain.pem: the key does not match",
        "dovecot": "2026-12-01T00:00:00Z serving /x/fullchain.pem sha256=AB",
    }
    assert len(out["lines"]) == 1


def test_a_combined_key_and_chain_file_is_a_good_pair(tmp_path):
    cert, key = _pair(tmp_path, "c")
    both = tmp_path / "combined.pem"
    both.write_bytes(key.read_bytes() + cert.read_bytes())
    both.chmod(0o600)
    assert check(both, both) == (0, "")


@pytest.mark.parametrize(
    "make,why",
    [
        (lambda p: os.mkfifo(p), "is not a regular file"),
        (lambda p: p.symlink_to("/dev/zero"), "is not a regular file"),
        (lambda p: p.write_bytes(b"A" * (1 << 21)), "is larger than 1 MiB"),
    ],
)
def test_a_source_that_never_ends_is_refused_at_once(tmp_path, make, why):
    cert, _ = _pair(tmp_path, "x")
    endless = tmp_path / "endless.key"
    make(endless)
    rc, said = check(cert, endless)  # check() itself would time out after 60 s
    assert rc == 1 and f"{endless} {why}" in said, said


def test_a_directory_others_may_write_to_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    cert, key = _pair(shared, "x")
    shared.chmod(0o777)
    rc, said = check(cert, key)
    assert rc == 1 and "the directory shared (drwxrwxrwx" in said and "can be changed" in said
    shared.chmod(0o1777)  # sticky: only a file's owner may replace it
    assert check(cert, key) == (0, "")
