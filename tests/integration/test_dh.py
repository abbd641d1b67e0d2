"""DH parameters and their rotation on real Debian 12 and 13 hosts: DHE handshakes of the
configured size, the rotation job forced as cron would run it, kill -9 in mid-generation, two
rotations at once, and a weak size refused before anything changes."""

from __future__ import annotations

import hashlib
import re
import subprocess
import time

from conftest import run_pyinfra
from tasks.dh import plan as dh
from tasks.facts import DH_ROTATE_LOCK, MailHost
from tasks.host_facts import HostFacts

DH_FILE = "/etc/ssl/mailtls/dh.pem"
CONFIG = "/etc/postfix/main.cf /etc/postfix/master.cf /etc/dovecot/conf.d/*"
DHE_PORTS = {25: "smtp", 587: "smtp", 993: None}
LEGACY = ("--data", "tls_profile=legacy-dhe")


def s_client(address: str, port: int, *args: str) -> str:
    starttls = ["-starttls", s] if (s := DHE_PORTS.get(port)) else []
    argv = ["openssl", "s_client", "-connect", f"{address}:{port}", *starttls, *args]
    res = subprocess.run(argv, input="", capture_output=True, text=True, timeout=30)
    return res.stdout + res.stderr


def dhe_bits(address: str, port: int) -> int | None:
    """Bits of the DH group a DHE-only TLS 1.2 client gets, None when the handshake fails."""
    out = s_client(address, port, "-tls1_2", "-cipher", "DHE-RSA-AES256-GCM-SHA384")
    if not re.search(r"^New, TLSv1\.2, Cipher is DHE-RSA-AES256-GCM-SHA384", out, re.M):
        return None
    m = re.search(r"Server Temp Key: DH, (\d+) bits", out)
    return int(m.group(1)) if m else None


def assert_dhe_everywhere(host, bits: int) -> None:
    got = {port: dhe_bits(host.address, port) for port in DHE_PORTS}
    assert got == {port: bits for port in DHE_PORTS}, got


def checksums(host, paths: str) -> str:
    return host.ssh(
        f"sha256sum {paths} 2>&1; ls -la /etc/ssl/mailtls 2>&1; crontab -l 2>&1", check=False
    ).stdout


def remote_sha(host, path: str = DH_FILE) -> str:
    return host.ssh(f"sha256sum < {path} | cut -d' ' -f1").stdout.strip()


def local_sha(bits: int) -> str:
    return hashlib.sha256(dh.shipped_group(bits).read_bytes()).hexdigest()


def rotate_log(host) -> str:
    """mailtls-dh-rotate's syslog lines, from the journal (test hosts have no mail.log, as Debian 12/13)."""
    out = host.ssh("journalctl -q --no-pager -o cat -t mailtls-dh-rotate", check=False).stdout
    return "".join(
        f"mailtls-dh-rotate: {line}\n" for line in out.splitlines()
    )  # as syslog writes it


def log_count(host, pattern: str) -> int:
    """Mail-facility lines matching `pattern`, from the journal (`-o short`: syslog's layout,
    the identifier with its [pid])."""
    out = host.ssh("journalctl -q --no-pager -o short SYSLOG_FACILITY=2", check=False).stdout
    return len([line for line in out.splitlines() if re.search(pattern, line)])


def generating(host) -> bool:
    return host.ssh(f"test -e {dh.ROTATE_RUNNING}", check=False).returncode == 0


