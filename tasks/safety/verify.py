"""What mailtls-apply verifies after a commit, as data: the effective settings to read back and
the handshakes to try from the host itself. No I/O.

The deploy writes it to VERIFY_PATH on the host (`render`); `mailtls-apply commit` reads it after
each reload. A probe offers only what the profile forbids (TLS 1.1, RSA key exchange, non-AEAD
suites, DHE where the profile has none, TLS 1.2 where the profile needs 1.3) and must be refused,
or offers what the profile allows and must succeed. The client side uses SECLEVEL=0 so that a
refusal is the server's, not the host's OpenSSL defaults.

The forbidden TLS 1.2 suites are offered together, in one handshake per port: a server that enables
any of them picks one and accepts, so a refusal proves that it enables none, as one handshake per
class did (each handshake starts an openssl client and a Dovecot login process or an smtpd on the
host). When it is accepted, mailtls-apply names the class from the suite the
server chose. TLS 1.1 and TLS 1.2 where the profile needs 1.3 stay on their own (a client offering
more than one protocol gets the highest), as do the handshakes that must succeed.

    >>> from tasks.policy import HostCaps, resolve
    >>> caps = HostCaps(postfix=(3, 7, 11), dovecot=(2, 3, 19), openssl=(3, 0, 20))
    >>> [p.what for p in probes(resolve("modern", caps)) if p.port == 993]
    ['TLS 1.1', 'TLS 1.2', 'TLS 1.3']
    >>> [p.what for p in probes(resolve("intermediate", caps)) if p.port == 993][1:4]
    ['TLS 1.2 with RSA key exchange, non-AEAD or DHE suites only', "TLS 1.2 with the profile's suites", 'TLS 1.2 with SHA-1 signature algorithms only']
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.policy import PQ_HYBRID, Policy, ports_of
from tasks.scripts import CONTRACT

VERIFY_PATH = CONTRACT["VERIFY"]


LEGACY_CLIENT = ":@SECLEVEL=0"
AEAD = ("AESGCM", "CHACHA20", "AESCCM", "ARIAGCM")
# Forward-secret but not AEAD (CBC with SHA-1/SHA-2 MACs).
NON_AEAD = "ECDHE:" + ":".join("!" + c for c in AEAD)


def forbidden_tls12(dhe: bool) -> str:
    """One cipher string with every forbidden TLS 1.2 suite: ECDHE without AEAD, any RSA key
    exchange, and (`dhe`) any DHE. `-` drops the AEAD suites from ECDHE only: `!` (NON_AEAD's)
    would keep them out of kRSA and kDHE added after it.

    >>> forbidden_tls12(True)
    'ECDHE:-AESGCM:-CHACHA20:-AESCCM:-ARIAGCM:kRSA:kDHE'
    """
    return ":".join(["ECDHE", *("-" + c for c in AEAD), "kRSA", *(["kDHE"] if dhe else [])])


@dataclass(frozen=True)
class Probe:
    daemon: str
    port: int
    starttls: str | None
    expect: str  # "accept" or "refuse"
    what: str  # what is offered, for the report
    args: tuple[str, ...]  # openssl s_client arguments

    def line(self) -> str:
        return (
            f"probe {self.daemon} {self.port} {self.starttls or '-'} {self.expect} "
            f"{' '.join(self.args)} -- {self.what}"
        )


def _for_port(policy: Policy, daemon: str, port: int, starttls: str | None) -> list[Probe]:
    floor = policy.floor(port)

    def p(expect, what, *args):
        return Probe(daemon, port, starttls, expect, what, args)

    out = [p("refuse", "TLS 1.1", "-tls1_1", "-cipher", "DEFAULT" + LEGACY_CLIENT)]
    if floor == "TLSv1.2":
        # One handshake offers every forbidden class: any one enabled is accepted (see above).
        dhe = not policy.offers_dhe
        out.append(
            p(
                "refuse",
                "TLS 1.2 with RSA key exchange, non-AEAD or DHE suites only"
                if dhe
                else "TLS 1.2 with RSA key exchange or non-AEAD suites only",
                "-tls1_2",
                "-cipher",
                forbidden_tls12(dhe) + LEGACY_CLIENT,
            )
        )
        out.append(
            p(
                "accept",
                "TLS 1.2 with the profile's suites",
                "-tls1_2",
                "-cipher",
                ":".join(policy.tls12_suites),
            )
        )
        # internet.nl's key-exchange hash: no key exchange signed with SHA-1.
        out.append(
            p(
                "refuse",
                "TLS 1.2 with SHA-1 signature algorithms only",
                "-tls1_2",
                "-sigalgs",
                "RSA+SHA1:ECDSA+SHA1",
                "-cipher",
                "DEFAULT" + LEGACY_CLIENT,
            )
        )
    else:
        out.append(p("refuse", "TLS 1.2", "-tls1_2", "-cipher", "DEFAULT" + LEGACY_CLIENT))
    out.append(p("accept", "TLS 1.3", "-tls1_3"))
    return out


def probes(policy: Policy, daemons: tuple[str, ...] = ("postfix", "dovecot")) -> list[Probe]:
    """Every probe of every TLS port of `daemons` under `policy` (mailtls-apply probes the
    ones that listen)."""
    return [
        probe
        for daemon in daemons
        for port in ports_of(daemon)
        for probe in _for_port(policy, daemon, port.number, port.starttls)
    ]


@dataclass(frozen=True)
class Outbound:
    """The check of one client transport: the first ClientHello Postfix's TLS client sends with
    the transport's groups (posttls-finger to Postfix's own port 25, read from its own packet
    dump) is at most `max_bytes` on the wire (0: unbounded) and offers `offers` (None: nothing
    required)."""

    service: str  # 'name/type' of a master.cf client transport
    max_bytes: int
    offers: str | None

    def line(self) -> str:
        return f"outbound {self.service} {self.max_bytes} {self.offers or '-'}"


def outbound(policy: Policy, clients: tuple[str, ...]) -> list[Outbound]:
    """The outbound checks of the client transports `clients` under `policy`.

    >>> from tasks.policy import HostCaps, resolve
    >>> caps = HostCaps(postfix=(3, 10, 13), dovecot=None, openssl=(3, 5, 9))
    >>> outbound(resolve("intermediate", caps), ("smtp/unix",))[0].line()
    'outbound smtp/unix 1400 X25519MLKEM768'
    """
    offers = None if policy.outbound_pq == "off" else PQ_HYBRID
    return [Outbound(svc, policy.client_hello_max or 0, offers) for svc in clients]


# Set only on the first run (TLS off before, a service the deploy creates): a verify file with
# them would differ on the next run and rewrite itself, and they are no TLS policy.
FIRST_RUN_ONLY = ("smtpd_tls_security_level", "smtp_tls_security_level", "syslog_name")


def stable(main: dict[str, str], params: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The main.cf and master.cf settings to read back: the same on every run for one policy.
    The mandatory ports' `-o smtpd_tls_security_level=encrypt` stays (always set there)."""
    return (
        {k: v for k, v in main.items() if k not in FIRST_RUN_ONLY},
        {k: v for k, v in params.items() if not k.endswith("/syslog_name")},
    )


