"""DH task: the pure plan (what a deploy does for each host state), the shipped groups, and the
rotation script's parameter check run against real openssl output."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tasks.dh import plan as dh
from tasks.policy import HostCaps, resolve
from tasks.settings import SettingsError, validate

CAPS = HostCaps(postfix=(3, 7, 11), dovecot=(2, 3, 19), openssl=(3, 0, 20))
DH_FILE = "/etc/ssl/mailtls/dh.pem"


def setup(**data):
    s = validate({"tls_profile": "legacy-dhe", **data}, "mx1")
    return s, resolve(s.tls_profile, CAPS, dh_file=s.dh_file)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stamp_sha(bits: int, dh_sha: str) -> str:
    return hashlib.sha256(dh.rotate_stamp(DH_FILE, bits, dh_sha).encode()).hexdigest()


# --- plan -------------------------------------------------------------------------------------


def test_fixed_group_installs_the_shipped_file_and_no_rotation():
    s, p = setup()
    plan = dh.plan(s, p, {})
    assert plan.params == dh.shipped_group(3072) and plan.dh_file == DH_FILE
    assert not plan.rotation_files and not plan.start_generation
    assert plan.cron is None  # nothing of ours in the crontab: do not even read it
    assert plan.rotation_files is None  # nothing of ours to remove: no operation at all


def test_fixed_group_removes_what_generated_left_behind():
    s, p = setup(dh_source="ffdhe4096")
    plan = dh.plan(s, p, {dh.ROTATE_BIN: "x", DH_FILE: "y"})
    assert plan.params == dh.shipped_group(4096)
    assert plan.cron is False and plan.rotation_files is False


def test_no_dhe_profile_touches_no_dh_file():
    s = validate({"tls_profile": "intermediate"}, "mx1")
    p = resolve(s.tls_profile, CAPS, dh_file=s.dh_file)
    plan = dh.plan(s, p, {DH_FILE: "y"})
    assert plan.params is None and plan.dh_file is None and not plan.start_generation
    assert plan.cron is None
    assert dh.plan(s, p, {dh.ROTATE_CONF: "c"}).cron is False


def test_generated_missing_file_gets_placeholder_of_same_size_and_starts_generation():
    for bits in (2048, 3072, 4096):
        s, p = setup(dh_source="generated", dh_bits=bits)
        plan = dh.plan(s, p, {})
        assert plan.params == dh.shipped_group(bits) and plan.params.exists()
        assert plan.start_generation and plan.rotation_files
        assert plan.cron is False  # dh_rotation defaults to off


def test_generated_waits_for_a_running_generation():
    s, p = setup(dh_source="generated", dh_rotation="on")
    placeholder = sha(dh.shipped_group(3072))
    plan = dh.plan(s, p, {DH_FILE: placeholder, dh.ROTATE_RUNNING: "r"})
    assert plan.params is None and not plan.start_generation and plan.cron is True


def test_generated_restarts_after_an_interrupted_run():
    s, p = setup(dh_source="generated")
    placeholder = sha(dh.shipped_group(3072))
    plan = dh.plan(s, p, {DH_FILE: placeholder})  # no stamp, nothing running
    assert plan.start_generation and plan.params is None


def test_generated_is_done_when_the_stamp_matches_file_and_settings():
    s, p = setup(dh_source="generated")
    files = {DH_FILE: "ab" * 32, dh.ROTATE_STAMP: stamp_sha(3072, "ab" * 32)}
    assert not dh.plan(s, p, files).start_generation
    # the file was replaced by something else since: not ours any more
    assert dh.plan(s, p, {**files, DH_FILE: "cd" * 32}).start_generation
    # another size wanted: the stamp no longer matches
    s4, p4 = setup(dh_source="generated", dh_bits=4096)
    assert dh.plan(s4, p4, files).start_generation


def test_weak_sizes_are_refused_before_any_plan():
    with pytest.raises(SettingsError, match=r"dh_bits=1024.*Logjam"):
        validate({"tls_profile": "legacy-dhe", "dh_source": "generated", "dh_bits": 1024}, "mx1")
    with pytest.raises(SettingsError, match="dh_source"):
        validate({"tls_profile": "legacy-dhe", "dh_source": "dsaparam"}, "mx1")
    # and plan() refuses them too if handed a Settings built some other way
    s, p = setup(dh_source="generated")
    weak = type(s)(**{**s.__dict__, "dh_bits": 1024})
    with pytest.raises(ValueError, match="1024"):
        dh.plan(weak, p, {})


def test_fact_files_cover_every_path_the_plan_reads():
    s, _ = setup(dh_source="generated")
    assert set(dh.dh_fact_files(s)) == {
        DH_FILE,
        dh.ROTATE_BIN,
        dh.ROTATE_CONF,
        dh.ROTATE_STAMP,
        dh.ROTATE_RUNNING,
    }
    other = validate({"dh_file": "/etc/postfix/dh.pem"}, "mx1")
    assert "/etc/postfix/dh.pem" in dh.dh_fact_files(other)


def test_rotate_conf_is_what_the_script_parses():
    s, _ = setup(dh_source="generated", dh_bits=4096)
    lines = [line for line in dh.rotate_conf(s).splitlines() if line.startswith("DH_")]
    assert lines == [f"DH_FILE={DH_FILE}", "DH_BITS=4096"]


# --- shipped groups and the script's check (real openssl) -------------------------------------

needs_openssl = pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")


def openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, input=input, check=False)


@needs_openssl
@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_shipped_files_are_the_rfc7919_groups_in_pkcs3(bits):
    path = dh.shipped_group(bits)
    assert path.read_text().startswith("-----BEGIN DH PARAMETERS-----\n")
    text = openssl("pkeyparam", "-in", str(path), "-noout", "-text").stdout.decode()
    assert f"({bits} bit)" in text and f"GROUP: ffdhe{bits}" in text
    # byte-identical to what openssl makes for the named group
    made = openssl("genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", f"group:ffdhe{bits}")
    assert made.returncode == 0 and made.stdout == path.read_bytes()


def check(path: Path, bits) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(dh.ROTATE_SCRIPT), "--check", str(path), str(bits)],
        capture_output=True,
        text=True,
    )


@needs_openssl
def test_script_check_accepts_safe_prime_pkcs3():
    for bits in (2048, 3072, 4096):
        res = check(dh.shipped_group(bits), bits)
        assert res.returncode == 0, res.stderr


@needs_openssl
def test_script_check_refuses_wrong_size_dsaparam_unsafe_prime_and_junk(tmp_path):
    res = check(dh.shipped_group(3072), 4096)
    assert res.returncode == 1 and "3072-bit parameters, expected 4096" in res.stderr
    res = check(dh.shipped_group(2048), 1024)
    assert res.returncode == 1 and "1024 not allowed" in res.stderr

    dsa = tmp_path / "dsa.pem"  # what `dhparam -dsaparam` makes: X9.42, not loadable by Postfix
    assert openssl("dhparam", "-dsaparam", "-out", str(dsa), "2048").returncode == 0
    res = check(dsa, 2048)
    assert res.returncode == 1 and "not PKCS#3" in res.stderr

    # PKCS#3 with a prime p that is not safe ((p-1)/2 composite): only DH_check can tell
    p = openssl("prime", "-generate", "-bits", "2048", "-hex").stdout.decode().strip()
    cnf = tmp_path / "dh.cnf"
    cnf.write_text(f"asn1=SEQUENCE:dh\n[dh]\np=INTEGER:0x{p}\ng=INTEGER:2\n")
    der = tmp_path / "unsafe.der"
    assert openssl("asn1parse", "-genconf", str(cnf), "-out", str(der), "-noout").returncode == 0
    unsafe = tmp_path / "unsafe.pem"
    assert (
        openssl("dhparam", "-inform", "DER", "-in", str(der), "-out", str(unsafe)).returncode == 0
    )
    assert unsafe.read_text().startswith("-----BEGIN DH PARAMETERS-----")
    res = check(unsafe, 2048)
    assert res.returncode == 1 and "not safe prime" in res.stderr

    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN DH PARAMETERS-----\nAAAA\n-----END DH PARAMETERS-----\n")
    assert check(junk, 2048).returncode == 1
    assert check(tmp_path / "missing.pem", 2048).returncode == 1


def test_script_is_posix_sh():
    for shell in ("sh", "dash", "bash"):
        if shutil.which(shell):
            res = subprocess.run(
                [shell, "-n", str(dh.ROTATE_SCRIPT)], capture_output=True, text=True
            )
            assert res.returncode == 0, (shell, res.stderr)
    assert dh.ROTATE_SCRIPT.stat().st_mode & 0o111, "the script should be executable in git"


# --- issue 12 item 5: where the DH file goes, judged against what the host has -------------------

from tasks.mail_tls import unsupported  # noqa: E402

STOCK_GUARD = [
    "real /etc/ssl/mailtls/dh.pem",
    "dir 0 0 755 /etc/ssl",
    "dir 0 0 755 /etc",
    "dir 0 0 755 /",
    "tls /etc/ssl/certs/ssl-cert-snakeoil.pem /etc/ssl/certs/ssl-cert-snakeoil.pem",
    "tls /etc/ssl/certs/ssl-cert-snakeoil.pem /etc/dovecot/private/dovecot.pem",
    "tls /srv/tls/key.pem /srv/tls/key.pem",
]


def test_host_refusal_accepts_a_plain_root_path():
    assert dh.host_refusal("/etc/ssl/mailtls/dh.pem", STOCK_GUARD) is None


@pytest.mark.parametrize(
    "dh_file,guard,why",
    [
        ("/srv/tls/key.pem", ["real /srv/tls/key.pem"], "uses now (/srv/tls/key.pem)"),
        # the current certificate under another name (Dovecot's link to it)
        ("/srv/cert.pem", ["real /etc/ssl/certs/ssl-cert-snakeoil.pem"], "uses now"),
        (
            "/etc/letsencrypt/live/mx/dh.pem",
            ["link ../../archive/mx/dh1.pem", "real /etc/letsencrypt/archive/mx/dh1.pem"],
            "symlink",
        ),
        (
            "/srv/x/dh.pem",
            ["real /srv/x/dh.pem", "dir 0 0 1777 /srv/x"],
            "writable by others or sticky",
        ),
        ("/srv/x/dh.pem", ["real /srv/x/dh.pem", "dir 0 0 1755 /srv/x"], "sticky"),
        ("/srv/x/dh.pem", ["real /srv/x/dh.pem", "dir 0 0 757 /srv/x"], "writable by others"),
        ("/srv/x/dh.pem", ["real /srv/x/dh.pem", "dir 0 8 2775 /srv/x"], "writable by others"),
        ("/srv/x/dh.pem", ["real /srv/x/dh.pem", "dir 1000 1000 755 /srv/x"], "uid 1000"),
        (
            "/srv/x/dh.pem",
            ["real /srv/x/dh.pem", "dir 0 0 755 /srv/x", "dir 0 0 777 /srv"],
            "/srv is",
        ),
    ],
)
def test_host_refusal(dh_file, guard, why):
    got = dh.host_refusal(
        dh_file, STOCK_GUARD[3:] + guard if guard[0].startswith("link") else guard + STOCK_GUARD[3:]
    )
    assert got and why in got and dh_file in got and "\n" not in got, got


@pytest.mark.parametrize(
    "caps,why",
    [
        (HostCaps(None, (2, 3, 19), (3, 0)), "Postfix is not installed"),
        (HostCaps((3, 5, 18), (2, 3, 19), (3, 0)), "Postfix 3.5.18 is not supported"),
        (HostCaps((2, 11, 0), None, (3, 0)), "Postfix 2.11.0 is not supported"),
        (HostCaps((3, 7, 11), (2, 2, 36), (3, 0)), "Dovecot 2.2 is not supported"),
    ],
)
def test_unsupported_hosts_named_in_one_line(caps, why):
    said = unsupported(caps)
    assert said is not None and why in said, said


def test_supported_hosts():
    assert unsupported(HostCaps((3, 7, 11), (2, 3, 19), (3, 0))) is None
    assert unsupported(HostCaps((3, 10, 1), None, (3, 5))) is None
