"""The TLS policy model: profiles as data, resolved for what a host can do. No I/O here.

One guidelines table (after Mozilla's ssl-config guidelines 6.0) is the single source of
protocols, suites and groups; the daemon views (postfix_conf, dovecot_conf) only render it.

    >>> caps = HostCaps(postfix=(3, 10, 13), dovecot=(2, 4, 1), openssl=(3, 5, 9))
    >>> p = resolve("intermediate", caps)
    >>> p.groups[0], p.mandatory_min_protocol
    ('X25519MLKEM768', 'TLSv1.2')
"""

from __future__ import annotations

from dataclasses import dataclass, field

Version = tuple[int, ...]

# TLS 1.2 suites (OpenSSL names). All ECDHE + AEAD: forward secret by construction.
ECDHE_AEAD = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
)
# Finite-field DHE + AEAD, for the legacy-dhe profile (Mozilla intermediate 5.7).
DHE_AEAD = (
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-CHACHA20-POLY1305",
)
# TLS 1.3 suites: every one is (EC)DHE + AEAD.
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")

# Hybrid post-quantum key exchange; OpenSSL 3.5+ only (GATES["pq_hybrid"]).
PQ_HYBRID = "X25519MLKEM768"
CLASSIC_GROUPS = ("X25519", "prime256v1", "secp384r1")

# --- The client direction: the sessions Postfix's smtp/lmtp client opens (README "Outbound").
# A ClientHello larger than one TCP segment is what old middleboxes and some servers fail on,
# and where TLS is opportunistic a failed handshake means plaintext: the client's hello stays
# under an Ethernet MSS (1,460 bytes), with room for tunnels, unless a setting asks otherwise.
CLIENT_HELLO_MAX = 1400
# Outbound groups where the hybrid group is not offered: Postfix 3.7's own default, broad (the
# client must talk to every peer; narrowing it never adds forward secrecy).
CLIENT_CLASSIC_GROUPS = ("X25519", "X448", "prime256v1", "secp521r1", "secp384r1")
# How the client offers X25519MLKEM768: "deferred" (in supported_groups, with an X25519 key
# share: its own share only when a server asks for it by HelloRetryRequest, as Postfix 3.11
# does by default), "share" (its 1,216-byte key share in every ClientHello), "off".
OUTBOUND_PQ = ("deferred", "share", "off")

PROTOCOLS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
MIN_DH_BITS = 2048


# --- Ports: every TLS port the daemons serve, the one table the deploy, its probes and the
# audit read. Order matters: it is the order of verify.conf's probe lines and of the audit.


@dataclass(frozen=True)
class Port:
    """One mail port.

    starttls: the dialogue before the handshake (None: TLS from the first byte).
    opportunistic: TLS is optional here and a failed handshake means plaintext (port 25), so
    the profile's opportunistic floor applies; elsewhere its mandatory floor.
    required: the audit fails when the port is closed (POP3 is optional).
    log_tags: the syslog identifiers of the daemon's sessions on this port.
    """

    number: int
    daemon: str
    service: str  # the IANA name, also Postfix's master.cf service name
    starttls: str | None
    log_tags: tuple[str, ...]
    opportunistic: bool = False
    required: bool = True


PORTS: dict[int, Port] = {
    p.number: p
    for p in (
        Port(25, "postfix", "smtp", "smtp", ("postfix/smtpd",), opportunistic=True),
        Port(587, "postfix", "submission", "smtp", ("postfix/submission/smtpd",)),
        Port(
            465,
            "postfix",
            "submissions",
            None,
            ("postfix/submissions/smtpd", "postfix/smtps/smtpd"),
        ),
        Port(143, "dovecot", "imap", "imap", ("dovecot/imap-login",)),
        Port(993, "dovecot", "imaps", None, ("dovecot/imap-login",)),
        Port(110, "dovecot", "pop3", "pop3", ("dovecot/pop3-login",), required=False),
        Port(995, "dovecot", "pop3s", None, ("dovecot/pop3-login",), required=False),
    )
}
REQUIRED_PORTS = tuple(n for n, p in PORTS.items() if p.required)


