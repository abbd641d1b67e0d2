"""The harness itself: real hosts of both releases, reachable and serving TLS from the controller."""

import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import PREFIX
from testhosts import hosts as th

EXPECTED = {
    "bookworm": {"postfix": "3.7.", "dovecot": "2.3.", "openssl": "OpenSSL 3.0."},
    "trixie": {"postfix": "3.10.", "dovecot": "2.4.", "openssl": "OpenSSL 3.5."},
}


def _handshake(address: str, port: int, starttls: str | None = None) -> str:
    argv = ["openssl", "s_client", "-connect", f"{address}:{port}", "-brief"]
    if starttls:
        argv += ["-starttls", starttls]
    res = subprocess.run(argv, input="", capture_output=True, text=True, timeout=20)
    return res.stdout + res.stderr


def test_versions_and_system_state(stock, suite):
    host = stock[suite]
    out = host.ssh(
        "systemctl is-system-running; postconf -h mail_version; dovecot --version; "
        "openssl version; hostname -f; test -e /var/log/mail.log && echo maillog || echo journal-only; "
        "systemctl is-active rsyslog || true"
    ).stdout
    state, postfix, dovecot, openssl, fqdn, maillog, rsyslog = out.splitlines()
    assert state == "running"
    assert postfix.startswith(EXPECTED[suite]["postfix"])
    assert dovecot.startswith(EXPECTED[suite]["dovecot"])
    assert openssl.startswith(EXPECTED[suite]["openssl"])
    assert fqdn == host.fqdn
    assert (maillog, rsyslog) == (
        "journal-only",
        "inactive",
    )  # as Debian 12/13 install: no syslog daemon


def test_tls_from_controller(stock, suite):
    host = stock[suite]
    for port, starttls in ((25, "smtp"), (993, None)):
        out = _handshake(host.address, port, starttls)
        assert "CONNECTION ESTABLISHED" in out, out
        assert "Protocol version: TLSv1.3" in out, out


def test_reloads_succeed(stock, suite):
    out = stock[suite].ssh("postfix reload 2>&1 && doveadm reload && echo reloaded").stdout
    assert out.strip().endswith("reloaded")


def _leftovers(name: str, index: int) -> list[str]:
    found = []
    if (
        f"mailtls-{name}"
        in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    ):
        found.append("netns")
    if (
        f"mtls{index}"
        in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    ):
        found.append("veth")
    if os.path.ismount(th.ROOTS_DIR / name):
        found.append("mount")
    for cg in th._cgroups(name):
        if cg.exists():
            found.append(f"cgroup {cg}")
    return found


def test_teardown_is_clean_and_up_recovers_after_kill():
    name = f"{PREFIX}harness"
    host = th.up([f"{name}:bookworm"])[0]
    # a crashed run: the nspawn dies with SIGKILL, leaving mount, netns and cgroups behind
    os.kill(host.pid, signal.SIGKILL)
    time.sleep(0.5)
    assert _leftovers(host.name, host.index), "a killed container should leave something to clean"
    again = th.up([f"{name}:bookworm"])[0]  # must clear the leftovers first
    assert again.ssh("systemctl is-system-running").stdout.strip() == "running"
    th.down([name])
    assert _leftovers(again.name, again.index) == []
    assert not (th.STATE_DIR / f"{name}.json").exists()
    assert th.get(name) is None
    # no process of the container survives (the nspawn and everything in its cgroups)
    assert not Path(f"/proc/{again.pid}").exists() or not th._is_our_nspawn(again.pid, name)
