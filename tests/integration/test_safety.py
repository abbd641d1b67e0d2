"""Safety on real Debian 12 and 13 hosts: bad input changes nothing, rejected changes are rolled
back, an interrupted run's reload still happens, a cut connection or a dead host never leaves a
host worse than it was and a re-run converges."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import PYINFRA, ROOT, printed, run_pyinfra

CONFIG = "/etc/postfix/main.cf /etc/postfix/master.cf /etc/dovecot/conf.d/*"
APPLY = "/usr/local/sbin/mailtls-apply"
STATE = "/var/lib/mailtls"


def snapshot(host) -> str:
    """Checksums of every config file we may touch, what exists of ours, pending reloads."""
    return host.ssh(
        f"sha256sum {CONFIG}; for p in {APPLY} {STATE} /etc/ssl/mailtls; do "
        "[ -e $p ] && echo present $p; done; ls -A /var/lib/mailtls/pending 2>/dev/null; "
        "ls -A /etc/dovecot/conf.d /etc/postfix | grep -i mailtls-; true"
    ).stdout


def pending(host) -> str:
    return host.ssh("ls -A /var/lib/mailtls/pending 2>/dev/null; true").stdout.strip()


Session = tuple[str, str, str]  # protocol, cipher, sha256 of the server certificate


def _session(sock: ssl.SSLSocket) -> Session:
    """(protocol, cipher, certificate SHA-256) of an established TLS socket."""
    version, cipher, cert = sock.version(), sock.cipher(), sock.getpeercert(True)
    assert version is not None and cipher is not None and cert is not None
    return version, cipher[0], hashlib.sha256(cert).hexdigest()


def tls(address: str, port: int, max_version: ssl.TLSVersion | None = None) -> Session | None:
    """One handshake from the controller (STARTTLS on 25): (protocol, cipher, sha256 of the
    server certificate), or None when it fails."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if max_version:
        ctx.maximum_version = max_version
    try:
        if port == 25:
            with smtplib.SMTP(address, 25, timeout=20) as smtp:
                smtp.starttls(context=ctx)
                assert isinstance(smtp.sock, ssl.SSLSocket)
                return _session(smtp.sock)
        with (
            socket.create_connection((address, port), timeout=20) as raw,
            ctx.wrap_socket(raw) as sock,
        ):
            return _session(sock)
    except (ssl.SSLError, smtplib.SMTPException, OSError):
        return None


def established(address: str, port: int) -> Session:
    """tls() where the handshake must succeed: fails the test when it does not."""
    session = tls(address, port)
    assert session is not None, f"no TLS handshake with {address}:{port}"
    return session


def served(host) -> dict:
    """What ports 25 and 993 serve now: default handshake, TLS 1.2-capped handshake."""
    return {
        port: (tls(host.address, port), tls(host.address, port, ssl.TLSVersion.TLSv1_2))
        for port in (25, 993)
    }