def render(
    policy: Policy,
    postfix_main: dict[str, str],
    postfix_params: dict[str, str],
    postfix_removed: tuple[str, ...],
    dovecot: dict[str, str] | None,
    certificates: dict[str, str | None] | None = None,
    clients: tuple[str, ...] = (),
) -> str:
    """The verify file: settings each daemon must report after the reload, then the probes.

    postfix_main: main.cf settings (`postconf -n` must show them); postfix_params: master.cf
    -o overrides 'svc/type/param' (`postconf -P`); postfix_removed: parameters that must be
    gone (a warning naming one of these, or any of the above, fails the commit); dovecot: the
    TLS settings `doveconf -f protocol=P` must report for every protocol, None without Dovecot;
    certificates: {daemon: file} where the deploy names the certificate: every handshake that
    must succeed on that daemon's ports presents the first certificate in that file;
    clients: the master.cf client transports ('name/type'), each checked by `outbound`.

        >>> from tasks.policy import HostCaps, resolve
        >>> caps = HostCaps(postfix=(3, 7, 11), dovecot=None, openssl=(3, 0, 20))
        >>> text = render(resolve("intermediate", caps), {}, {}, (), None,
        ...               {"postfix": "/etc/ssl/mailtls/served/postfix.pem", "dovecot": None})
        >>> [line for line in text.splitlines() if line.startswith("cert ")]
        ['cert postfix /etc/ssl/mailtls/served/postfix.pem']
    """
    lines = [
        "# Written by the mailtls deploy: what `mailtls-apply commit` verifies after a reload.",
        f"# Profile {policy.name}. Changes here are overwritten on the next deploy.",
    ]
    lines += [f"postconf {k}={v}" for k, v in postfix_main.items()]
    lines += [f"postconf-P {k}={v}" for k, v in postfix_params.items()]
    lines += [f"postconf-X {k}" for k in postfix_removed]
    lines += [f"doveconf {k}={v}" for k, v in (dovecot or {}).items()]
    daemons = ("postfix",) + (("dovecot",) if dovecot is not None else ())
    lines += [f"cert {d} {f}" for d, f in (certificates or {}).items() if f and d in daemons]
    lines += [probe.line() for probe in probes(policy, daemons)]
    lines += [check.line() for check in outbound(policy, clients)]
    return "\n".join(lines) + "\n"
