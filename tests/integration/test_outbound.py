"""Outbound TLS: a deployed host's Postfix smtp client delivering real mail to real peers.

One module of hosts, deployed once, with defaults: a Debian 12 and a Debian 13 sender, and a
second Debian 13 host as the PQ-capable Postfix peer. Before the deploy each sender gets what a
lived-in server has and the deploy must keep: a transport map (`transport_maps =
texthash:/etc/postfix/mailtls-peers`) that routes domains to
- the SMTP peers of tests/peers.py on the controller's side of the sender's /30, one per kind
  (fs13, fs12, rsa, plain, recorder), on high ports;
- the other test hosts' port 25, reachable only for this module: a /32 route in each host to
  the other via its controller address, IPv4 forwarding on exactly those hosts' veths.
Then every sender submits one message per destination with `sendmail`, and the tests check what
arrived and how: the ClientHello the recorder saw on the wire (its size: one packet or two; its
groups and key shares), the sessions the sender logged, and the audit's outbound ledger.

Run with `-s` (or `-rP`) to see the figures each test prints.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import peers
import pytest

from conftest import PQ_SUITES, PREFIX, _up, run_pyinfra
from testhosts import hosts as th

# Hosts of every release in one module fixture: one xdist scope (tests/conftest.py, CROSS_RELEASE).
SENDERS = ("bookworm", "trixie", "forky")
PORTS = {kind: 10025 + i for i, kind in enumerate(peers.KINDS)}
PQ_SHARE_PEER, PQ_SHARE_PORT = "pqshare", 10030  # a recorder of its own for the pq-share test
MAP = "/etc/postfix/mailtls-peers"
WAIT = 60.0  # seconds for submitted mail to arrive, per batch
# Postfix to Postfix, (sender, receiver): "pq" is the second Debian 13 host.
POSTFIX_PAIRS = (("trixie", "bookworm"), ("trixie", "pq"), ("bookworm", "pq"), ("forky", "pq"))
ONE_PACKET = 1400  # bytes: a ClientHello that fits one TCP segment on a 1,500-byte path
# What the recorder's OpenSSL (the controller's, 3.0) does in TLS 1.3: a ClientHello with no
# key share for one of these gets a HelloRetryRequest (one round trip more).
CONTROLLER_GROUPS = (0x001D, 0x0017, 0x001E, 0x0019, 0x0018, 0x0100, 0x0101, 0x0102)

# --- what the module sets up -----------------------------------------------------------------


@dataclass(frozen=True)
class Logged:
    """One TLS session as the sending Postfix logged it."""

    destination: str  # name[ip]:port, as Postfix names it
    protocol: str
    cipher: str
    group: str | None  # key-exchange, logged for TLS 1.3 only
    # ServerHellos the client read (at smtp_tls_loglevel 2): 2 = a HelloRetryRequest came first.
    server_hellos: int | None

    @property
    def round_trips(self) -> str:
        if self.server_hellos is None:
            return "not logged"
        return "1 (no HRR)" if self.server_hellos == 1 else f"{self.server_hellos} (HRR)"


@dataclass
class Outbound:
    hosts: dict[str, th.Host]  # bookworm, trixie, forky (the senders), pq (a Debian 13 peer)
    peer_sets: dict[str, dict[str, peers.Peer]]  # sender suite -> peer name -> peer
    tag: str
    deploy: subprocess.CompletedProcess
    transport_before: dict[str, str]  # sender suite -> transport_maps and the map's checksum
    transport_after: dict[str, str]
    arrived: dict[str, dict[str, peers.Delivery]] = field(default_factory=dict)
    postfix_arrived: dict[tuple[str, str], bool] = field(default_factory=dict)
    logged: dict[str, list[Logged]] = field(default_factory=dict)  # sender suite -> sessions

    def subject(self, sender: str, to: str) -> str:
        return f"outbound {self.tag} {sender} {to}"

    def peer(self, sender: str, name: str) -> peers.Peer:
        return self.peer_sets[sender][name]

    def logged_to(self, sender: str, address: str, port: int) -> list[Logged]:
        return [s for s in self.logged[sender] if s.destination.endswith(f"[{address}]:{port}")]


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


@contextlib.contextmanager
def routed(pairs: list[tuple[th.Host, th.Host]]) -> Iterator[None]:
    """The hosts of each pair reach each other's address, and nothing else: a /32 route inside
    each host (its netns) via its controller address, and IPv4 forwarding on exactly these hosts'
    veths (per interface, as `sysctl -w net.ipv4.conf.VETH.forwarding=1` sets it; the
    machine's net.ipv4.ip_forward and every other interface stay as they are). Forwarding is
    decided by the interface a packet comes in on, so both veths of a pair need it. Given back
    on the way out, whatever happened."""
    hosts = {h.name: h for pair in pairs for h in pair}
    knobs = {h.veth: Path(f"/proc/sys/net/ipv4/conf/{h.veth}/forwarding") for h in hosts.values()}
    before = {veth: knob.read_text().strip() for veth, knob in knobs.items()}
    routes = [(a, b) for x, y in pairs for a, b in ((x, y), (y, x))]
    try:
        for a, b in routes:
            _run(
                "ip", "-n", a.netns, "route", "add", f"{b.address}/32", "via", a.controller_address
            )
        for knob in knobs.values():
            knob.write_text("1")
        yield
    finally:
        for veth, knob in knobs.items():
            with contextlib.suppress(OSError):
                knob.write_text(before[veth])
        for a, b in routes:
            subprocess.run(
                ["ip", "-n", a.netns, "route", "del", f"{b.address}/32"], capture_output=True
            )


def _transport(host: th.Host) -> str:
    return host.ssh(f"postconf -n transport_maps; sha256sum {MAP}").stdout


def _submit(host: th.Host, messages: list[tuple[str, str]]) -> None:
    """(recipient, subject) each as its own message, submitted with sendmail in one SSH call."""
    script = "set -e\n"
    for rcpt, subject in messages:
        script += (
            f"/usr/sbin/sendmail -t -f root <<'MAILTLS_EOF'\nFrom: root@{host.fqdn}\n"
            f"To: {rcpt}\nSubject: {subject}\nMessage-ID: <{uuid.uuid4().hex}@{host.fqdn}>\n\n"
            f"{subject}\nMAILTLS_EOF\n"
        )
    host.ssh(script, timeout=60)


def _arrived_on(host: th.Host, subject: str, timeout: float = WAIT) -> bool:
    """Whether the message reached mailtest's mailbox on `host`, waiting at most `timeout`."""
    wait = (
        f'timeout {timeout:.0f} sh -c \'until grep -qxF "Subject: {subject}" /var/mail/mailtest '
        "2>/dev/null; do sleep 0.2; done'"
    )
    return host.ssh(wait, check=False, timeout=timeout + 30).returncode == 0


_JOURNAL_LINE = re.compile(r"^\S+ \S+ ([\w./-]+)\[(\d+)\]: (.*)$")
_ESTABLISHED = re.compile(
    r"TLS connection established to (\S+?): (TLSv[\d.]+) with cipher (\S+)"
    r"(?: \(\d+/\d+ bits\))?(?:.*? key-exchange (\S+))?"
)


def logged_sessions(lines: list[str]) -> list[Logged]:
    """The smtp client's TLS sessions in `journalctl -o short-iso` lines, with the ServerHellos
    each read where smtp_tls_loglevel 2 logged them (OpenSSL's handshake states, per process).
    As Debian 13 logged its delivery to Debian 12 before the outbound change:

    >>> at = "2026-12-07T14:32:31+00:00 mx postfix/smtp[1163]: "
    >>> hello, to = "SSL_connect:SSLv3/TLS read server hello", "10.213.2.2[10.213.2.2]:25"
    >>> (s,) = logged_sessions([at + f"setting up TLS connection to {to}", at + hello, at + hello,
    ...     at + f"Untrusted TLS connection established to {to}: TLSv1.3 with cipher "
    ...     "TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange x25519 server-signature RSA-PSS"])
    >>> s.destination, s.group, s.round_trips
    ('10.213.2.2[10.213.2.2]:25', 'x25519', '2 (HRR)')
    """
    hellos: dict[str, int | None] = {}
    out = []
    for line in lines:
        m = _JOURNAL_LINE.match(line)
        if not m:
            continue
        pid, msg = m.group(2), m.group(3)
        if msg.startswith("setting up TLS connection to "):
            hellos[pid] = 0
        elif msg == "SSL_connect:SSLv3/TLS read server hello" and hellos.get(pid) is not None:
            hellos[pid] = (hellos[pid] or 0) + 1
        elif e := _ESTABLISHED.search(msg):
            out.append(
                Logged(e.group(1), e.group(2), e.group(3), e.group(4), hellos.pop(pid, None))
            )
    return out


def _journal(host: th.Host) -> list[str]:
    return host.ssh(
        "journalctl -q --no-pager -o short-iso SYSLOG_IDENTIFIER=postfix/smtp"
    ).stdout.splitlines()


@pytest.fixture(scope="module")
def outbound(tmp_path_factory) -> Iterator[Outbound]:
    """Hosts started, shaped (transport map), deployed with defaults, mail delivered: see the
    module's docstring. Everything is undone when the module is done."""
    started = _up(
        [
            f"{PREFIX}obb:bookworm",
            f"{PREFIX}obt:trixie",
            f"{PREFIX}obf:forky",
            f"{PREFIX}obq:trixie",
        ]
    )
    with contextlib.ExitStack() as stack:
        stack.callback(th.down, [h.name for h in started])
        hosts = dict(zip((*SENDERS, "pq"), started, strict=True))
        certs = peers.Certificates.make(tmp_path_factory.mktemp("peer-certs"))
        peer_sets: dict[str, dict[str, peers.Peer]] = {}
        for suite in SENDERS:
            host = hosts[suite]
            wanted = {kind: (kind, PORTS[kind]) for kind in peers.KINDS}
            if suite in PQ_SUITES:
                wanted[PQ_SHARE_PEER] = ("recorder", PQ_SHARE_PORT)
            peer_sets[suite] = {
                name: stack.enter_context(
                    peers.Peer(kind, host.controller_address, port, certs, name=f"{name}.peer.test")
                )
                for name, (kind, port) in wanted.items()
            }
            # The lived-in part: a transport map, not TLS policy, that the deploy must keep.
            lines = [f"{p.name} smtp:[{p.address}]:{p.port}" for p in peer_sets[suite].values()] + [
                f"{hosts[to].fqdn} smtp:[{hosts[to].address}]:25"
                for frm, to in POSTFIX_PAIRS
                if frm == suite
            ]
            host.ssh(
                f"cat > {MAP} && postconf -e transport_maps=texthash:{MAP} && postfix reload",
                input="\n".join(lines) + "\n",
            )
        before = {s: _transport(hosts[s]) for s in SENDERS}

        stack.enter_context(routed([(hosts[a], hosts[b]) for a, b in POSTFIX_PAIRS]))
        for role, host in hosts.items():
            partners = [hosts[b if a == role else a] for a, b in POSTFIX_PAIRS if role in (a, b)]
            shown = subprocess.run(
                ["ip", "-n", host.netns, "route", "show"], capture_output=True, text=True
            ).stdout
            # The host's own /30 and the /32s of its Postfix peers, nothing more.
            assert sorted(r.split()[0] for r in shown.splitlines() if r.strip()) == sorted(
                [f"10.213.{host.index}.0/30"] + [p.address for p in partners]
            ), shown
        for frm, to in POSTFIX_PAIRS:
            a, b = hosts[frm], hosts[to]
            reach = a.ssh(f"timeout 5 bash -c '</dev/tcp/{b.address}/25'", check=False)
            assert reach.returncode == 0, f"{a.name} cannot reach {b.address}:25: {reach.stderr}"

        deploy = run_pyinfra(started)
        outbound = Outbound(
            hosts,
            peer_sets,
            uuid.uuid4().hex[:8],
            deploy,
            before,
            {s: _transport(hosts[s]) for s in SENDERS},
        )

        # One message to each peer kind, from each sender, at the deploy's own log level.
        for suite in SENDERS:
            _submit(
                hosts[suite],
                [
                    (f"mailtest@{kind}.peer.test", outbound.subject(suite, kind))
                    for kind in peers.KINDS
                ],
            )
        for suite in SENDERS:
            outbound.arrived[suite] = {}
            for kind in peers.KINDS:
                with contextlib.suppress(TimeoutError):  # the tests say what did not arrive
                    outbound.arrived[suite][kind] = outbound.peer(suite, kind).wait(
                        outbound.subject(suite, kind), WAIT
                    )

        # Postfix to Postfix, with smtp_tls_loglevel 2 for the while (OpenSSL's handshake states:
        # a HelloRetryRequest shows as a second ServerHello read), then the deploy's 1 again.
        for suite in SENDERS:
            hosts[suite].ssh("postconf -e smtp_tls_loglevel=2 && postfix reload")
        try:
            for suite in SENDERS:
                pairs = [to for frm, to in POSTFIX_PAIRS if frm == suite]
                _submit(
                    hosts[suite],
                    [(f"mailtest@{hosts[to].fqdn}", outbound.subject(suite, to)) for to in pairs],
                )
            for frm, to in POSTFIX_PAIRS:
                outbound.postfix_arrived[(frm, to)] = _arrived_on(
                    hosts[to], outbound.subject(frm, to)
                )
        finally:
            for suite in SENDERS:
                hosts[suite].ssh("postconf -e smtp_tls_loglevel=1 && postfix reload")
        outbound.logged = {s: logged_sessions(_journal(hosts[s])) for s in SENDERS}
        yield outbound


@dataclass(frozen=True)
class Audit:
    run: subprocess.CompletedProcess
    result: dict

    @property
    def smtp(self) -> dict:
        return self.result["log_report"]["services"]["postfix/smtp"]

    def destination(self, address: str, port: int) -> dict:
        """The ledger's entry for address:port, whatever name Postfix logged it under."""
        found = {
            k: v for k, v in self.smtp["destinations"].items() if k.endswith(f"[{address}]:{port}")
        }
        assert len(found) == 1, (address, port, sorted(self.smtp["destinations"]))
        return next(iter(found.values()))

    def warnings(self) -> list[str]:
        """Every warning in the JSON, wherever the audit put it, and its printed ones."""
        found: list[str] = []

        def walk(value: object, key: str = "") -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(v, k)
            elif isinstance(value, list):
                if "warning" in key:
                    found.extend(str(v) for v in value)
                else:
                    for v in value:
                        walk(v, key)

        walk(self.result)
        printed = self.run.stdout + self.run.stderr
        return found + [line for line in printed.splitlines() if "warn" in line.lower()]


@pytest.fixture(scope="module")
def audited(outbound, tmp_path_factory) -> dict[str, Audit]:
    """The audit of both senders, after the deliveries, in one run. The peers listen on the
    controller's own address, which the audit leaves out of its log report as "the auditing
    controller" by default: mailtls_audit_exclude_self=false so that the ledger sees them."""
    directory = tmp_path_factory.mktemp("audit")
    senders = [outbound.hosts[s] for s in SENDERS]
    res = run_pyinfra(
        senders,
        "audit.py",
        "--data",
        "mailtls_audit_exclude_self=false",
        check=False,
        timeout=300,
        env={"MAILTLS_AUDIT_JSON": str(directory / "{host}.json")},
    )
    audits = {}
    for suite, host in zip(SENDERS, senders, strict=True):
        path = directory / f"{host.name}.json"
        assert path.exists(), (
            f"no JSON for {host.name}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        )
        audits[suite] = Audit(res, json.loads(path.read_text()))
    return audits


# --- the tests -------------------------------------------------------------------------------


def test_the_deploy_keeps_the_transport_map(outbound, suite):
    assert outbound.deploy.returncode == 0
    after = outbound.transport_after[suite]
    assert f"transport_maps = texthash:{MAP}" in after
    assert after == outbound.transport_before[suite]


def test_every_message_arrived_in_its_peers_stance(outbound, suite):
    arrived = outbound.arrived[suite]
    host = outbound.hosts[suite]
    for kind, d in arrived.items():
        print(f"{suite} -> {kind}: {d.tls or 'plaintext'}")
    missing = [k for k in peers.KINDS if k not in arrived]
    queue = host.ssh("postqueue -p | tail -n 20").stdout if missing else ""
    assert not missing, f"not delivered to {missing}; {suite}'s queue:\n{queue}"
    expected = {
        "fs13": peers.Tls("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
        "fs12": peers.Tls("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384"),
        "rsa": peers.Tls("TLSv1.2", "AES256-GCM-SHA384"),
        "plain": None,
        "recorder": peers.Tls("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
    }
    assert {k: d.tls for k, d in arrived.items()} == expected
    for kind, d in arrived.items():
        assert d.client == host.address and d.recipients == (f"<mailtest@{kind}.peer.test>",)
        peer = outbound.peer(suite, kind)
        assert not peer.failed_handshakes, peer.failed_handshakes  # no fallback to plaintext
    # The sender's own account: one TLS session per TLS peer, the plaintext one none.
    for kind, tls in expected.items():
        peer = outbound.peer(suite, kind)
        logged = [
            (s.protocol, s.cipher) for s in outbound.logged_to(suite, peer.address, peer.port)
        ]
        assert logged == ([(tls.version, tls.cipher)] if tls else []), (kind, logged)


def test_the_client_hello_offers_the_hybrid_group_where_openssl_has_it(outbound, suite):
    recorder = outbound.peer(suite, "recorder")
    hello = outbound.arrived[suite]["recorder"].hello
    assert hello is not None and recorder.hellos == [hello]  # one session, one first ClientHello
    retry = hello.needs_retry(CONTROLLER_GROUPS)
    print(
        f"{suite} ClientHello to the recorder: {hello}; vs the controller's OpenSSL 3.0: "
        f"{'HelloRetryRequest (2 round trips)' if retry else 'no HelloRetryRequest'} (inferred)"
    )
    if suite != "bookworm":  # OpenSSL >= 3.5
        assert "X25519MLKEM768" in hello.group_names, hello
    else:  # OpenSSL 3.0: classic groups only
        assert "X25519MLKEM768" not in hello.group_names + hello.key_share_names, hello
        assert hello.key_share_names == ("x25519",) and not retry


@pytest.mark.parametrize("suite", SENDERS)
def test_the_client_hello_fits_one_packet_with_an_x25519_share(outbound, suite):
    hello = outbound.arrived[suite]["recorder"].hello
    assert hello is not None
    print(f"{suite} ClientHello: {hello.wire_bytes} bytes (one packet: <= {ONE_PACKET})")
    assert hello.wire_bytes <= ONE_PACKET, hello
    assert hello.key_share_names == ("x25519",), hello
    assert "X25519MLKEM768" not in hello.key_share_names
    assert not hello.needs_retry(CONTROLLER_GROUPS)
    if suite != "bookworm":
        assert "X25519MLKEM768" in hello.group_names, hello  # still offered, first


def test_postfix_to_postfix_with_starttls(outbound):
    """A real Postfix-to-Postfix delivery to port 25 of deployed hosts, and what the sender
    logged of it: the group and, from OpenSSL's handshake states, whether a HelloRetryRequest
    came first. Only the groups both ends must agree on are asserted; the rest is recorded."""
    report = []
    for frm, to in POSTFIX_PAIRS:
        receiver = outbound.hosts[to]
        logged = outbound.logged_to(frm, receiver.address, 25)
        assert outbound.postfix_arrived[(frm, to)], f"{frm} -> {to}: not delivered; {logged}"
        assert len(logged) == 1, logged
        s = logged[0]
        report.append(
            f"{frm} -> {to} ({receiver.suite}): {s.protocol} {s.cipher} key-exchange {s.group}, "
            f"ServerHellos read {s.server_hellos}: round trips {s.round_trips}"
        )
        assert s.protocol == "TLSv1.3" and s.group and s.server_hellos, s
        if "bookworm" in (frm, receiver.suite):  # OpenSSL 3.0 on one end: X25519
            assert s.group.lower() == "x25519", s
        else:  # both 3.5: the server asks for the hybrid group the client offers (HRR)
            assert s.group.lower() == "x25519mlkem768", s
            assert s.server_hellos == 2, s
        if frm == "bookworm":  # its X25519 share is one the trixie server takes
            assert s.server_hellos == 1, s
    print("\n".join(report))


def test_debian_13_to_debian_12_needs_no_retry(outbound):
    """After the outbound change Debian 13's first ClientHello carries an X25519 share, which
    Debian 12's Postfix takes: no HelloRetryRequest, one round trip less (before it: the
    X25519MLKEM768 share alone, which OpenSSL 3.0 cannot use, so it asks again)."""
    logged = outbound.logged_to("trixie", outbound.hosts["bookworm"].address, 25)
    assert [s.server_hellos for s in logged] == [1], logged


def test_the_audit_passes_with_outbound_sessions_in_the_log(audited, suite):
    """Outbound mail, an RSA-key-exchange peer and a plaintext one included, is no failure of
    the host's own TLS: the audit judges what the host serves."""
    audit = audited[suite]
    failures = [f for p in audit.result["ports"] for f in p["failures"]]
    assert result_ok(audit), (
        failures,
        audit.result["unscanned_failures"],
        audit.run.stderr[-3000:],
    )


def test_the_ledger_counts_each_destination(outbound, audited, suite):
    audit, host = audited[suite], outbound.hosts[suite]
    smtp = audit.smtp
    print(f"{suite} ledger: {json.dumps(smtp, indent=1, sort_keys=True)}")
    fields = {"sessions", "forward_secret", "plaintext", "failed_handshakes", "protocols"}
    fields |= {"ciphers", "groups", "share_forward_secret"}
    for kind in peers.KINDS:
        peer = outbound.peer(suite, kind)
        d = audit.destination(peer.address, peer.port)
        assert fields <= set(d), (kind, d)
        assert d["failed_handshakes"] == 0, (kind, d)
        if kind == "plain":
            assert d["plaintext"] == 1 and d["sessions"] == 0, (kind, d)
        elif kind == "rsa":
            assert d["sessions"] == 1 and d["forward_secret"] == 0, (kind, d)
            assert d["ciphers"] == {"AES256-GCM-SHA384": 1} and d["share_forward_secret"] == 0
        else:
            assert d["sessions"] == d["forward_secret"] == 1 and d["plaintext"] == 0, (kind, d)
            assert d["share_forward_secret"] == 1.0
    assert audit.destination(outbound.peer(suite, "fs12").address, PORTS["fs12"])["ciphers"] == {
        "ECDHE-ECDSA-AES256-GCM-SHA384": 1
    }
    for kind in ("fs13", "recorder"):
        d = audit.destination(outbound.peer(suite, kind).address, PORTS[kind])
        assert d["protocols"] == {"TLSv1.3": 1} and lower(d["groups"]) == {"x25519": 1}, d
    for frm, to in POSTFIX_PAIRS:
        if frm == suite:
            address = outbound.hosts[to].address
            d = audit.destination(address, 25)
            assert d["sessions"] == d["forward_secret"] == 1, (to, d)
            assert d["protocols"] == {"TLSv1.3": 1}, (to, d)
            (logged,) = outbound.logged_to(frm, address, 25)
            assert lower(d["groups"]) == {str(logged.group).lower(): 1}, (to, d, logged)
    destinations = smtp["destinations"].values()
    for key in ("sessions", "forward_secret", "plaintext", "failed_handshakes"):
        assert smtp[key] == sum(d[key] for d in destinations), key
    assert smtp["sessions"] - smtp["forward_secret"] == 1  # the rsa peer, and only it
    assert result_ok(audit), host.name


def lower(groups: dict[str, int]) -> dict[str, int]:
    """Group counts by lower-case name: Postfix 3.10 logs `x25519`, 3.7 `X25519`."""
    return {k.lower(): n for k, n in groups.items()}


def test_the_audit_warns_of_the_rsa_peer_and_still_passes(outbound, audited, suite):
    audit = audited[suite]
    rsa = outbound.peer(suite, "rsa")
    plain_or_fs = [outbound.peer(suite, k) for k in ("fs13", "fs12", "recorder")]
    warnings = audit.warnings()
    print(f"{suite} audit warnings: {warnings}")
    named = [w for w in warnings if f"[{rsa.address}]:{rsa.port}" in w]
    assert named, warnings
    assert not [w for w in warnings for p in plain_or_fs if f"[{p.address}]:{p.port}" in w]
    assert result_ok(audit)


def result_ok(audit: Audit) -> bool:
    """The audit passed (a warning is not a failure): this host's result and the run's exit."""
    return audit.result["ok"] and audit.run.returncode == 0


@pytest.mark.parametrize("sender", PQ_SUITES)
def test_outbound_pq_share_sends_the_ml_kem_share(outbound, sender):
    """With mailtls_outbound_pq_share=true the Debian 13 and 14 clients send their
    X25519MLKEM768 share in the first ClientHello (two packets, no retry from a PQ server); the
    default comes back after, for whatever runs next on these hosts."""
    host = outbound.hosts[sender]
    recorder = outbound.peer(sender, PQ_SHARE_PEER)
    run_pyinfra(host, "deploy.py", "--data", "mailtls_outbound_pq_share=true")
    try:
        subject = outbound.subject(sender, PQ_SHARE_PEER)
        _submit(host, [(f"mailtest@{recorder.name}", subject)])
        hello = recorder.wait(subject, WAIT).hello
        assert hello is not None
        print(f"{sender} ClientHello with mailtls_outbound_pq_share=true: {hello}")
        assert "X25519MLKEM768" in hello.key_share_names, hello
        assert hello.group_names[0] == "X25519MLKEM768", hello
    finally:
        run_pyinfra(host)
