"""Postfix view of the policy: the main.cf and master.cf settings for a Postfix version. No I/O.

Every Postfix setting the project manages is decided here, once per version.

    >>> from tasks.policy import HostCaps, resolve
    >>> caps = HostCaps(postfix=(3, 7, 11), dovecot=None, openssl=(3, 0, 20))
    >>> main_cf(resolve("intermediate", caps), caps, {})["smtpd_tls_protocols"]
    '>=TLSv1.2'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tasks.policy import CLIENT_CLASSIC_GROUPS, HostCaps, Policy, minver, ports_of

# Parameters the seed set that modern Postfix ignores and 3.9+ warns about: removed if present.
OBSOLETE = ("smtpd_tls_eecdh_grade", "smtpd_tls_dh512_param_file")

SERVICES = {
    # name/type: the master.cf line created when no service listens on the port (Debian's own
    # template).
    "submission/inet": "submission inet n - y - - smtpd",
    "submissions/inet": "submissions inet n - y - - smtpd",
}
SMTPD_PORTS = tuple(p.number for p in ports_of("postfix"))
# Mandatory-TLS port -> the name of the service created when nothing listens on it.
MANDATORY_PORTS = {p.number: p.service for p in ports_of("postfix") if not p.opportunistic}
# Service names of those ports in master.cf: ours, and the older names services(5) (as Debian's
# /etc/services spells them) still gives 465.
PORT_NAMES = {p.service: p.number for p in ports_of("postfix")} | {
    "smtps": 465,
    "ssmtp": 465,
    "urd": 465,
}
# TLS-policy parameters: a master.cf -o override of one of these on a mail-facing smtpd
# service would serve something else than main.cf's policy. Everything else (SASL,
# restrictions, milters, syslog_name, ...) is the admin's and is never touched.
POLICY_PARAMS = frozenset(
    {
        "smtpd_tls_protocols",
        "smtpd_tls_mandatory_protocols",
        "smtpd_tls_ciphers",
        "smtpd_tls_mandatory_ciphers",
        "tls_high_cipherlist",
        "tls_medium_cipherlist",
        "tls_low_cipherlist",
        "tls_preempt_cipherlist",
        "tls_eecdh_auto_curves",
        "tls_ffdhe_auto_groups",
        "tls_ssl_options",
        "smtpd_tls_eecdh_grade",
        "smtpd_tls_dh1024_param_file",
        "smtpd_tls_dh512_param_file",
    }
)

# What makes smtpd serve another certificate than smtpd_tls_cert_file/_key_file: chain_files
# replaces them (postconf(5): the legacy parameters are then ignored), an ECDSA or DSA pair is
# served beside them to the clients that prefer it. Checked only where the deploy sets the
# certificate.
OTHER_CERT_PARAMS = (
    "smtpd_tls_chain_files",
    "smtpd_tls_eccert_file",
    "smtpd_tls_eckey_file",
    "smtpd_tls_dcert_file",
    "smtpd_tls_dkey_file",
)


# The commands of master.cf services that open TLS sessions as a client: the SMTP client (smtp,
# relay and any content-filter transport run it) and the LMTP client. tlsproxy takes the
# client's groups from the smtp process that asks it (tls_proxy_client_param_proto.c).
CLIENT_COMMANDS = ("smtp", "lmtp")
# main.cf's group list is global: without a per-transport override the client would send the
# server's list, hybrid group first, as its only key share (1,584 bytes on Debian 13).
CLIENT_GROUPS = {
    # Postfix 3.11's own default: OpenSSL's list with the hybrid key share deferred until a
    # server asks for it (RELEASE_NOTES-3.11, postconf(5) tls_eecdh_auto_curves): 517 bytes.
    "deferred": "?X25519MLKEM768:DEFAULT",
    # OpenSSL's own default: X25519MLKEM768 and X25519 key shares, 1,623 bytes.
    "share": "DEFAULT",
    # No hybrid group: Postfix 3.7's default list, colon-separated (no spaces in a -o value).
    "off": ":".join(CLIENT_CLASSIC_GROUPS),
}


CLIENT_GROUPS_PARAM = "tls_eecdh_auto_curves"  # the one -o a client transport gets


def client_cf(policy: Policy) -> dict[str, str]:
    """The -o overrides of every client transport (CLIENT_COMMANDS): the outbound groups.

    Everything else of the client stays as the admin has it, broad by default
    (smtp_tls_protocols, smtp_tls_ciphers = medium, smtp_tls_security_level): opportunistic
    outbound TLS is never narrowed into plaintext.

    >>> from tasks.policy import HostCaps, resolve
    >>> client_cf(resolve("intermediate", HostCaps((3, 10, 13), None, (3, 5, 9))))
    {'tls_eecdh_auto_curves': '?X25519MLKEM768:DEFAULT'}
    """
    return {CLIENT_GROUPS_PARAM: CLIENT_GROUPS[policy.outbound_pq]}


class MasterCfError(ValueError):
    """master.cf is in a shape the deploy must not guess about (e.g. two services, one port)."""


@dataclass(frozen=True)
class Service:
    """One active master.cf entry, from a `postconf -M` line."""

    key: str  # 'name/type', as postconf -M/-P address it
    host: str  # listen address ('' = all)
    port: int | None  # inet services: the TCP port; None for other types or unknown names
    command: str

    @property
    def mail_facing(self) -> bool:
        """An smtpd that serves a mail port (SMTPD_PORTS), or postscreen's smtpd behind 25."""
        if self.command != "smtpd":
            return False
        return self.port in SMTPD_PORTS or self.key.endswith("/pass")

    @property
    def client(self) -> bool:
        """A transport that runs an SMTP or LMTP client (CLIENT_COMMANDS)."""
        return self.command in CLIENT_COMMANDS

    def speaks_tls(self, main: Mapping[str, str], master_params: Mapping[str, str]) -> bool:
        """Whether this client transport may use TLS: a TLS policy table, a security level
        other than none, or (no level set) the pre-2.3 switches, as its -o or main.cf (`main`)
        sets them.
        The admin's `-o smtp_tls_security_level=none` on a content filter stays untouched.
        """
        if not self.client:
            return False

        def get(name: str) -> str:
            param = f"{self.command}_{name}"
            return master_params.get(f"{self.key}/{param}", main.get(param, ""))

        level = get("tls_security_level")
        if get("tls_policy_maps"):  # a policy table's entry beats the level (postconf(5))
            return True
        if level:  # set: the obsolete switches are ignored
            return level != "none"
        return "yes" in (get("use_tls"), get("enforce_tls"))