def ports_of(daemon: str) -> tuple[Port, ...]:
    """The ports one daemon serves, in table order.

    >>> [p.number for p in ports_of("postfix")]
    [25, 587, 465]
    """
    return tuple(p for p in PORTS.values() if p.daemon == daemon)


# --- Version gates: the first version of a component that has (or needs) each feature. One
# row per feature, read only through minver(), after TLSRef's configurator.
GATES: dict[str, tuple[str, Version]] = {
    "postfix_supported": ("postfix", (3, 7)),  # the oldest Postfix we render for (Debian 12)
    "pq_hybrid": ("openssl", (3, 5)),  # X25519MLKEM768; 3.0 takes the name, then fails handshakes
    "tls_ffdhe_auto_groups": ("postfix", (3, 8)),  # the parameter exists
    "renegotiation_always_off": ("postfix", (3, 10)),  # no tls_ssl_options NO_RENEGOTIATION needed
    "dh1024_param_file_deprecated": ("postfix", (3, 9)),  # postconf warns while it is set
}


@dataclass(frozen=True)
class Profile:
    """One row of the guidelines table.

    opportunistic_*: port 25, where TLS is optional and a failed handshake means plaintext.
    mandatory_*: where TLS is required (587 STARTTLS, 465, IMAP/POP3 with TLS).
    """

    name: str
    opportunistic_min_protocol: str
    mandatory_min_protocol: str
    tls12_suites: tuple[str, ...]
    server_preference: bool  # prefer the server's order (needed when weaker DHE suites are offered)
    uses_dh_file: bool


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        # Mozilla intermediate 6.0: TLS >= 1.2, ECDHE + AEAD only, no DH file
        Profile(
            name="intermediate",
            opportunistic_min_protocol="TLSv1.2",
            mandatory_min_protocol="TLSv1.2",
            tls12_suites=ECDHE_AEAD,
            server_preference=False,
            uses_dh_file=False,
        ),
        # TLS 1.3 only where TLS is mandatory; port 25 keeps the intermediate floor
        Profile(
            name="modern",
            opportunistic_min_protocol="TLSv1.2",
            mandatory_min_protocol="TLSv1.3",
            tls12_suites=ECDHE_AEAD,  # still offered on port 25
            server_preference=False,
            uses_dh_file=False,
        ),
        # intermediate plus DHE + AEAD suites for old clients, with a DH parameter file
        Profile(
            name="legacy-dhe",
            opportunistic_min_protocol="TLSv1.2",
            mandatory_min_protocol="TLSv1.2",
            tls12_suites=ECDHE_AEAD + DHE_AEAD,
            server_preference=True,  # ECDHE before DHE for every client that has both
            uses_dh_file=True,
        ),
    )
}
DEFAULT_PROFILE = "intermediate"


# --- Session resumption: how long a recorded session stays decryptable (docs/resumption.md) ---
#
# A TLS 1.2 session resumed from a ticket, and every TLS 1.2 session whose ticket was issued,
# can be decrypted by whoever later obtains the ticket key: the ticket carries the master
# secret. TLS 1.3 resumption in OpenSSL always adds a fresh (EC)DHE (psk_dhe_ke; psk_ke needs
# SSL_OP_ALLOW_NO_DHE_KEX, which neither daemon sets), so only TLS 1.2 bounds the window.