def wait_until(what, timeout: float, step: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(step)
    return what()


def no_changes(res) -> bool:
    grand = next(line for line in res.stderr.splitlines() if "Grand total" in line).split()
    return grand[3] == "-"


def cron_command(host) -> str:
    """The rotation job's command, exactly as the deploy wrote it into root's crontab."""
    lines = [
        line
        for line in host.ssh("crontab -l", check=False).stdout.splitlines()
        if line.strip() and not line.startswith("#") and "mailtls-dh-rotate" in line
    ]
    assert len(lines) == 1, lines
    return lines[0].split(None, 5)[5]


def run_like_cron(host, command: str, timeout: float = 900):
    """Run a crontab command with cron's environment (PATH=/usr/bin:/bin, nothing else)."""
    return host.ssh(
        f"env -i HOME=/root LOGNAME=root SHELL=/bin/sh PATH=/usr/bin:/bin "
        f"/bin/sh -c '{command}'; echo rc=$?",
        check=False,
        timeout=timeout,
    )


def test_fixed_group_handshakes_weak_size_refused_and_group_switch(fresh_host, suite):
    host = fresh_host(suite)
    stock = checksums(host, CONFIG)

    bad = run_pyinfra(
        host,
        "deploy.py",
        *LEGACY,
        "--data",
        "dh_source=generated",
        "--data",
        "dh_bits=1024",
        check=False,
    )
    assert bad.returncode != 0
    assert re.search(r"dh_bits=1024.*Logjam", bad.stdout + bad.stderr), bad.stderr[-2000:]
    assert checksums(host, CONFIG) == stock

    res = run_pyinfra(host, "deploy.py", *LEGACY)
    if suite == "trixie":  # Postfix 3.10 deprecates smtpd_tls_dh1024_param_file: say so
        assert "deprecates smtpd_tls_dh1024_param_file" in res.stderr, res.stderr[-3000:]
    assert remote_sha(host) == local_sha(3072)
    assert_dhe_everywhere(host, 3072)
    # a client offering DHE first still gets ECDHE: the server's order wins
    out = s_client(
        host.address,
        25,
        "-tls1_2",
        "-cipher",
        "DHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384",
    )
    assert "Cipher is ECDHE-RSA-AES256-GCM-SHA384" in out, out
    assert re.search(r"Server Temp Key: (X25519|ECDH)", s_client(host.address, 993)), "no ECDHE"
    assert host.ssh(f"test -e {dh.ROTATE_BIN}", check=False).returncode == 1
    assert "mailtls" not in host.ssh("crontab -l", check=False).stdout

    assert no_changes(run_pyinfra(host, "deploy.py", *LEGACY))

    deployed = checksums(host, f"{CONFIG} {DH_FILE}")
    bad = run_pyinfra(host, "deploy.py", *LEGACY, "--data", "dh_bits=1024", check=False)
    assert bad.returncode != 0 and "dh_bits=1024" in bad.stderr
    assert checksums(host, f"{CONFIG} {DH_FILE}") == deployed

    # Only the DH file changes: both daemons must serve the new group after this one run.
    run_pyinfra(host, "deploy.py", *LEGACY, "--data", "dh_source=ffdhe4096")
    assert remote_sha(host) == local_sha(4096)
    assert_dhe_everywhere(host, 4096)


def test_generated_parameters_and_forced_rotation(fresh_host, suite):
    host = fresh_host(suite)
    data = (
        *LEGACY,
        "--data",
        "dh_source=generated",
        "--data",
        "dh_bits=2048",
        "--data",
        "dh_rotation=on",
    )
    run_pyinfra(host, "deploy.py", *data)
    # The deploy did not wait: a valid file is there at once, the generation runs behind it.
    # That is the placeholder, or already the generated file: 2048 bits can take under a
    # second, and the rotation's unit then still runs its commit (check, reload, verify).
    assert (
        remote_sha(host) == local_sha(2048)
        or host.ssh(f"{dh.ROTATE_BIN} --check {DH_FILE} 2048", check=False).returncode == 0
    )
    assert dhe_bits(host.address, 25) == 2048
    assert f"17 4 * * 0 {dh.ROTATE_BIN}" in host.ssh("crontab -l").stdout
    assert no_changes(run_pyinfra(host, "deploy.py", *data))  # also while generating

    assert wait_until(lambda: not generating(host), timeout=900), "generation never ended"
    generated = remote_sha(host)
    assert generated != local_sha(2048), rotate_log(host)
    assert host.ssh(f"{dh.ROTATE_BIN} --check {DH_FILE} 2048").returncode == 0
    assert log_count(host, r"mailtls-dh-rotate(\[\d+\])?: installed new 2048-bit") == 1
    assert no_changes(run_pyinfra(host, "deploy.py", *data))
    assert_dhe_everywhere(host, 2048)

    # Force the cron job, in cron's bare environment.
    reloads = (
        log_count(host, r"postfix/master\[[0-9]+\]: reload"),
        log_count(host, r"dovecot(\[\d+\])?: master: Warning: SIGHUP received"),
    )
    out = run_like_cron(host, cron_command(host)).stdout
    assert out.strip().endswith("rc=0"), out
    rotated = remote_sha(host)
    assert rotated not in (generated, local_sha(2048))
    assert host.ssh(f"{dh.ROTATE_BIN} --check {DH_FILE} 2048").returncode == 0
    assert (
        log_count(host, r"postfix/master\[[0-9]+\]: reload"),
        log_count(host, r"dovecot(\[\d+\])?: master: Warning: SIGHUP received"),
    ) == (reloads[0] + 1, reloads[1] + 1)
    assert_dhe_everywhere(host, 2048)
    assert host.ssh("ls -A /etc/ssl/mailtls").stdout.split() == ["dh.pem"]  # no temp left
    assert no_changes(run_pyinfra(host, "deploy.py", *data))  # the stamp follows the rotation

    # A schedule with '/' (pyinfra edits the crontab with sed), then rotation off.
    run_pyinfra(host, "deploy.py", *data, "--data", "dh_rotation_schedule=*/30 3 * * 1")
    tab = host.ssh("crontab -l").stdout.splitlines()
    assert [line for line in tab if "mailtls" in line] == [
        f"# pyinfra-name={dh.CRON_NAME}",
        f"*/30 3 * * 1 {dh.ROTATE_BIN}",
    ], tab
    run_pyinfra(host, "deploy.py", *data, "--data", "dh_rotation=off")
    assert "mailtls" not in host.ssh("crontab -l", check=False).stdout  # job and its name
    assert remote_sha(host) == rotated


def test_kill_9_and_concurrent_rotations(fresh_host, suite):
    host = fresh_host(suite)
    data = (*LEGACY, "--data", "dh_source=generated", "--data", "dh_bits=4096")
    run_pyinfra(host, "deploy.py", *data)
    placeholder = local_sha(4096)
    assert remote_sha(host) == placeholder

    # 1. kill -9 the generation the deploy started (a systemd unit).
    assert generating(host), "4096-bit generation ended within seconds?"
    pid = host.ssh(f"systemctl show -p MainPID --value {dh.ROTATE_UNIT}").stdout.strip()
    host.ssh(f"kill -9 {pid}")
    assert wait_until(lambda: not generating(host), timeout=30)
    assert remote_sha(host) == placeholder
    assert_dhe_everywhere(host, 4096)

    # 2. kill -9 a cron-style run (no systemd around it) in mid-generation.
    pid = host.ssh(f"setsid {dh.ROTATE_BIN} >/dev/null 2>&1 </dev/null & echo $!").stdout.strip()
    assert wait_until(
        lambda: host.ssh(f"pgrep -P {pid} -x openssl", check=False).returncode == 0,
        timeout=30,
        step=0.5,
    )
    child = host.ssh(f"pgrep -P {pid} -x openssl").stdout.strip()
    host.ssh(f"kill -9 {pid}")
    # openssl dies with its parent (no orphan burning CPU, holding nothing)
    assert wait_until(lambda: host.ssh(f"kill -0 {child}", check=False).returncode != 0, timeout=10)
    assert remote_sha(host) == placeholder
    left = host.ssh("ls -A /etc/ssl/mailtls").stdout.split()
    assert "dh.pem" in left and all(
        n.startswith(".dh.pem.mailtls-tmp.") for n in left if n != "dh.pem"
    )
    assert host.ssh(f"{dh.ROTATE_BIN} --check {DH_FILE} 4096").returncode == 0

    # 3. The next runs: two at once (2048 bits to keep the test short). One generates, the other
    #    sees the lock and leaves at once; the killed run's temp file is gone afterwards.
    before = log_count(host, r"mailtls-dh-rotate(\[\d+\])?:")
    out = host.ssh(
        f"({dh.ROTATE_BIN} -b 2048; echo A=$?) & ({dh.ROTATE_BIN} -b 2048; echo B=$?) & wait",
        timeout=900,
        check=False,
    ).stdout
    codes = sorted(re.findall(r"[AB]=(\d+)", out))
    assert codes == ["0", "75"], out
    log = [line for line in rotate_log(host).splitlines() if "mailtls-dh-rotate" in line][before:]
    words = [line.split("mailtls-dh-rotate: ", 1)[1].split(" ")[0] for line in log]
    assert sorted(words) == ["another", "generating", "installed"], log
    assert [w for w in words if w != "another"] == ["generating", "installed"], log  # one run
    assert host.ssh("ls -A /etc/ssl/mailtls").stdout.split() == ["dh.pem"]
    assert remote_sha(host) != placeholder
    assert_dhe_everywhere(host, 2048)

    # The deploy still wants 4096 bits: it notices and starts a generation again.
    res = run_pyinfra(host, "deploy.py", *data)
    assert "Generate 4096-bit DH parameters in the background" in res.stderr
    assert generating(host)


def test_rotation_goes_through_the_safety_net(fresh_host, suite):
    """The rotation reloads through mailtls-apply: check, reload, Dovecot's reload confirmed in its
    log, a TLS probe, rollback. Here Dovecot's config on disk has a key that belongs to another
    certificate: `doveconf -x -n` passes, the reload breaks TLS on 993. A reload of its own would
    report the new parameters installed; the safety net's probe catches it and the run fails."""
    host = fresh_host(suite)
    data = (*LEGACY, "--data", "dh_source=generated", "--data", "dh_bits=2048")
    run_pyinfra(host, "deploy.py", *data)
    assert wait_until(lambda: not generating(host), timeout=900), "generation never ended"
    installed = log_count(host, "mailtls-dh-rotate: installed new")
    stamp = host.ssh(f"cat {dh.ROTATE_STAMP}").stdout
    key = "ssl_key" if suite == "bookworm" else "ssl_server_key_file"
    value = "</etc/ssl/private/other.key" if suite == "bookworm" else "/etc/ssl/private/other.key"
    host.ssh(
        "openssl genrsa -out /etc/ssl/private/other.key 2048 2>/dev/null && "
        f"echo '{key} = {value}' > /etc/dovecot/conf.d/98-other-key.conf && doveconf -x -n >/dev/null"
    )
    res = run_like_cron(host, dh.ROTATE_BIN)
    out = res.stderr + res.stdout
    assert res.stdout.strip().endswith("rc=1"), out
    assert "dovecot rejected the new configuration" in out and "TLS handshake" in out, out
    assert log_count(host, "mailtls-dh-rotate: installed new") == installed
    assert host.ssh(f"cat {dh.ROTATE_STAMP}").stdout == stamp  # the deploy will try again


def read_fact(host) -> HostFacts:
    """The deploy's MailHost fact, run on the host as the deploy runs it (sh), parsed."""
    res = host.ssh("sh -s", input=MailHost().command(files=()), timeout=120)
    return MailHost().process(res.stdout.splitlines())


def test_the_fact_sees_a_rotation_without_making_one_skip(fresh_host):
    """With a reload pending the fact asks whether a rotation runs (it then leaves the reload to
    it). It must tell without taking the rotation's lock: a rotation that cron starts while the
    fact holds it finds it taken and skips its week (exit 75, "nothing done")."""
    host = fresh_host("bookworm")
    data = (*LEGACY, "--data", "dh_source=generated", "--data", "dh_bits=2048")
    run_pyinfra(host, "deploy.py", *data)
    assert wait_until(lambda: not generating(host), timeout=600), "generation never ended"
    host.ssh("/usr/local/sbin/mailtls-apply begin postfix /etc/postfix/main.cf")  # a reload pending
    lock = DH_ROTATE_LOCK
    rotate = f"{dh.ROTATE_BIN} -f /root/dh-test.pem -b 4096"  # minutes: killed long before

    # The instant a command the fact runs under `flock LOCK` lasts, stretched so that a rotation
    # can start in it (root's PATH has /usr/local/bin first: flock execs this `true`).
    host.ssh(
        "printf '#!/bin/sh\\ntouch /run/fact-in-lock\\nsleep 5\\n' >/usr/local/bin/true && "
        "chmod 0755 /usr/local/bin/true"
    )
    fact = subprocess.Popen(
        host.ssh_argv("sh -s"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert fact.stdin is not None
    fact.stdin.write(MailHost().command(files=()))
    fact.stdin.close()
    wait_until(
        lambda: (
            fact.poll() is not None
            or host.ssh("test -e /run/fact-in-lock", check=False).returncode == 0
        ),
        timeout=30,
        step=0.1,
    )
    # Started while the fact runs (or just after): it must get the lock and generate.
    res = host.ssh(f"timeout 3 {rotate}; echo rc=$?", check=False, timeout=60)
    fact.wait(timeout=60)
    host.ssh("rm -f /usr/local/bin/true /run/fact-in-lock")
    assert res.stdout.strip().endswith("rc=124"), (res.stdout, res.stderr, rotate_log(host))

    # And it still sees a rotation that runs, and only while it runs.
    host.ssh(f"setsid {rotate} >/dev/null 2>&1 </dev/null & echo $! >/run/rotation")
    assert wait_until(
        lambda: host.ssh(f"flock -n {lock} true", check=False).returncode != 0, timeout=30, step=0.2
    ), "the rotation never took its lock"
    assert read_fact(host).busy == (lock,)
    host.ssh("kill $(cat /run/rotation)")
    assert wait_until(
        lambda: host.ssh(f"flock -n {lock} true", check=False).returncode == 0, timeout=30, step=0.2
    )
    fact_now = read_fact(host)
    assert fact_now.busy == () and fact_now.pending == {"postfix"}


def test_rotation_job_removal_keeps_the_crontab_when_crontab_l_fails(fresh_host):
    """Turning rotation off removes the job, then its `# pyinfra-name=` line (ops.cron_name_absent).
    If `crontab -l` fails at that moment, root's crontab must stay as it is (the run fails),
    never be replaced by what an empty listing leaves; a crontab that holds only the name line
    still ends up without it."""
    host = fresh_host("bookworm")
    data = (*LEGACY, "--data", "dh_source=generated", "--data", "dh_bits=2048")
    run_pyinfra(host, "deploy.py", *data, "--data", "dh_rotation=on")
    assert wait_until(lambda: not generating(host), timeout=600), "generation never ended"
    name = f"# pyinfra-name={dh.CRON_NAME}"
    others = ["5 1 * * * /usr/bin/true job-1", "# the admin's comment", "7 2 * * 1 /bin/true job-2"]
    host.ssh("{ crontab -l; cat; } | crontab -", input="".join(f"{line}\n" for line in others))
    # `crontab -l` fails (a transient error) in the command that removes the name line: a shim
    # first in root's PATH (/usr/local/bin) fails -l for the shell running that command only.
    host.ssh(
        "cat >/usr/local/bin/crontab && chmod 0755 /usr/local/bin/crontab",
        input=(
            "#!/bin/sh\n"
            'if [ "$1" = -l ] && tr "\\0" " " </proc/$PPID/cmdline | grep -qF -- "-vxF"; then\n'
            '    echo "crontab: cannot read the spool (test)" >&2; exit 1\n'
            "fi\n"
            'exec /usr/bin/crontab "$@"\n'
        ),
    )
    assert host.ssh("command -v crontab").stdout.strip() == "/usr/local/bin/crontab"
    res = run_pyinfra(host, "deploy.py", *data, "--data", "dh_rotation=off", check=False)
    tab = host.ssh("/usr/bin/crontab -l").stdout.splitlines()
    assert all(line in tab for line in others), (tab, res.stderr[-3000:])
    assert name in tab  # left as it was (the job itself is gone: pyinfra's own operation)
    assert res.returncode != 0, res.stderr[-3000:]

    host.ssh("rm /usr/local/bin/crontab")
    run_pyinfra(host, "deploy.py", *data, "--data", "dh_rotation=off")
    assert host.ssh("crontab -l").stdout.splitlines() == others
    host.ssh("crontab -", input=f"{name}\n")  # nothing but the name line
    run_pyinfra(host, "deploy.py", *data, "--data", "dh_rotation=off")
    assert "mailtls" not in host.ssh("crontab -l", check=False).stdout