def parse_service(key: str, line: str) -> Service:
    """A `postconf -M` line ('smtps inet n - y - - smtpd -o ...') as a Service.

    >>> parse_service("[::1]:465/inet", "[::1]:465 inet n - y - - smtpd").port
    465
    """
    name, _, kind = key.rpartition("/")
    fields = line.split()
    command = fields[7] if len(fields) > 7 else ""
    host, port = "", None
    if kind == "inet":
        if name.startswith("["):  # [address]:port
            host, _, rest = name[1:].partition("]")
            spec = rest.lstrip(":")
        elif ":" in name:
            host, _, spec = name.rpartition(":")
        else:
            spec = name
        port = int(spec) if spec.isdigit() else PORT_NAMES.get(spec)
    return Service(key=key, host=host, port=port, command=command)


def _overlap(a: Service, b: Service) -> bool:
    return not a.host or not b.host or a.host == b.host


def clients(conf: PostfixConf) -> tuple[str, ...]:
    """The client transports `conf` gives the client direction's groups ('name/type').

    >>> clients(PostfixConf({}, (), {}, {"smtp/unix/tls_eecdh_auto_curves": "DEFAULT"}))
    ('smtp/unix',)
    """
    suffix = "/" + CLIENT_GROUPS_PARAM
    return tuple(k.removesuffix(suffix) for k in conf.params if k.endswith(suffix))


