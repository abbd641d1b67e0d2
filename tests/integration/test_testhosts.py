"""The harness itself: real hosts of every release, reachable and serving TLS from the controller."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import PREFIX
from testhosts import hosts as th

EXPECTED = {
    "bookworm": {"postfix": "3.7.", "dovecot": "2.3.", "openssl": "OpenSSL 3.0."},
    "trixie": {"postfix": "3.10.", "dovecot": "2.4.", "openssl": "OpenSSL 3.5."},
    "forky": {"postfix": "3.11.", "dovecot": "2.4.", "openssl": "OpenSSL 3.6."},
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
    )  # as Debian 12/13/14 install: no syslog daemon


def test_tls_from_controller(stock, suite):
    host = stock[suite]
    for port, starttls in ((25, "smtp"), (993, None)):
        out = _handshake(host.address, port, starttls)
        assert "CONNECTION ESTABLISHED" in out, out
        assert "Protocol version: TLSv1.3" in out, out


def test_reloads_succeed(stock, suite):
    out = stock[suite].ssh("postfix reload 2>&1 && doveadm reload && echo reloaded").stdout
    assert out.strip().endswith("reloaded")


def _leftovers(host: th.Host) -> list[str]:
    """What of `host` (by the names its registry recorded) is still there."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    if host.netns in netns.split():
        found.append("netns")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    if re.search(rf"^\d+: mtls{host.index}[@:]", links, re.M):
        found.append("veth")
    if os.path.ismount(host.root):
        found.append("mount")
    for cg in host.cgroups:
        if cg.exists():
            found.append(f"cgroup {cg}")
    return found


def test_teardown_is_clean_and_up_recovers_after_kill():
    name = f"{PREFIX}harness"
    host = th.up([f"{name}:bookworm"])[0]
    # a crashed run: the nspawn dies with SIGKILL, leaving mount, netns and cgroups behind
    os.kill(host.pid, signal.SIGKILL)
    time.sleep(0.5)
    assert _leftovers(host), "a killed container should leave something to clean"
    again = th.up([f"{name}:bookworm"])[0]  # must clear the leftovers first
    assert again.ssh("systemctl is-system-running").stdout.strip() == "running"
    th.down([name])
    assert _leftovers(again) == []
    assert not (th.STATE_DIR / f"{name}.json").exists()
    assert th.get(name) is None
    # no process of the container survives (the nspawn and everything in its cgroups)
    assert not Path(f"/proc/{again.pid}").exists() or not th._is_our_nspawn(again.pid, again)


def _cli(registry: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m testhosts ARGS` with its own registry (MAILTLS_STATE_DIR), as another checkout
    or another tool would run it."""
    res = subprocess.run(
        [sys.executable, "-m", "testhosts", *args],
        cwd=Path(th.__file__).resolve().parent.parent,
        env=dict(os.environ, MAILTLS_STATE_DIR=str(registry)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, f"testhosts {' '.join(args)}: {res.returncode}\n{res.stderr}"
    return res


def _registered(registry: Path, name: str) -> th.Host:
    data = json.loads((registry / f"{name}.json").read_text())
    return th.Host(**data | {"variants": tuple(data.get("variants", ()))})


def _alive(host: th.Host) -> bool:
    return Path(f"/proc/{host.pid}").exists() and (
        host.ssh("systemctl is-system-running", check=False, timeout=30).stdout.strip()
        in ("running", "degraded")
    )


def test_down_all_and_up_stop_only_their_own_registry(tmp_path):
    """Two registries on one machine (two checkouts, another tool): `down --all`, `up` of a name
    the other one uses too, and the clean-up of a crashed host touch only their own hosts."""
    a, b = tmp_path / "a", tmp_path / "b"
    mine, shared = f"{PREFIX}rega", f"{PREFIX}regx"
    try:
        _cli(b, "up", f"{shared}:bookworm")
        theirs = _registered(b, shared)
        _cli(a, "up", f"{mine}:bookworm")
        own = _registered(a, mine)
        _cli(a, "down", "--all")
        assert _alive(theirs), "down --all in one registry stopped another registry's host"
        assert not (a / f"{mine}.json").exists() and _leftovers(own) == []

        # The same name in both: up in A must neither stop B's host nor share its resources.
        _cli(a, "up", f"{shared}:bookworm")
        twin = _registered(a, shared)
        assert _alive(theirs) and _alive(twin) and twin.address != theirs.address
        # A crashed host of A: its leftovers are A's to clear, B's host of that name stays.
        os.kill(twin.pid, signal.SIGKILL)
        time.sleep(0.5)
        assert _leftovers(twin), "a killed container should leave something to clean"
        _cli(a, "down", "--all")
        assert _leftovers(twin) == []
        assert _alive(theirs), "clearing a crashed host stopped another registry's host"
    finally:
        _cli(a, "down", "--all")
        _cli(b, "down", "--all")
    assert _leftovers(theirs) == []