@dataclass(frozen=True)
class Resumption:
    """One resumption policy.

    postfix_cache_timeout: smtpd_tls_session_cache_timeout T in seconds; 0 = no tickets and no
    session cache at all. Postfix's tlsmgr issues tickets with a key for T/2 and smtpd decrypts
    with it until T/2 + T after the key was made, so 1.5 T bounds a TLS 1.2 ticket's window;
    OpenSSL's session lifetime (the lifetime hint) is 2 T.
    Dovecot never issues TLS 1.2 tickets: its login processes live for one connection, so a
    ticket could never be honoured (ssl_options = no_ticket).
    """

    name: str
    postfix_cache_timeout: int

    @property
    def postfix_window(self) -> int:
        """Seconds a TLS 1.2 session's ticket stays decryptable by Postfix: 1.5 T."""
        return ticket_window("postfix", self.postfix_lifetime_hint)

    @property
    def postfix_lifetime_hint(self) -> int:
        """The ticket lifetime hint Postfix sends (OpenSSL's session timeout, 2 T); 0 = no tickets."""
        return 2 * self.postfix_cache_timeout


def ticket_window(daemon: str, lifetime_hint: int) -> int:
    """Seconds a TLS 1.2 ticket stays decryptable, from the lifetime hint the daemon sends.

    Postfix hints 2 T and its ticket keys decrypt for 1.5 T (Resumption); any other server is
    taken at its word.

    >>> ticket_window("postfix", 4800), ticket_window("dovecot", 300)
    (3600, 300)
    """
    return lifetime_hint * 3 // 4 if daemon == "postfix" else lifetime_hint


RESUMPTION: dict[str, Resumption] = {
    r.name: r
    for r in (
        # Postfix resumes by ticket, ticket keys usable for at most one hour; Dovecot issues no
        # TLS 1.2 tickets
        Resumption("bounded", postfix_cache_timeout=2400),
        # no resumption anywhere: every session is a full (EC)DHE handshake
        Resumption("off", postfix_cache_timeout=0),
    )
}
DEFAULT_RESUMPTION = "bounded"


@dataclass(frozen=True)
class HostCaps:
    """What a host runs; versions as integer tuples. dovecot=None when Dovecot is absent."""

    postfix: Version | None
    dovecot: Version | None
    openssl: Version


@dataclass(frozen=True)
class Policy:
    """A profile resolved for one host: exactly what every daemon on it must offer."""

    profile: Profile
    groups: tuple[str, ...]
    tls13_suites: tuple[str, ...] = TLS13_SUITES
    dh_file: str | None = None
    notes: tuple[str, ...] = field(default=())
    resumption: Resumption = RESUMPTION[DEFAULT_RESUMPTION]
    outbound_pq: str = "off"  # one of OUTBOUND_PQ: the client direction's hybrid group

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def tls12_suites(self) -> tuple[str, ...]:
        return self.profile.tls12_suites

    @property
    def opportunistic_min_protocol(self) -> str:
        return self.profile.opportunistic_min_protocol

    @property
    def mandatory_min_protocol(self) -> str:
        return self.profile.mandatory_min_protocol

    @property
    def server_preference(self) -> bool:
        return self.profile.server_preference

    @property
    def offers_dhe(self) -> bool:
        return any(s.startswith("DHE-") for s in self.tls12_suites)

    @property
    def group_tiers(self) -> tuple[tuple[str, ...], ...]:
        """The server's groups by preference tier (OpenSSL >= 3.5 reads tiers split by `/`):
        the hybrid group alone in the first, so a client that offers it with a classic key share
        only (Postfix 3.11's client, and ours) is asked for it by HelloRetryRequest, while a
        client that does not offer it gets a classic group with no extra round trip. In one
        flat list OpenSSL would take the classic share it was sent.

        >>> resolve("intermediate", HostCaps((3, 10, 13), None, (3, 5, 9))).group_tiers
        (('X25519MLKEM768',), ('X25519', 'prime256v1', 'secp384r1'))
        """
        pq = tuple(g for g in self.groups if g == PQ_HYBRID)
        rest = tuple(g for g in self.groups if g != PQ_HYBRID)
        return (pq, rest) if pq else (rest,)

    @property
    def client_hello_max(self) -> int | None:
        """The bound on the client's first ClientHello, in bytes on the wire (None: unbounded,
        the hybrid key share was asked for)."""
        return None if self.outbound_pq == "share" else CLIENT_HELLO_MAX

    def floor(self, port: int) -> str:
        """The lowest protocol `port` may accept: the opportunistic floor where TLS is optional.

        >>> p = resolve("modern", HostCaps(postfix=(3, 7, 11), dovecot=None, openssl=(3, 0, 15)))
        >>> p.floor(25), p.floor(993)
        ('TLSv1.2', 'TLSv1.3')
        """
        if PORTS[port].opportunistic:
            return self.opportunistic_min_protocol
        return self.mandatory_min_protocol