def listeners(services: Mapping[str, str]) -> dict[int, list[Service]]:
    """Active inet services of the mail ports, by port. Two that would listen on the same
    address and port are refused: Postfix would warn and serve only the last one."""
    by_port: dict[int, list[Service]] = {}
    for key, line in services.items():
        svc = parse_service(key, line)
        if svc.port in SMTPD_PORTS:
            by_port.setdefault(svc.port, []).append(svc)
    for port, found in by_port.items():
        for i, a in enumerate(found):
            for b in found[i + 1 :]:
                if _overlap(a, b):
                    raise MasterCfError(
                        f"master.cf has two services on port {port}: {a.key.split('/')[0]!r} and "
                        f"{b.key.split('/')[0]!r} (Postfix uses only the last one): remove or "
                        "comment out one of them, then run the deploy again"
                    )
    return by_port


@dataclass(frozen=True)
class MasterPlan:
    create: dict[str, str]  # 'name/type' -> master.cf line
    params: dict[str, str]  # 'name/type/param' -> value
    unset: tuple[str, ...]  # 'name/type/param' TLS-policy overrides to delete (postconf -PX)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PostfixConf:
    main: dict[str, str]  # main.cf: parameter -> value
    remove: tuple[str, ...]  # main.cf parameters to delete (postconf -X)
    services: dict[str, str]  # master.cf services to create when missing
    params: dict[str, str]  # master.cf overrides: 'service/type/parameter' -> value
    unset: tuple[str, ...] = ()  # master.cf overrides to delete (postconf -PX)
    notes: tuple[str, ...] = ()  # what the deploy left alone, for the log

    def __bool__(self) -> bool:
        return bool(self.main or self.remove or self.services or self.params or self.unset)

    def missing_from(
        self,
        postconf: Mapping[str, str],
        services: Mapping[str, str],
        master_params: Mapping[str, str],
    ) -> PostfixConf:
        """The part of this config a host does not have yet, given its `postconf -n`, `-M` and
        `-P` (the MailHost fact). Empty (false) when the host is converged."""
        return PostfixConf(
            main={k: v for k, v in self.main.items() if postconf.get(k) != v},
            remove=tuple(k for k in self.remove if k in postconf),
            services={svc: line for svc, line in self.services.items() if svc not in services},
            params={k: v for k, v in self.params.items() if master_params.get(k) != v},
            unset=tuple(k for k in self.unset if k in master_params),
        )


SERVER_SECLEVEL = ":@SECLEVEL=1"


def main_cf(
    policy: Policy,
    caps: HostCaps,
    current: Mapping[str, str],
    cert_file: str | None = None,
    key_file: str | None = None,
) -> dict[str, str]:
    """main.cf settings. `current` is `postconf -n` (explicit settings) as a dict."""
    main = {
        # Port 25: opportunistic TLS. A failed handshake makes senders fall back to plaintext,
        # so the floor is the intermediate one whatever the profile; mandatory_* only applies
        # when main.cf itself enforces TLS.
        "smtpd_tls_protocols": f">={policy.opportunistic_min_protocol}",
        "smtpd_tls_mandatory_protocols": f">={policy.opportunistic_min_protocol}",
        # "high" grade = our list. tls_high_cipherlist instead of tls_medium_cipherlist so the
        # outbound client (smtp_tls_ciphers = medium) keeps talking to every peer.
        "smtpd_tls_ciphers": "high",
        "smtpd_tls_mandatory_ciphers": "high",
        # @SECLEVEL=1: Postfix's smtpd otherwise signs a TLS 1.2 key exchange with SHA-1 when
        # that is all a client offers (seen on Debian 12-14; Dovecot refuses). OpenSSL 3's
        # level 1 has no SHA-1 signatures in TLS and takes RSA keys from 1024 bits (every
        # certificate that served before still does).
        "tls_high_cipherlist": ":".join(policy.tls12_suites) + SERVER_SECLEVEL,
        "tls_preempt_cipherlist": "yes" if policy.server_preference else "no",
        # Postfix splits the list at spaces and validates each word with OpenSSL: a tier
        # boundary goes inside a word ("X25519MLKEM768/X25519 prime256v1 secp384r1").
        "tls_eecdh_auto_curves": "/".join(" ".join(t) for t in policy.group_tiers),
        # The seed's "log the negotiated cipher": one summary line per TLS session.
        "smtpd_tls_loglevel": "1",
        "smtp_tls_loglevel": "1",
        "smtpd_tls_received_header": "yes",
    }
    for side in ("smtpd", "smtp"):  # TLS stays available in and out; never narrowed outbound
        if current.get(f"{side}_tls_security_level", "none") in ("", "none"):
            main[f"{side}_tls_security_level"] = "may"
    if minver(caps, "tls_ffdhe_auto_groups"):
        main["tls_ffdhe_auto_groups"] = ""  # no finite-field groups in TLS 1.3: ECDHE only
    if not minver(caps, "renegotiation_always_off"):
        main["tls_ssl_options"] = "NO_RENEGOTIATION"  # always off from 3.10 on
    if policy.dh_file:
        main["smtpd_tls_dh1024_param_file"] = policy.dh_file
    main.update(resumption_cf(policy))
    if cert_file and key_file:
        main["smtpd_tls_cert_file"] = cert_file
        main["smtpd_tls_key_file"] = key_file
    return main