def _eventually(check, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def output(res: subprocess.CompletedProcess) -> str:
    return res.stdout + res.stderr


def grand_total(res) -> list[str]:
    return next(line for line in res.stderr.splitlines() if "Grand total" in line).split()


# --- bad input: refused before any command, nothing changes ---------------------------------------

# (--data arguments, what the one-line error must say). The host's name is checked as well.
BAD_DATA = [
    (["dh_bits=1024"], "dh_bits=1024: 1024-bit DH is breakable"),
    (["dh_source=generated", "dh_bits=512"], "dh_bits=512"),
    (["tls_profile=old"], "tls_profile='old': expected one of intermediate, modern, legacy-dhe"),
    (
        ["mailtls_tls_profle=modern"],
        "unknown setting 'mailtls_tls_profle' (did you mean mailtls_tls_profile?)",
    ),
    (["MAILTLS_DH_BITS=4096"], "unknown setting 'MAILTLS_DH_BITS' (did you mean mailtls_dh_bits?)"),
    (
        ["tls_profile=modern", "mailtls_tls_profile=intermediate"],
        "mailtls_tls_profile='intermediate' and its old name tls_profile='modern' disagree",
    ),
    (
        ["postfix_cert_file=/etc/ssl/c.pem;reboot", "postfix_key_file=/etc/ssl/k.pem"],
        "postfix_cert_file='/etc/ssl/c.pem;reboot': expected an absolute path",
    ),
    (
        ["dovecot_cert_file=/etc/ssl/$(touch /tmp/pwned).pem", "dovecot_key_file=/etc/ssl/k.pem"],
        "dovecot_cert_file='/etc/ssl/$(touch /tmp/pwned).pem'",
    ),
    (
        ["dovecot_key_file=/etc/ssl/k.pem ssl = no", "dovecot_cert_file=/etc/ssl/c.pem"],
        "dovecot_key_file='/etc/ssl/k.pem ssl = no'",
    ),
    (["dh_file=/etc/ssl/mailtls/../../passwd.pem"], "dh_file='/etc/ssl/mailtls/../../passwd.pem'"),
    (["dh_file=/etc/postfix/main.cf"], "dh_file='/etc/postfix/main.cf': expected a .pem file"),
    (["dh_rotation_schedule=61 4 * * 0"], "dh_rotation_schedule='61 4 * * 0': minute field"),
    (["dh_rotation_schedule=17 4 * * 0;reboot"], "dh_rotation_schedule="),
    (["dh_rotation=true"], "dh_rotation=true needs dh_source=generated"),
    (["postfix_cert_file=/etc/ssl/c.pem"], "set postfix_cert_file and postfix_key_file together"),
    (["tls_pq_hybrid=maybe"], "tls_pq_hybrid='maybe': expected true/false"),
    (["dh_source=dsaparam"], "dh_source='dsaparam'"),
]


def hosts_file_line(host, extra: str) -> str:
    ssh = " ".join(f"{k}={v}" for k, v in host.pyinfra_data().items() if k != "ssh_hostname")
    return f"{host.address} {ssh} {extra}\n"


def test_bad_input_is_refused_and_changes_nothing(fresh_host, suite, tmp_path):
    """Validation runs in deploy.py for every host before any operation: pyinfra has connected
    (SSH only, no command) but nothing ran. pyinfra 3.10 offers no hook between loading the
    inventory (with --data merged) and connecting: config.py runs before the inventory exists and
    State.init() drops callback handlers registered earlier."""
    host = fresh_host(suite)
    before = snapshot(host)
    assert f"present {APPLY}" not in before and f"present {STATE}" not in before, before
    runs = []  # (what, expected error line, argv, env)
    for args, expected in BAD_DATA:
        env = dict(os.environ, MAILTLS_TESTHOSTS=host.name)
        env.pop("MAILTLS_HOSTS", None), env.pop("MAILTLS_HOSTS_FILE", None)
        runs.append(
            (
                " ".join(args),
                f"invalid settings: {host.name}: {expected}",
                [a for arg in args for a in ("--data", arg)],
                env,
            )
        )
    # A hosts file (MAILTLS_HOSTS_FILE) with bad key=value data: the host is named by its address.
    for n, (extra, expected) in enumerate(
        (
            ("dh_bits=512", "dh_bits=512: 512-bit DH is breakable"),
            ("tls_profile=legacy", "tls_profile='legacy'"),
            (
                "mailtls_dovecot_cert_fil=/etc/ssl/c.pem",
                "unknown setting 'mailtls_dovecot_cert_fil' (did you mean mailtls_dovecot_cert_file?)",
            ),
        )
    ):
        hosts = tmp_path / f"hosts{n}.txt"
        hosts.write_text("# test\n" + hosts_file_line(host, extra))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILTLS_")}
        env["MAILTLS_HOSTS_FILE"] = str(hosts)
        runs.append(
            (f"hosts file: {extra}", f"invalid settings: {host.address}: {expected}", [], env)
        )

    def run(case) -> str | None:
        what, expected, args, env = case
        res = subprocess.run(
            [PYINFRA, "-y", "inventory.py", "deploy.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        out = output(res)
        lines = [line for line in out.splitlines() if "invalid settings:" in line]
        if res.returncode == 0:
            return f"{what}: exit 0\n{out[-2000:]}"
        if len(lines) != 1 or expected not in lines[0]:
            return f"{what}: expected one error line with {expected!r}:\n{out[-2000:]}"
        if "Starting operation" in out or "Gathering facts" in out:
            return f"{what}: something ran on the host:\n{out[-2000:]}"
        return None

    # Several at a time: nothing may change whatever the order, and it keeps the test short.
    with ThreadPoolExecutor(4) as pool:
        failures = [f for f in pool.map(run, runs) if f]
    assert len(runs) >= 10
    assert snapshot(host) == before
    assert not host.ssh("ls /tmp/pwned", check=False).stdout, "a path was run by a shell"
    assert not failures, "\n\n".join(failures)


def test_one_bad_host_stops_the_whole_run(fresh_host, tmp_path):
    """Two hosts in a hosts file, only the second one's data is bad: neither is touched."""
    good, bad = fresh_host("bookworm"), fresh_host("trixie")
    before = {h.name: snapshot(h) for h in (good, bad)}
    hosts = tmp_path / "hosts.txt"
    hosts.write_text(
        hosts_file_line(good, "tls_profile=modern") + hosts_file_line(bad, "dh_bits=1024")
    )
    # the hosts file names the hosts (it beats the test-host list run_pyinfra also sets)
    res = run_pyinfra([good, bad], env={"MAILTLS_HOSTS_FILE": str(hosts)}, check=False, timeout=120)
    assert res.returncode != 0, output(res)[-3000:]
    assert f"invalid settings: {bad.address}: dh_bits=1024" in output(res), output(res)[-3000:]
    for h in (good, bad):
        assert snapshot(h) == before[h.name], h.name


# --- rollback ---------------------------------------------------------------------------------------


def _put(host, path: str, data: bytes, mode: str) -> None:
    subprocess.run(
        host.ssh_argv(f"umask 077; cat > {path} && chmod {mode} {path}"),
        input=data,
        check=True,
        timeout=60,
    )


def _new_pair(tmp_path: Path, name: str) -> tuple[bytes, bytes]:
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "3",
            "-subj",
            f"/CN={name}.mailtls.test",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return cert.read_bytes(), key.read_bytes()


def test_rejected_changes_are_rolled_back_and_the_old_config_keeps_serving(
    fresh_host, suite, tmp_path
):
    host = fresh_host(suite)
    run_pyinfra(host)
    before_files, before_tls = snapshot(host), served(host)
    for port, (default, tls12) in before_tls.items():
        assert default and default[0] == "TLSv1.3" and tls12 and "ECDHE" in tls12[1], (
            port,
            default,
            tls12,
        )

    # A key that belongs to another certificate, and a certificate that is not there.
    _, other_key = _new_pair(tmp_path, "other")
    _put(host, "/etc/ssl/private/other.key", other_key, "0600")
    snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem"
    cases = [
        (
            "postfix",
            {
                "postfix_cert_file": "/etc/ssl/certs/missing.pem",
                "postfix_key_file": "/etc/ssl/private/missing.key",
            },
            "failed after reload",
        ),
        (
            "postfix",
            {"postfix_cert_file": snakeoil, "postfix_key_file": "/etc/ssl/private/other.key"},
            "key values mismatch",
        ),
        (
            "dovecot",
            {
                "dovecot_cert_file": "/etc/ssl/certs/missing.pem",
                "dovecot_key_file": "/etc/ssl/private/missing.key",
            },
            "doveconf -x -n failed",
        ),
        (
            "dovecot",
            {"dovecot_cert_file": snakeoil, "dovecot_key_file": "/etc/ssl/private/other.key"},
            "failed after reload",
        ),
    ]
    for daemon, data, why in cases:
        # Without the certificate watcher, which would refuse these pairs before any config
        # change (tests/integration/test_renewals.py): here the daemons themselves reject them.
        data = {**data, "mailtls_cert_watch": "false"}
        args = [a for k, v in data.items() for a in ("--data", f"{k}={v}")]
        res = run_pyinfra(host, "deploy.py", *args, check=False)
        out = output(res)
        assert res.returncode != 0, (data, out[-3000:])
        said = [
            line
            for line in out.splitlines()
            if f"mailtls: {daemon} rejected the new configuration" in line
        ]
        assert said and why in said[0] and "rolled back" in said[0], (data, out[-3000:])
        assert snapshot(host) == before_files, data
        assert served(host) == before_tls, data
        assert pending(host) == "", data
        # the daemon still answers after its own rollback, and the log says what happened
        log = host.ssh("journalctl -q --no-pager -t mailtls-apply -n 1 -o cat").stdout
        assert "rolled back" in log, log

    # A good change after the rollbacks goes through, and then stays put.
    cert, key = _new_pair(tmp_path, "mx")
    _put(host, "/etc/ssl/certs/mx.pem", cert, "0644")
    _put(host, "/etc/ssl/private/mx.key", key, "0600")
    good = [
        "--data",
        "postfix_cert_file=/etc/ssl/certs/mx.pem",
        "--data",
        "postfix_key_file=/etc/ssl/private/mx.key",
        "--data",
        "dovecot_cert_file=/etc/ssl/certs/mx.pem",
        "--data",
        "dovecot_key_file=/etc/ssl/private/mx.key",
    ]
    run_pyinfra(host, "deploy.py", *good)
    fingerprint = hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.decode())).hexdigest()
    for port in (25, 993):
        now = tls(host.address, port)
        assert now and now[2] == fingerprint != before_tls[port][0][2], (port, now)
    again = run_pyinfra(host, "deploy.py", *good)
    assert grand_total(again)[3] == "-", again.stderr[-3000:]
    assert pending(host) == ""


@pytest.mark.parametrize("variant", [None, "rsyslog"], ids=["journal", "rsyslog"])
def test_reload_errors_are_read_from_the_log_journald_only_or_with_rsyslog(
    fresh_host, suite, tmp_path, variant
):
    """mailtls-apply reads what a reload logged: on a journald-only host (Debian 12/13 as
    installed) and where rsyslog also writes /var/log/mail.log. Dovecot accepts a key of another
    certificate at reload; only its log says why the probe then fails."""
    host = fresh_host(suite, variant)
    assert host.ssh("test -e /var/log/mail.log && echo yes || echo no").stdout.strip() == (
        "yes" if variant else "no"
    )
    _, other_key = _new_pair(tmp_path, "other")
    _put(host, "/etc/ssl/private/other.key", other_key, "0600")
    res = run_pyinfra(
        host,
        "deploy.py",
        "--data",
        "dovecot_cert_file=/etc/ssl/certs/ssl-cert-snakeoil.pem",
        "--data",
        "dovecot_key_file=/etc/ssl/private/other.key",
        "--data",
        "mailtls_cert_watch=false",
        check=False,
    )  # the daemon must see it
    said = [
        line
        for line in output(res).splitlines()
        if "mailtls: dovecot rejected the new configuration" in line
    ]
    assert res.returncode != 0 and said, output(res)[-3000:]
    # the hint in parentheses comes from since_log: Dovecot's own words about the key
    assert re.search(r"failed after reload \(.*(key|certificate).*\)", said[0], re.I), said[0]
    assert pending(host) == ""


# --- pending reload -----------------------------------------------------------------------------


def test_a_reload_left_pending_by_a_dead_run_happens_on_the_next_run(fresh_host, suite):
    """Reproduce a run that died between `mailtls-apply begin` + the change and `commit`: the
    loaded config is the old one, the files on disk are already what the deploy wants. Only the
    pending mark tells the next run (whose own checks see nothing to change) to reload."""
    host = fresh_host(suite)
    run_pyinfra(host)
    conf = "/etc/dovecot/conf.d/99-mailtls.conf"
    assert "ssl_min_protocol = TLSv1.2" in host.ssh(f"cat {conf}").stdout
    # The "previous" config, loaded: TLS 1.3 only on 25 and 993. Postfix: in master.cf, which
    # only a reload makes the master read again (every new smtpd reads main.cf by itself).
    host.ssh(
        "postconf -P 'smtp/inet/smtpd_tls_protocols=>=TLSv1.3' && postfix reload && "
        f"sed -i 's/^ssl_min_protocol = TLSv1.2$/ssl_min_protocol = TLSv1.3/' {conf} && doveadm reload"
    )
    # Login/smtpd processes forked before a reload may take a connection or two more: wait
    # until the TLS 1.3-only config is the one that answers.
    for port in (25, 993):
        assert _eventually(
            lambda port=port: tls(host.address, port, ssl.TLSVersion.TLSv1_2) is None
        ), port
    # The dead run: begin (backup + mark), then the change on disk, then nothing.
    host.ssh(
        f"{APPLY} begin postfix /etc/postfix/main.cf /etc/postfix/master.cf && "
        "postconf -PX smtp/inet/smtpd_tls_protocols && "
        f"{APPLY} begin dovecot {conf} && "
        f"sed -i 's/^ssl_min_protocol = TLSv1.3$/ssl_min_protocol = TLSv1.2/' {conf}"
    )
    assert pending(host).split() == ["dovecot", "postfix"]
    time.sleep(2)
    for port in (25, 993):  # still the old config: TLS 1.2 refused
        for _ in range(3):
            assert tls(host.address, port, ssl.TLSVersion.TLSv1_2) is None, port
        assert established(host.address, port)[0] == "TLSv1.3", port

    res = run_pyinfra(host)
    lines = res.stderr.splitlines()

    def result(op: str) -> str:
        start = next(
            i for i, line in enumerate(lines) if "Starting operation" in line and op in line
        )
        return lines[start + 1]

    # Nothing to change on disk, yet both daemons were committed: the mark did it.
    assert "No changes" in result("Postfix TLS settings"), res.stderr[-3000:]
    assert "No changes" in result("Dovecot TLS settings"), res.stderr[-3000:]
    assert "Success" in result("Postfix, Dovecot: check, reload, probe"), res.stderr[-3000:]
    for port in (25, 993):  # the new config is loaded now
        now = tls(host.address, port, ssl.TLSVersion.TLSv1_2)
        assert now and now[0] == "TLSv1.2" and "ECDHE" in now[1], (port, now)
    assert pending(host) == ""
    assert grand_total(run_pyinfra(host))[3] == "-"


def test_a_reload_pending_while_a_dh_rotation_runs_is_left_to_it(fresh_host, suite):
    """A rotation marks both daemons pending, installs its file and commits them. A re-run whose
    fact lands in that window must not commit (a second reload, a change where there is none);
    once no rotation runs, a mark still there is committed by the deploy."""
    host = fresh_host(suite)
    run_pyinfra(host)
    lock = "/var/lib/mailtls/lock/dh-rotate.lock"
    # A rotation holding its lock (as mailtls-dh-rotate does for its whole run), between its
    # begin and its commit.
    host.ssh(
        f"mkdir -p -m 0700 {lock.rsplit('/', 1)[0]} && "
        f"{{ setsid flock {lock} sleep 600 >/dev/null 2>&1 </dev/null & echo $! >/run/holder; }} && "
        f"{APPLY} begin dovecot /etc/dovecot/conf.d/99-mailtls.conf"
    )
    assert _eventually(lambda: host.ssh(f"flock -n {lock} true", check=False).returncode != 0), (
        "lock not taken"
    )
    res = run_pyinfra(host)
    assert grand_total(res)[3] == "-", res.stderr[-3000:]
    assert "left to the DH rotation that is running" in res.stderr, res.stderr[-3000:]
    assert pending(host) == "dovecot"

    host.ssh("kill -- -$(cat /run/holder)")  # flock and its sleep (setsid: one process group)
    assert _eventually(lambda: host.ssh(f"flock -n {lock} true", check=False).returncode == 0)
    res = run_pyinfra(host)  # the rotation died: the mark is the deploy's to commit now
    assert grand_total(res)[3] == "1", res.stderr[-3000:]
    assert pending(host) == ""
    assert grand_total(run_pyinfra(host))[3] == "-"


# --- connection cut mid-run; unreachable host ----------------------------------------------------


def run_and_kill(host, at: str, *args: str, timeout: float = 300) -> str:
    """Start a deploy (with `args`), SIGKILL pyinfra (its SSH connection dies with it) as soon as
    the operation `at` starts: a run that died between begin and commit. Returns what pyinfra
    printed."""
    env = dict(os.environ, MAILTLS_TESTHOSTS=host.name)
    for key in ("MAILTLS_HOSTS", "MAILTLS_HOSTS_FILE"):
        env.pop(key, None)
    proc = subprocess.Popen(
        [PYINFRA, "-y", "inventory.py", "deploy.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    deadline = time.monotonic() + timeout
    try:
        assert proc.stderr is not None  # stderr=PIPE
        for line in proc.stderr:
            seen.append(line)
            if "Starting operation" in line and at in line:
                proc.send_signal(signal.SIGKILL)
                break
            assert time.monotonic() < deadline, "".join(seen)
    finally:
        if proc.poll() is None and proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before {at!r}:\n{''.join(seen)}"
    return "".join(seen)


def test_connection_cut_mid_run_then_rerun_converges(fresh_host, deployed, suite):
    host = fresh_host(suite)
    # Killed right after the Postfix config changed (a commit is due), then in a second run
    # right after Dovecot's changed too: each time mid-change, with the connection gone.
    run_and_kill(host, "Dovecot TLS settings")
    run_and_kill(host, "Postfix, Dovecot: check, reload, probe")
    res = run_pyinfra(host)
    assert pending(host) == "", res.stderr[-3000:]
    reference = deployed[suite]  # a clean, uninterrupted run of the same deploy
    assert (
        host.ssh(f"cd / && sha256sum {CONFIG}").stdout
        == reference.ssh(f"cd / && sha256sum {CONFIG}").stdout
    )
    assert snapshot(host).replace(host.name, "") == snapshot(reference).replace(reference.name, "")
    for port in (25, 993):
        assert established(host.address, port)[:2] == established(reference.address, port)[:2], port
    assert not host.ssh("ls /etc/dovecot/conf.d /etc/postfix | grep mailtls-new; true").stdout
    again = run_pyinfra(host)
    assert grand_total(again)[3] == "-", again.stderr[-3000:]


def test_unreachable_host_fails_alone_and_the_other_converges(fresh_host):
    good, gone = fresh_host("bookworm"), fresh_host("trixie")
    # Unreachable, but its address stays registered to us: a stopped host's address could be
    # handed to someone else's new host before the deploy below reaches it. An `unreachable`
    # route for that one address: refused on the controller itself, no packet leaves it.
    route = ["ip", "route", "add", "unreachable", f"{gone.address}/32"]
    subprocess.run(route, check=True)
    try:
        started = time.monotonic()
        res = run_pyinfra([good, gone], check=False, timeout=300)
        took = time.monotonic() - started
    finally:
        subprocess.run(["ip", "route", "del", "unreachable", f"{gone.address}/32"], check=True)
    out = output(res)
    assert res.returncode != 0, out[-3000:]
    assert re.search(rf"\[{gone.name}\] +Could not connect .*{re.escape(gone.address)}", out), out[
        -3000:
    ]
    assert printed(out, good, "Success"), out[-3000:]
    assert took < 120, took
    assert pending(good) == ""
    assert established(good.address, 25)[0] == "TLSv1.3"
    assert established(good.address, 993)[0] == "TLSv1.3"
    assert grand_total(run_pyinfra(good))[3] == "-"


def test_a_just_written_main_cf_is_dated_back_so_postfix_does_not_wait(fresh_host, suite):
    """Postfix re-reads a main.cf younger than ~2 s every 0.3 s (dict_load_file_xt); our writes
    are atomic, so `mailtls-apply written` dates a just-written main.cf 2 s back. An older one
    keeps its time, and so does every other file."""
    host = fresh_host(suite)
    run_pyinfra(host)
    main, conf = "/etc/postfix/main.cf", "/etc/dovecot/conf.d/99-mailtls.conf"
    host.ssh(f"touch -d '2020-01-02 03:04:05' {conf}")
    # The writes come between `begin` and `written`, as the deploy's do; the clock is read
    # around them (a loaded machine may tick it anywhere in between).
    out = host.ssh(
        f"{APPLY} begin postfix {main} && {APPLY} begin dovecot {conf} && "
        f"before=$(date +%s) && touch {main} {conf} && "
        f"{APPLY} written postfix {main} && {APPLY} written dovecot {conf} && "
        f"echo $before $(date +%s) $(stat -c %Y {main}) $(stat -c %Y {conf})"
    ).stdout.split()
    before, after, main_time, conf_time = (int(x) for x in out)
    assert before <= conf_time <= after, out  # Dovecot's file: left as written
    # main.cf, written in the same instant: dated 2 s back from when `written` saw it
    assert before - 2 <= main_time <= conf_time - 1, out
    old = "2020-01-02 03:04:05"
    host.ssh(f"touch -d '{old}' {main} && {APPLY} written postfix {main}")
    assert host.ssh(f"date -r {main} '+%F %T'").stdout.strip() == old  # not made younger
    run_pyinfra(host)  # commits what begin marked pending
    assert pending(host) == ""
    # and Postfix takes it at once: no "cool down" pause in a verbose postconf
    host.ssh(f"touch {main} && {APPLY} begin postfix {main} && {APPLY} written postfix {main}")
    assert "cool down" not in host.ssh("postconf -vv -n 2>&1 >/dev/null").stdout
    assert "cool down" in host.ssh(f"touch {main}; postconf -vv -n 2>&1 >/dev/null").stdout
    run_pyinfra(host)
    assert pending(host) == ""