def parse_version(text: str) -> Version:
    """'3.7.11' -> (3, 7, 11); '2.4.1-4 (7d8c0e5759)' -> (2, 4, 1); 'OpenSSL 3.5.9 ...' -> (3, 5, 9)."""
    for word in text.split():
        head = word.split("-")[0]
        parts = head.split(".")
        if len(parts) >= 2 and all(p.isdigit() for p in parts):
            return tuple(int(p) for p in parts)
    raise ValueError(f"no version number in {text!r}")


def minver(caps: HostCaps, feature: str) -> bool:
    """Whether the host's component is at least the version GATES names for `feature` (an
    absent component has none).

    >>> caps = HostCaps(postfix=(3, 10, 13), dovecot=None, openssl=(3, 5, 9))
    >>> minver(caps, "pq_hybrid"), minver(caps, "dh1024_param_file_deprecated")
    (True, True)
    """
    component, first = GATES[feature]
    version = getattr(caps, component)
    return version is not None and version[: len(first)] >= first


def offers_pq_hybrid(caps: HostCaps, pq_hybrid: bool = True) -> bool:
    return pq_hybrid and minver(caps, "pq_hybrid")


def resolve(
    profile: str,
    caps: HostCaps,
    *,
    pq_hybrid: bool = True,
    dh_file: str | None = None,
    resumption: str = DEFAULT_RESUMPTION,
    outbound_pq_share: bool = False,
) -> Policy:
    """The policy for `profile` on a host with `caps`.

    pq_hybrid: offer X25519MLKEM768 first where the host's OpenSSL can (>= 3.5); the client
    direction then offers it too, with a classic key share unless `outbound_pq_share`.
    dh_file: path of the DH parameter file on the host; required when the profile offers DHE.
    resumption: a key of RESUMPTION.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown TLS profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if resumption not in RESUMPTION:
        raise ValueError(
            f"unknown resumption policy {resumption!r}; choose one of {', '.join(RESUMPTION)}"
        )
    prof = PROFILES[profile]
    groups = ((PQ_HYBRID,) if offers_pq_hybrid(caps, pq_hybrid) else ()) + CLASSIC_GROUPS
    notes = []
    if prof.uses_dh_file:
        if not dh_file:
            raise ValueError(f"profile {profile!r} offers DHE and needs a DH parameter file")
        if minver(caps, "dh1024_param_file_deprecated"):
            notes.append(
                "Postfix >= 3.9 deprecates smtpd_tls_dh1024_param_file: postconf will warn while "
                "the legacy-dhe profile is in use"
            )
    else:
        dh_file = None
    return Policy(
        profile=prof,
        groups=groups,
        dh_file=dh_file,
        notes=tuple(notes),
        resumption=RESUMPTION[resumption],
        outbound_pq=(
            ("share" if outbound_pq_share else "deferred")
            if offers_pq_hybrid(caps, pq_hybrid)
            else "off"
        ),
    )


def protocols_at_least(minimum: str) -> tuple[str, ...]:
    """The protocol versions a floor admits: 'TLSv1.2' -> ('TLSv1.2', 'TLSv1.3')."""
    return PROTOCOLS[PROTOCOLS.index(minimum) :]