def resumption_cf(policy: Policy) -> dict[str, str]:
    """main.cf settings of the resumption policy (docs/resumption.md).

    smtpd_tls_session_cache_timeout T bounds the ticket keys (tlsmgr makes one every T/2;
    smtpd decrypts with it until 1.5 T after); 0 turns tickets and the session cache off.
    No on-disk server session cache: it would write master secrets to disk.
    """
    timeout = policy.resumption.postfix_cache_timeout
    return {
        "smtpd_tls_session_cache_timeout": f"{timeout}s",
        "smtpd_tls_session_cache_database": "",
    }


def removed(policy: Policy) -> tuple[str, ...]:
    """main.cf parameters to delete: obsolete ones, and the DH file when no DHE is offered."""
    return OBSOLETE + (() if policy.dh_file else ("smtpd_tls_dh1024_param_file",))


def master_cf(
    policy: Policy,
    present: Mapping[str, str],
    submission: bool = True,
    submissions: bool = True,
    main: Mapping[str, str] | None = None,
    master_params: Mapping[str, str] | None = None,
    current: Mapping[str, str] | None = None,
) -> MasterPlan:
    """The master.cf changes for the mail ports, found by what each service listens on.

    `present` is `postconf -M` keyed by 'name/type', `master_params` its `postconf -P`, `main` the
    main.cf settings the deploy sets, `current` main.cf's before (`postconf -n`). 465 may be served by `smtps`, `submissions`, `465` or
    `[addr]:465`, 587 by `submission` or `587`: an existing service is reused, never a second one
    created. A service that exists is hardened even when its enable setting is off: every TLS
    session it serves must follow the policy. Only TLS-policy -o options are set or removed;
    SASL, restrictions, milters, syslog_name and the like stay as they are. Raises MasterCfError
    when two services would listen on one port.
    """
    main = main or {}
    master_params = master_params or {}
    after = {**(current or {}), **main}  # main.cf as it will be: the clients' TLS switches
    wanted = {587: submission, 465: submissions}
    by_port = listeners(present)
    create, params, unset, notes = {}, {}, [], []
    for port, name in MANDATORY_PORTS.items():
        found = by_port.get(port, [])
        if not found and wanted[port]:
            key = f"{name}/inet"
            create[key] = SERVICES[key]
            params[f"{key}/syslog_name"] = f"postfix/{name}"  # only on the service we create
            found = [parse_service(key, SERVICES[key])]
        for svc in found:
            if svc.command != "smtpd":
                notes.append(
                    f"port {port} is served by {svc.key.split('/')[0]!r} running "
                    f"{svc.command!r}, not smtpd: left as it is"
                )
                continue
            overrides = {
                "smtpd_tls_security_level": "encrypt",  # TLS is required here: the strict policy
                "smtpd_tls_mandatory_protocols": f">={policy.mandatory_min_protocol}",
                "smtpd_tls_mandatory_ciphers": "high",
            }
            if port == 465:
                overrides["smtpd_tls_wrappermode"] = "yes"
            params.update({f"{svc.key}/{k}": v for k, v in overrides.items()})
    # Every mail-facing smtpd (25, 465, 587, postscreen's "pass"): a TLS-policy -o override that
    # differs from main.cf goes, so main.cf's policy (or ours above) is what the service serves.
    # Every client transport that may use TLS gets the client direction's groups.
    for key, line in present.items():
        svc = parse_service(key, line)
        if svc.speaks_tls(after, master_params):
            params.update({f"{key}/{k}": v for k, v in client_cf(policy).items()})
        if not svc.mail_facing:
            continue
        for param in sorted(POLICY_PARAMS):
            k = f"{key}/{param}"
            if k in master_params and k not in params and master_params[k] != main.get(param):
                unset.append(k)
    return MasterPlan(create=create, params=params, unset=tuple(unset), notes=tuple(notes))


