"""The deploy on lived-in servers (testhosts/variants.py), every release, with defaults.

One host per (variant, suite), shared by the checks of that variant: shaped, observed (SASL AUTH
on 465/587, a mail, the config), deployed with the real `pyinfra` CLI, observed again, deployed a
second time. Then, for a variant the deploy must converge:
- every TLS port the host serves refuses what the profile forbids (TLS 1.1, TLS 1.2 RSA key
  exchange, TLS 1.2 CBC, DHE) and completes an ECDHE handshake, probed from the controller;
- SASL AUTH still works wherever it worked before; mail is still delivered;
- one master.cf service and one listening socket per port, every port still served;
- Postfix and Dovecot settings that are not TLS policy are exactly what they were;
- the second run changes nothing.
For a variant it must refuse (localconf, protocolssl): the run fails naming the overriding file and line, and
the host's config files, pending reloads and daemons are as they were.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

import probes
import pytest
from probes import Probe

from conftest import PREFIX, _up, run_pyinfra
from testhosts import hosts as th
from testhosts.variants import REFUSES, SASL

# Old-era shapes carry rsyslog (Debian <= 11 installed it): their logs are in mail.log too.
VARIANTS = [
    "legacy465+rsyslog",
    "localconf",
    "protocolssl",
    "hardened2014+rsyslog",
    "postscreen",
    "miab",
    "dms",
    "iredmail",
    "mailcow",
    "dualcert",
    "managesieve",
]


def _names(variant: str) -> list[str]:
    return variant.split("+")


@dataclass
class Snapshot:
    postfix: dict  # non-TLS part (probes.non_tls_postfix)
    master: dict[str, str]  # 'name/type' -> the whole `postconf -M` line
    dovecot: list[str]
    checksums: str
    services: dict[int, list[str]]  # port -> [master.cf services]
    listeners: dict[int, list[str]]  # port -> ['addr process', ...]
    sasl: dict[int, str] = field(default_factory=dict)  # port -> '235 ...' or the failure
    active: list[str] = field(default_factory=list)
    certs: dict[int, list[str]] = field(default_factory=dict)  # port -> ['RSA', 'ECDSA']


def _snapshot(host: th.Host, sasl_ports: Iterable[int] = ()) -> Snapshot:
    state = probes.postfix_state(host)
    return Snapshot(
        postfix=probes.non_tls_postfix(state),
        master={"/".join(line.split()[:2]): line for line in state["master"]},
        dovecot=probes.dovecot_state(host),
        checksums=probes.config_checksums(host),
        services=probes.services_by_port(host),
        listeners=probes.listeners(host),
        sasl={p: probes.sasl_auth(host.address, p) for p in sasl_ports},
        active=probes.daemons_active(host),
        certs=probes.certificate_kinds(host.address, probes.tls_ports(host)),
    )


@dataclass
class Observed:
    """A shaped host, observed before the deploy."""

    host: th.Host
    variant: str
    before: Snapshot


@dataclass
class Lived(Observed):
    """The same host after the first deploy, observed again."""

    deploy: subprocess.CompletedProcess  # the first run
    after: Snapshot
    probes: list[Probe]
    rerun: subprocess.CompletedProcess | None  # the second run, when the first converged

    @property
    def refuses(self) -> tuple[str, str] | None:
        return next((REFUSES[n] for n in _names(self.variant) if n in REFUSES), None)

    @property
    def output(self) -> str:
        return self.deploy.stdout + self.deploy.stderr


def _observe(host: th.Host, variant: str) -> Observed:
    sasl_ports = next((SASL[n] for n in _names(variant) if n in SASL), ())
    before = _snapshot(host, sasl_ports)
    assert all(r.startswith("235") for r in before.sasl.values()), (
        host.name,
        before.sasl,
    )  # the shape works
    probes.deliver(host)
    return Observed(host, variant, before)


def _deploy_and_check(observed: Observed) -> Lived:
    host = observed.host
    deploy = run_pyinfra(host, check=False)
    after = _snapshot(host, observed.before.sasl.keys())
    found = probes.negative_probes(host.address, probes.tls_ports(host))
    lived = Lived(host, observed.variant, observed.before, deploy, after, found, rerun=None)
    print(
        f"{host.name} ({host.suite}, {lived.variant}): deploy exit {deploy.returncode}; probes after it:"
    )
    print("\n".join(f"  {'ok ' if p.ok else 'BAD'} {p}" for p in lived.probes))
    if lived.refuses is None and deploy.returncode == 0:
        lived.rerun = run_pyinfra(host, check=False)
    return lived


@pytest.fixture(scope="module", params=VARIANTS)
def lived(request, suite) -> Lived:
    """One variant on one release: shaped, observed, deployed, observed."""
    variant = request.param
    host = _up([f"{PREFIX}lv{VARIANTS.index(variant)}{suite[0]}:{suite}+{variant}"])[0]
    request.addfinalizer(lambda: th.down([host.name]))
    return _deploy_and_check(_observe(host, variant))


def _converging(lived: Lived) -> Lived:
    one = lived
    if one.refuses:
        pytest.skip(
            f"{one.variant}: the deploy must refuse here (test_refuses_naming_the_override)"
        )
    return one


def _refusing(lived: Lived) -> Lived:
    one = lived
    if not one.refuses:
        pytest.skip(f"{one.variant}: the deploy must converge here")
    return one


# --- variants the deploy converges ---------------------------------------------------------


def test_deploy_succeeds(lived):
    one = _converging(lived)
    assert one.deploy.returncode == 0, one.output[-6000:]


def test_negative_probes_on_every_tls_port(lived):
    one = _converging(lived)
    served = sorted(p for p in one.before.listeners if p in probes.TLS_PORTS)
    assert {p.port for p in one.probes} >= set(served), (served, one.after.listeners)
    bad = [str(p) for p in one.probes if not p.ok]
    assert not bad, "\n".join(bad)


def test_sasl_auth_still_works(lived):
    one = _converging(lived)
    if not one.before.sasl:
        pytest.skip(f"{one.variant}: no SASL on 465/587")
    assert one.after.sasl == one.before.sasl, {"before": one.before.sasl, "after": one.after.sasl}


def test_one_service_and_one_listener_per_port(lived):
    one = _converging(lived)
    shared = {p: s for p, s in one.after.services.items() if len(s) > 1}
    assert not shared, f"master.cf services sharing a port: {shared}"
    doubled = {
        p: addrs for p, addrs in one.after.listeners.items() if len(addrs) != len(set(addrs))
    }
    assert not doubled, doubled
    lost = set(one.before.listeners) - set(one.after.listeners)
    assert not lost, f"ports no longer served: {sorted(lost)}"
    assert one.after.active == ["active", "active"], one.after.active


def test_non_tls_settings_unchanged(lived):
    one = _converging(lived)
    before, after = one.before.postfix, one.after.postfix
    assert after["main"] == before["main"], {
        "removed": sorted(set(before["main"]) - set(after["main"])),
        "added": sorted(set(after["main"]) - set(before["main"])),
    }
    changed = {
        svc: (line, after["master"].get(svc))
        for svc, line in before["master"].items()
        if after["master"].get(svc) != line
    }
    assert not changed, f"master.cf services changed beyond TLS options (before, after): {changed}"
    # Services that are not on a mail-facing TLS port (content-filter re-injection, milters...)
    # are left exactly as they are, TLS options included.
    port_of = {svc: port for port, svcs in one.before.services.items() for svc in svcs}
    other = {
        key: line
        for key, line in one.before.master.items()
        if key.endswith("/inet") and port_of.get(key[:-5]) not in probes.TLS_PORTS
    }
    touched = {
        key: (line, one.after.master.get(key))
        for key, line in other.items()
        if one.after.master.get(key) != line
    }
    assert not touched, f"services off the TLS ports changed (before, after): {touched}"
    assert one.after.dovecot == one.before.dovecot, "\n".join(
        [f"- {line}" for line in one.before.dovecot if line not in one.after.dovecot]
        + [f"+ {line}" for line in one.after.dovecot if line not in one.before.dovecot]
    )


def test_the_same_certificates_served(lived):
    """Certificate settings unset: every TLS port serves the key types it served before (a
    submission port the deploy opened: what port 25 served, main.cf's); on the dual-certificate
    shape, RSA and ECDSA on every one of them."""
    one = _converging(lived)
    before = one.before.certs
    expected = {p: before.get(p, before.get(25)) for p in one.after.certs}
    assert one.after.certs == expected, (before, one.after.certs)
    if "dualcert" in _names(one.variant):
        assert one.before.certs and all(
            kinds == ["RSA", "ECDSA"] for kinds in one.before.certs.values()
        ), one.before.certs


def test_mail_delivered_after_deploy(lived):
    one = _converging(lived)
    probes.deliver(one.host)


def test_second_run_changes_nothing(lived):
    one = _converging(lived)
    assert one.rerun is not None, "first run failed: " + one.output[-3000:]
    assert one.rerun.returncode == 0, (one.rerun.stdout + one.rerun.stderr)[-4000:]
    assert "No changes" in one.rerun.stderr, one.rerun.stderr[-3000:]
    grand = next(line for line in one.rerun.stderr.splitlines() if "Grand total" in line).split()
    assert grand[3] == "-", grand  # Success column: nothing changed


# --- variants the deploy must refuse -------------------------------------------------------


def test_refuses_naming_the_override(lived):
    one = _refusing(lived)
    assert one.refuses is not None  # _refusing() skipped the others
    path, line = one.refuses
    accepted = "\n".join(str(p) for p in one.probes if not p.ok)
    assert one.deploy.returncode != 0, (
        f"deploy reported success, while:\n{accepted}\n" + one.output[-3000:]
    )
    out = one.output
    assert path in out, f"error does not name {path}:\n{out[-4000:]}"
    number = one.host.ssh(f"grep -nF {line!r} {path}").stdout.split(":", 1)[0]
    assert line in out or re.search(rf"{re.escape(path)}(:| line ){number}\b", out), (
        f"error does not name the line ({number}: {line}):\n{out[-4000:]}"
    )


def test_refusal_leaves_nothing_changed(lived):
    one = _refusing(lived)
    assert one.after.checksums == one.before.checksums, "config files or pending marks changed"
    assert one.after.listeners == one.before.listeners
    assert one.after.active == ["active", "active"], one.after.active
