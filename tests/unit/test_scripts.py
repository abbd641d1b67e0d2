"""The root scripts as installed (tasks/scripts.py): one self-contained file each, and the
contract of files/mailtls-common.sh that the shell and the Python side both read."""

from __future__ import annotations

import subprocess
from pathlib import Path

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
            "posttls-finger-dump-deferred.txt",
            "517| X25519MLKEM768 X25519 secp256r1 X448 secp384r1 secp521r1 ffdhe2048 ffdhe3072| X25519",
        ),
        # the server's list as the client's: its only share is the 1,216-byte hybrid one
        (
            "posttls-finger-dump-pq-share.txt",
            "1588| X25519MLKEM768 X25519 secp256r1 secp384r1 ffdhe2048 ffdhe3072| X25519MLKEM768",
        ),
    ],
)
def test_the_outbound_check_reads_the_first_client_hello(sample, expect):
    """client_hello_of (files/mailtls-apply-verify.sh) on posttls-finger's own packet dump
    (-L ssl-handshake-packet-dump), captured on a stock Debian 13 test host connecting to its
    port 25: the first write only (what follows, the server's answer and after a
    HelloRetryRequest a second hello, is not read)."""
    verify_sh = (scripts.FILES / "mailtls-apply-verify.sh").read_text()
    out = subprocess.run(
        ["sh", "-c", verify_sh + '\nclient_hello_of "$1"', "sh", str(DATA / sample)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == expect


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


# Dovecot's read-back (files/mailtls-apply-verify.sh `readback dovecot`) against doveconf as it
# answered on the test hosts: Debian 12's 2.3.19, 13's 2.4.1 and 14's 2.4.5, captured after a
# deploy (tests/unit/data/doveconf-*.txt, each `doveconf -f protocol=imap NAMES...`). 2.4.5
# prints no filter path (ssl_server/prefer_ciphers) asked after a plain name: plain-first.txt.
V24 = {
    "ssl_min_protocol": "TLSv1.2",
    "ssl_cipher_list": (
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
    ),
    "ssl_cipher_suites": "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
    "ssl_curve_list": "X25519MLKEM768/X25519:prime256v1:secp384r1",
    "ssl_server/prefer_ciphers": "client",
}
V23 = {
    **{k: v for k, v in V24.items() if "/" not in k},
    "ssl_curve_list": "X25519:prime256v1:secp384r1",
    "ssl_prefer_server_ciphers": "no",
}
FILTER_FIRST = ("ssl_server/prefer_ciphers", *(k for k in V24 if "/" not in k))


def _doveconf_stub(tmp_path, protocols: str, answers: dict, n: str = "") -> Path:
    """A `doveconf` that answers a name query from `answers` {(protocol or "", names): sample
    file; protocol "*": any}, `-h protocols` with `protocols` and `-n` with the sample `n`;
    anything else with nothing, as doveconf does for a name it does not know."""
    stub = tmp_path / "stub"
    (stub / "q").mkdir(parents=True)
    (stub / "protocols").write_text(protocols)
    (stub / "n").write_text((DATA / n).read_text() if n else "")
    for (proto, names), sample in answers.items():
        key = proto + "+" + " ".join(names).replace("/", "%")
        (stub / "q" / key).write_text((DATA / sample).read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "doveconf").write_text(
        f"""#!/bin/sh
d={stub}
case "$*" in "-h protocols") cat "$d/protocols"; exit 0 ;; -n) cat "$d/n"; exit 0 ;; esac
p= names=
while [ $# -gt 0 ]; do
    case "$1" in -f) p=${{2#protocol=}}; shift 2 ;; *) names="$names${{names:+ }}$1"; shift ;; esac
done
key=$(echo "$names" | tr / %)
for f in "$d/q/$p+$key" "$d/q/*+$key"; do [ -f "$f" ] && {{ cat "$f"; exit 0; }}; done
exit 0
"""
    )
    (bin_dir / "doveconf").chmod(0o755)
    return bin_dir


def _readback(tmp_path, bin_dir: Path, wanted: dict, dovecot_dir: Path | None = None):
    verify = tmp_path / "verify.conf"
    verify.write_text("".join(f"doveconf {k}={v}\n" for k, v in wanted.items()))
    verify_sh = (scripts.FILES / "mailtls-apply-verify.sh").read_text()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    return subprocess.run(
        [
            "sh",
            "-c",
            verify_sh + '\nVERIFY=$1 DOVECOT_DIR=$2\nreadback dovecot ""',
            "sh",
            str(verify),
            str(dovecot_dir or tmp_path / "no-dovecot"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )


@pytest.mark.parametrize(
    "protocols,answers,wanted",
    [
        # 2.4.5 (Debian 14), asked filter path first as the read-back does
        ("imap = yes\npop3 = yes\n", {("*", FILTER_FIRST): "doveconf-2.4.5-filter-first.txt"}, V24),
        # 2.4.5 dropping the filter path (asked after a plain name): asked again, alone
        (
            "imap = yes\npop3 = yes\n",
            {
                ("*", FILTER_FIRST): "doveconf-2.4.5-plain-first.txt",
                ("*", ("ssl_server/prefer_ciphers",)): "doveconf-2.4.5-alone.txt",
            },
            V24,
        ),
        # 2.4.1 (Debian 13)
        ("imap = yes\npop3 = yes\n", {("*", FILTER_FIRST): "doveconf-2.4.1-filter-first.txt"}, V24),
        # 2.3.19 (Debian 12): no filter paths; `doveconf -h protocols` is a plain list
        (" imap pop3\n", {("*", tuple(V23)): "doveconf-2.3.19-readback.txt"}, V23),
    ],
    ids=["2.4.5", "2.4.5-dropped", "2.4.1", "2.3"],
)
def test_dovecot_readback_matches_the_policy_on_every_version(tmp_path, protocols, answers, wanted):
    res = _readback(tmp_path, _doveconf_stub(tmp_path, protocols, answers), wanted)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


def test_the_readback_asks_filter_paths_first():
    """What 2.4.5 prints depends on the order: verify.conf's order loses the filter path."""
    plain = (DATA / "doveconf-2.4.5-plain-first.txt").read_text()
    first = (DATA / "doveconf-2.4.5-filter-first.txt").read_text()
    assert "prefer_ciphers" not in plain and "  prefer_ciphers = client\n" in first
    sh = (scripts.FILES / "mailtls-apply-verify.sh").read_text()
    verify = "".join(f"doveconf {k}={v}\n" for k, v in V24.items())
    out = subprocess.run(
        [
            "sh",
            "-c",
            sh + "\nVERIFY=/dev/stdin\nsed -n 's/^doveconf \\([^=]*\\/[^=]*\\)=.*/\\1/p' "
            '"$VERIFY"',
        ],
        input=verify,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["ssl_server/prefer_ciphers"]


def test_dove_paths_names_a_filter_setting_as_doveconf_takes_it():
    sh = (scripts.FILES / "mailtls-apply-verify.sh").read_text()
    out = subprocess.run(
        ["sh", "-c", sh + "\ndove_paths"],
        input=(DATA / "doveconf-2.4.5-n-override.txt").read_text()
        + "ssl_server_ca_file = <<EOD\nkey = not a setting\nEOD\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for line in (
        "ssl_server/cert_file = /etc/dovecot/private/dovecot.pem",
        "ssl_server/prefer_ciphers = server",
        "protocol/imap/ssl_min_protocol = TLSv1.3",
        "ssl_cipher_suites = TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
        'namespace/inbox/mailbox/Drafts/special_use = "\\\\Drafts"',
    ):
        assert line in out, out
    assert not [line for line in out if line.startswith("key")]


LOCAL_CONF = "# site\nssl_server {\n  prefer_ciphers = server\n}\nprotocol imap {\n  ssl_min_protocol = TLSv1.3\n}\n"


@pytest.mark.parametrize(
    "wanted,expect",
    [
        # the global one first: served everywhere
        (
            V24,
            "Dovecot serves ssl_server_prefer_ciphers = server, not client (the policy's, in "
            "99-mailtls.conf): doveconf -n sets ssl_server/prefer_ciphers = server; "
            "{dir}/local.conf:3: prefer_ciphers = server -- remove it there",
        ),
        # a protocol's block: named with its protocol, only that block's line
        (
            {**V24, "ssl_server/prefer_ciphers": "server"},
            "Dovecot (protocol imap) serves ssl_min_protocol = TLSv1.3, not TLSv1.2 (the policy's, "
            "in 99-mailtls.conf): doveconf -n sets protocol/imap/ssl_min_protocol = TLSv1.3; "
            "{dir}/local.conf:6: ssl_min_protocol = TLSv1.3 -- remove it there",
        ),
    ],
    ids=["global", "protocol"],
)
def test_a_dovecot_mismatch_names_setting_values_and_origin(tmp_path, wanted, expect):
    """2.4.5 with a local.conf read after ours (tests/unit/data/doveconf-2.4.5-override*.txt)."""
    stub = _doveconf_stub(
        tmp_path,
        "imap = yes\npop3 = yes\n",
        {
            ("", FILTER_FIRST): "doveconf-2.4.5-override-global.txt",
            ("imap", FILTER_FIRST): "doveconf-2.4.5-override.txt",
            ("pop3", FILTER_FIRST): "doveconf-2.4.5-override-global.txt",
        },
        n="doveconf-2.4.5-n-override.txt",
    )
    etc = tmp_path / "etc-dovecot"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "conf.d" / "99-mailtls.conf").write_text("ssl_server_prefer_ciphers = client\n")
    (etc / "local.conf").write_text(LOCAL_CONF)
    res = _readback(tmp_path, stub, wanted, etc)
    assert res.returncode == 1
    assert res.stdout.strip() == expect.format(dir=etc)


def test_a_value_no_file_sets_is_named_with_its_setting(tmp_path):
    """Served from Dovecot's default (our file not read): the setting and both values, never
    an empty name."""
    stub = _doveconf_stub(
        tmp_path, "imap = yes\n", {("*", FILTER_FIRST): "doveconf-2.4.5-filter-first.txt"}
    )
    res = _readback(tmp_path, stub, {**V24, "ssl_curve_list": "X25519:prime256v1"})
    assert res.returncode == 1
    assert res.stdout.startswith(
        "Dovecot serves ssl_curve_list = X25519MLKEM768/X25519:prime256v1:secp384r1, not "
        "X25519:prime256v1 (the policy's, in 99-mailtls.conf): no file in "
    ), res.stdout
    stub = _doveconf_stub(tmp_path / "x", "imap = yes\n", {})  # prints nothing at all
    res = _readback(tmp_path, stub, {"ssl_server/prefer_ciphers": "client"})
    assert res.stdout.startswith(
        "Dovecot reports no value for ssl_server_prefer_ciphers (doveconf "
        "ssl_server/prefer_ciphers printed nothing) where the policy sets client"
    ), res.stdout