def render(
    policy: Policy,
    caps: HostCaps,
    current: Mapping[str, str],
    services: Mapping[str, str],
    master_params: Mapping[str, str] | None = None,
    *,
    cert_file: str | None = None,
    key_file: str | None = None,
    submission: bool = True,
    submissions: bool = True,
) -> PostfixConf:
    """The Postfix config for `policy` on a host whose `postconf -n` is `current`, `postconf -M`
    `services` and `postconf -P` `master_params`. Raises MasterCfError (nothing to change
    safely) when master.cf has two services on one mail port."""
    main = main_cf(policy, caps, current, cert_file, key_file)
    plan = master_cf(policy, services, submission, submissions, main, master_params, current)
    return PostfixConf(
        main=main,
        remove=removed(policy),
        services=plan.create,
        params=plan.params,
        unset=plan.unset,
        notes=plan.notes,
    )


def cert_overrides(
    current: Mapping[str, str],
    services: Mapping[str, str],
    master_params: Mapping[str, str],
    cert_file: str,
    key_file: str,
) -> list[str]:
    """What would make Postfix serve another certificate than `cert_file`/`key_file`, which the
    deploy sets in main.cf: an OTHER_CERT_PARAMS setting in main.cf (`current`: postconf -n), or
    one of those or another certificate/key as a master.cf -o override of a mail-facing smtpd
    (postconf -M `services`, -P `master_params`). One line per setting: where, and what to do.

    >>> cert_overrides({"smtpd_tls_chain_files": "/etc/ssl/x.pem"}, {}, {}, "/c", "/k")[0][:62]
    '/etc/postfix/main.cf: smtpd_tls_chain_files = /etc/ssl/x.pem ('
    """
    found = []
    unset = "or unset mailtls_postfix_cert_file/_key_file to manage Postfix's certificate yourself"
    for param in OTHER_CERT_PARAMS:
        if current.get(param):
            found.append(
                f"/etc/postfix/main.cf: {param} = {current[param]} ({_why(param)} "
                f"smtpd_tls_cert_file = {cert_file}, which mailtls sets): remove it "
                f"(postconf -X {param}), {unset}"
            )
    ours = {"smtpd_tls_cert_file": cert_file, "smtpd_tls_key_file": key_file}
    for key, line in services.items():
        svc = parse_service(key, line)
        if not svc.mail_facing:
            continue
        for param in (*ours, *OTHER_CERT_PARAMS):
            value = master_params.get(f"{key}/{param}")
            if value and value != ours.get(param):
                where = f"port {svc.port}" if svc.port else "postscreen's smtpd"
                found.append(
                    f"/etc/postfix/master.cf: service {key.split('/')[0]!r} ({where}): "
                    f"-o {param}={value} makes it serve another certificate than "
                    f"smtpd_tls_cert_file = {cert_file}, which mailtls sets in main.cf: remove "
                    f"it (postconf -PX {key}/{param}), {unset}"
                )
    return found


def _why(param: str) -> str:
    if param == "smtpd_tls_chain_files":
        return "Postfix serves it and ignores"
    kind = "an ECDSA" if "_ec" in param else "a DSA"
    return f"{kind} certificate or key, served to the clients that prefer it instead of"
