"""The root scripts as installed (tasks/scripts.py): one self-contained file each, and the
contract of files/mailtls-common.sh that the shell and the Python side both read."""

from __future__ import annotations

import subprocess

import pytest

from tasks import facts, ops, scripts, settings
from tasks.audit import facts as audit_facts
from tasks.certs import plan as certs
from tasks.dh import plan as dh
from tasks.postfix import apply as postfix_apply
from tasks.safety import verify as verify_conf

INSTALLED = ("mailtls-apply", "mailtls-dh-rotate", "mailtls-cert-watch")


@pytest.mark.parametrize("name", INSTALLED)
def test_an_installed_script_is_one_file(name):
    text = scripts.script(name).decode()
    source = (scripts.FILES / name).read_text()
    assert '. "$(dirname "$0")/' in source  # in the repository it sources its library
    assert "$(dirname" not in text and "shellcheck source=" not in text
    assert text.startswith("#!/bin/sh\n")
    assert "\nhold_lock() {" in text and f"\nAPPLY={ops.APPLY}\n" in text
    for shell in ("sh", "bash"):  # dash is Debian's sh
        res = subprocess.run([shell, "-n"], input=text, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr


def test_mailtls_apply_carries_its_verification_too():
    text = scripts.script("mailtls-apply").decode()
    assert "\nverify() {" in text and "\nnegative_probes() {" in text


def test_the_python_constants_are_the_contract():
    c = scripts.CONTRACT
    assert ops.APPLY == c["APPLY"] == "/usr/local/sbin/mailtls-apply"
    assert verify_conf.VERIFY_PATH == c["VERIFY"] == "/etc/mailtls/verify.conf"
    assert postfix_apply.STAGE_DIR == c["STAGE"] == "/var/lib/mailtls/stage"
    assert facts.DH_ROTATE_LOCK == "/var/lib/mailtls/lock/dh-rotate.lock"
    assert facts.CERT_WATCH_LOCK == "/var/lib/mailtls/cert-watch/.lock"
    assert certs.STATE_DIR == audit_facts.CERT_STATUS == "/var/lib/mailtls/cert-watch"
    assert settings.CERT_COPIES_DIR == "/etc/ssl/mailtls/served"
    assert (dh.ROTATE_BIN, dh.ROTATE_CONF, dh.ROTATE_STAMP) == (
        "/usr/local/sbin/mailtls-dh-rotate",
        "/etc/mailtls/dh-rotate.conf",
        "/var/lib/mailtls/dh-rotate.done",
    )
    command = facts.MailHost().command(files=(), guard="/x")
    assert f"marks={c['PENDING']}\n" in command and c["PENDING"] == "/var/lib/mailtls/pending"


def test_the_stamp_the_shell_writes_is_the_one_python_expects():
    """mailtls-dh-rotate writes the stamp with printf and the contract's format."""
    fmt = scripts.CONTRACT["DH_STAMP_FORMAT"]
    out = subprocess.run(
        ["sh", "-c", 'printf "$1" /etc/ssl/mailtls/dh.pem 2048 4f2a', "sh", fmt],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == dh.rotate_stamp("/etc/ssl/mailtls/dh.pem", 2048, "4f2a")


def test_the_shell_reads_the_contract_as_python_does():
    lib = scripts.FILES / scripts.LIBRARY
    names = " ".join(f'"${n}"' for n in scripts.CONTRACT)
    out = subprocess.run(
        ["sh", "-c", f'. "$1" && printf "%s\\n" {names}', "sh", str(lib)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines() == list(scripts.CONTRACT.values())


@pytest.mark.parametrize(
    "line",
    ['X="/a b"', "X=$(id -u)", "X=/a b", "X=$UNDEFINED/x", "lower=1", "X=`id`", "X=~/x"],
)
def test_the_contract_takes_only_what_both_sides_read_alike(line):
    text = f"{scripts._BEGIN}\nA=/a\n{line}\n{scripts._END}\n"
    with pytest.raises(ValueError):
        scripts.parse_contract(text)


DATA = scripts.FILES.parent / "tests" / "unit" / "data"


@pytest.mark.parametrize(
    "sample,expect",
    [
        # Postfix 3.11's default on Debian 13: an X25519 share, the hybrid group still offered
        (
            "s_server-trace-deferred.txt",
            "517| X25519MLKEM768 ecdh_x25519 secp256r1 ecdh_x448 secp384r1 secp521r1 ffdhe2048 "
            "ffdhe3072| ecdh_x25519",
        ),
        # the server's list as the client's: its only share is the 1,216-byte hybrid one
        (
            "s_server-trace-pq-share.txt",
            "1625| X25519MLKEM768 ecdh_x25519 secp256r1 secp384r1| X25519MLKEM768",
        ),
    ],
)
def test_the_outbound_check_reads_the_first_client_hello(sample, expect):
    """client_hello_of (files/mailtls-apply-verify.sh) on `openssl s_server -trace` output
    captured on a Debian 13 test host from posttls-finger with SNI 0123456789abcdef.mailtls.invalid."""
    verify_sh = (scripts.FILES / "mailtls-apply-verify.sh").read_text()
    out = subprocess.run(
        ["sh", "-c", verify_sh + '\nclient_hello_of "$1"', "sh", str(DATA / sample)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    hello, _, sni = out.rpartition("|")
    assert hello == expect
    assert sni.endswith(b"0123456789abcdef.mailtls.invalid".hex())


SS = """\
LISTEN 0 100 0.0.0.0:25 0.0.0.0:* users:(("master",pid=100,fd=13))
LISTEN 0 100 [::]:25 [::]:* users:(("master",pid=100,fd=14))
LISTEN 0 100 192.0.2.7:587 0.0.0.0:* users:(("master",pid=100,fd=20))
LISTEN 0 100 198.51.100.9:587 0.0.0.0:* users:(("master",pid=100,fd=21))
LISTEN 0 100 [::]:993 [::]:* users:(("dovecot",pid=200,fd=30))
LISTEN 0 100 127.0.0.1:2525 0.0.0.0:* users:(("master",pid=100,fd=22))
"""


@pytest.mark.parametrize(
    "port,expect",
    [
        (25, ["127.0.0.1:25"]),  # both wildcards: one listener of one service
        (587, ["192.0.2.7:587", "198.51.100.9:587"]),  # each address probed
        (993, ["[::1]:993"]),
        (465, []),
        (25252, []),  # no partial match of the port
    ],
)
def test_every_listening_address_of_a_port_is_probed(port, expect):
    verify_sh = (scripts.FILES / "mailtls-apply-verify.sh").read_text()
    out = subprocess.run(
        ["sh", "-c", verify_sh + '\nlocal_addresses "$1" "$2"', "sh", str(port), SS],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == expect
