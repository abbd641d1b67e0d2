"""Every user-facing host-data key: its default, what it does, and how it is checked. No I/O.

Our keys live in a namespace of their own, `mailtls_` + the setting (`mailtls_tls_profile`), so
host data of other deploys (`postfix_relayhost`, `dovecot_mail_location`, `tls_whatever`) is
never ours to judge. A key in our namespace that we do not know is a typo: refused, with a hint.
The names documented before the namespace (`tls_profile`, `audit_ports`, ...) still work as
aliases, exactly as spelled; given together with the namespaced name they must agree.
Keys are flat so inventories, group_data/*.py and `--data key=value` all work the same.
`validate(data, host)` returns a frozen Settings or raises SettingsError naming the key and host;
deploy.py runs it for every host before any operation, so bad input never touches a host.

    >>> validate({"mailtls_tls_profile": "modern"}, "mx1").tls_profile
    'modern'
    >>> validate({"tls_profile": "modern", "postfix_relayhost": "[relay]:587"}, "mx1").tls_profile
    'modern'
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from tasks import validators
from tasks.policy import (
    DEFAULT_RESUMPTION,
    PROFILES,
    REQUIRED_PORTS,
    RESUMPTION,
    HostCaps,
    Policy,
    resolve,
)
from tasks.scripts import CONTRACT


class SettingsError(ValueError):
    """Bad host data: one line naming the key and the host."""


# Where the certificate watcher keeps the copies the daemons serve (tasks/certs/plan.py).
CERT_COPIES_DIR = CONTRACT["SERVED"]
# Where certificates and keys live: a DH file there would overwrite one of them.
_CERT_DIRS = ("/etc/ssl/certs/", "/etc/ssl/private/")
# Directories others can write to (Debian): root would write the DH file through a name they can
# predict or replace. The host's own directories are checked too (dh.host_refusal).
_SHARED_DIRS = (
    "/tmp/",
    "/var/tmp/",
    "/dev/shm/",
    "/run/lock/",
    "/var/lock/",
    "/var/mail/",
    "/var/spool/mail/",
    "/var/crash/",
    "/run/user/",
    "/var/spool/postfix/",
)


@dataclass(frozen=True)
class Setting:
    key: str  # the Settings field; host data names it NAMESPACE + key
    default: Any
    check: Callable[[Any], Any]
    doc: str
    # The key alone (`tls_profile`) is also accepted: the name it was documented under before
    # the namespace. Settings added since have only the namespaced name.
    alias: bool = True

    @property
    def name(self) -> str:
        return NAMESPACE + self.key


NAMESPACE = "mailtls_"

# The one table of user-facing settings. README's settings table is generated from it.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "tls_profile",
        "intermediate",
        validators.choice(*PROFILES),
        "TLS profile: intermediate (TLS >= 1.2, ECDHE + AEAD), modern (TLS 1.3 only where TLS "
        "is mandatory; port 25 keeps the intermediate floor), legacy-dhe (adds DHE suites and a "
        "DH file).",
    ),
    Setting(
        "tls_pq_hybrid",
        True,
        validators.boolean,
        "Offer the hybrid post-quantum group X25519MLKEM768 first where the host's OpenSSL is "
        ">= 3.5 (never on OpenSSL 3.0, where it breaks handshakes).",
    ),
    Setting(
        "tls_resumption",
        DEFAULT_RESUMPTION,
        validators.choice(*RESUMPTION),
        "Session resumption: bounded (Postfix resumes TLS 1.2 by ticket with ticket keys usable "
        "for at most one hour, lifetime hint 4800 s; Dovecot issues no TLS 1.2 tickets) or off (no "
        "resumption: every session a full handshake). TLS 1.3 resumption always adds a fresh "
        "(EC)DHE. See docs/resumption.md.",
        alias=False,
    ),
    Setting(
        "outbound_pq_share",
        False,
        validators.boolean,
        "Outbound (Postfix's smtp/lmtp client, OpenSSL >= 3.5): also send the 1,216-byte "
        "X25519MLKEM768 key share, so a PQ peer needs no HelloRetryRequest; every ClientHello "
        "then spans two TCP segments (1,628 bytes), which some middleboxes and servers fail on. "
        "Off: the hybrid group is offered with an X25519 share (517 bytes), as Postfix 3.11 does. "
        'README "Outbound".',
        alias=False,
    ),
    Setting(
        "postfix_cert_file",
        None,
        validators.path_or_none,
        "Postfix certificate (chain) as your ACME client writes it; with mailtls_cert_watch Postfix "
        "serves a checked copy, else smtpd_tls_cert_file names it; a setting that would serve "
        "another certificate (smtpd_tls_chain_files, an ECDSA pair, a master.cf -o) stops the "
        "deploy. Unset keeps what main.cf has: the watcher's copy too, which is then no longer "
        "renewed (every run warns, docs/certificates.md).",
    ),
    Setting(
        "postfix_key_file",
        None,
        validators.path_or_none,
        "Postfix private key, as for the certificate; unset keeps what main.cf has.",
    ),
    Setting(
        "dovecot_cert_file",
        None,
        validators.path_or_none,
        "Dovecot certificate (chain), as for Postfix's (a certificate set after 99-mailtls.conf, "
        "in a block, or an alternative one stops the deploy). Unset keeps what Dovecot uses now: "
        "the one 99-mailtls.conf names stays named, the watcher's copy too (no longer renewed: "
        "every run warns), until a file read after it sets another.",
    ),
    Setting(
        "dovecot_key_file",
        None,
        validators.path_or_none,
        "Dovecot private key; unset keeps what Dovecot uses now.",
    ),
    Setting(
        "postfix_submission",
        True,
        validators.boolean,
        "Create the submission service (587, STARTTLS required) in master.cf when no service "
        "listens on 587. Whatever serves 587 (submission, 587, [addr]:587) gets the "
        "mandatory-TLS policy.",
    ),
    Setting(
        "postfix_submissions",
        True,
        validators.boolean,
        "Create the submissions service (465, implicit TLS) in master.cf when no service "
        "listens on 465. Whatever serves 465 (smtps, submissions, 465, [addr]:465) gets the "
        "mandatory-TLS policy.",
    ),
    Setting(
        "dh_source",
        "ffdhe3072",
        validators.choice("ffdhe3072", "ffdhe4096", "generated"),
        "DH parameters for profiles with DHE: an RFC 7919 group shipped in files/dh/ "
        "(ffdhe3072, ffdhe4096) or safe-prime parameters generated on the host (generated).",
    ),
    Setting(
        "dh_bits",
        3072,
        validators.dh_bits,
        "Size of generated DH parameters: 2048, 3072 or 4096 (dh_source=generated only).",
    ),
    Setting(
        "dh_file",
        "/etc/ssl/mailtls/dh.pem",
        validators.path,
        "Where the DH parameter file lives on the host (used by Postfix and Dovecot).",
    ),
    Setting(
        "dh_rotation",
        False,
        validators.boolean,
        "Regenerate the DH parameters by cron (dh_source=generated only; a fixed RFC 7919 "
        "group never changes, so rotating it would do nothing).",
    ),
    Setting(
        "dh_rotation_schedule",
        "17 4 * * 0",
        validators.cron,
        "Cron schedule (minute hour day-of-month month day-of-week) of the DH rotation.",
    ),
    Setting(
        "cert_watch",
        True,
        validators.boolean,
        "Follow certificate renewals (any ACME client): when the certificate or key files set "
        "above change, a timer checks the new pair, copies it to the files the daemons are "
        "configured with and reloads them through the safety net; a broken pair is never "
        "served (docs/certificates.md).",
        alias=False,
    ),
    Setting(
        "audit_ports",
        ",".join(map(str, REQUIRED_PORTS)),
        validators.mail_ports,
        "Audit: TLS ports that must be open (closed = failure); 110/995 are scanned when they "
        "answer.",
    ),
    Setting(
        "audit_log_hours", 24, validators.hours, "Audit: window of the mail-log report, in hours."
    ),
    Setting(
        "audit_json",
        None,
        validators.json_path,
        "Audit: where the JSON results go on the controller (`{host}` is replaced); unset: "
        "$MAILTLS_AUDIT_JSON, else audit-results/HOST.json.",
    ),
    Setting(
        "audit_html",
        None,
        validators.run_file(""),
        "Audit: the run's HTML page on the controller, one for every host of the run (no "
        "`{host}`; a path ending in / gets report.html); unset: $MAILTLS_AUDIT_HTML, else "
        "report.html beside the host's JSON.",
        alias=False,
    ),
    Setting(
        "audit_metrics",
        None,
        validators.run_file(".prom"),
        "Audit: the run's metrics on the controller, a Prometheus text file for node_exporter's "
        "textfile collector (a name ending in .prom, e.g. in its --collector.textfile.directory; "
        "a path ending in / gets mailtls_audit.prom); unset: $MAILTLS_AUDIT_METRICS, else "
        "mailtls_audit.prom beside the host's JSON.",
        alias=False,
    ),
    Setting(
        "audit_exclude_self",
        True,
        validators.boolean,
        "Audit: leave the auditing controller's own handshakes out of the log report.",
    ),
)
_BY_NAME = {s.name: s for s in SETTINGS}
_ALIASES = {s.key: s for s in SETTINGS if s.alias}


@dataclass(frozen=True)
class Settings:
    tls_profile: str
    tls_pq_hybrid: bool
    tls_resumption: str
    outbound_pq_share: bool
    postfix_cert_file: str | None
    postfix_key_file: str | None
    dovecot_cert_file: str | None
    dovecot_key_file: str | None
    postfix_submission: bool
    postfix_submissions: bool
    dh_source: str
    dh_bits: int
    dh_file: str
    dh_rotation: bool
    dh_rotation_schedule: str
    cert_watch: bool
    audit_ports: tuple[int, ...]
    audit_log_hours: float
    audit_json: str | None
    audit_html: str | None
    audit_metrics: str | None
    audit_exclude_self: bool

    def policy(self, caps: HostCaps) -> Policy:
        """The TLS policy these settings ask for, resolved for what the host runs: the one the
        deploy applies and the audit judges."""
        return resolve(
            self.tls_profile,
            caps,
            pq_hybrid=self.tls_pq_hybrid,
            dh_file=self.dh_file,
            resumption=self.tls_resumption,
            outbound_pq_share=self.outbound_pq_share,
        )


assert [f.name for f in fields(Settings)] == [s.key for s in SETTINGS], (
    "Settings and SETTINGS differ"
)


def _unknown_in_namespace(data: Mapping[str, Any], host: str) -> None:
    """Refuse a key in our namespace that is none of ours (MailTLS_tls_profile, mailtls-dh-bits too)."""
    for key in sorted(map(str, data)):
        norm = key.lower().replace("-", "_")
        if norm.startswith(NAMESPACE) and key not in _BY_NAME:
            if norm in _BY_NAME:
                hint = f" (did you mean {norm}?)"
            else:
                close = difflib.get_close_matches(norm, _BY_NAME, n=1, cutoff=0.6)
                hint = (
                    f" (did you mean {close[0]}?)" if close else f" (ours: {', '.join(_BY_NAME)})"
                )
            raise SettingsError(f"{host}: unknown setting {key!r}{hint}")


def host_settings(h) -> Settings:
    """The settings of pyinfra host `h`, from its data.

    Our own @deploy data_defaults never count as the user's value of a namespaced key: pyinfra
    merges the deploy data of the deploy (or operation) current on the host into its data, and a
    default would then contradict an old name the user set.
    """
    data = h.data.dict()
    for key, default in h.get_deploy_data().items():
        if data.get(key) is default:  # the same object: nothing in the inventory overrides it
            del data[key]
    return validate(data, h.name)


# deploy.py runs once per host and checks every host first: once per inventory is enough (host
# data does not change during a run), not N times N on the controller's one core.
_checked: weakref.WeakKeyDictionary[Any, dict[str, Settings]] = weakref.WeakKeyDictionary()


def inventory_settings(inventory) -> dict[str, Settings]:
    """host_settings() of every host of pyinfra's `inventory` by name, checked once per inventory.

    Raises SettingsError for the first host whose settings are wrong (every call, then).
    """
    known = _checked.get(inventory)
    if known is None:
        known = _checked[inventory] = {h.name: host_settings(h) for h in inventory}
    return known


def validate(data: Mapping[str, Any], host: str) -> Settings:
    """Check every key we own in `data` (host data, after group data and --data) for `host`.

    Each setting comes from its namespaced name or its old name (alias); both given must agree
    (after normalising: `true` and `yes` agree), else the host is refused: an inventory that
    says two things is not guessed at.
    """
    _unknown_in_namespace(data, host)
    values = {}
    for setting in SETTINGS:
        given = [
            (name, data[name])
            for name in (setting.name, setting.key if setting.alias else None)
            if name is not None and name in data
        ]
        checked = []
        for name, raw in given or [(setting.name, setting.default)]:
            try:
                checked.append((name, raw, setting.check(raw)))
            except ValueError as exc:
                raise SettingsError(f"{host}: {name}={raw!r}: {exc}") from None
        if len({repr(value) for _, _, value in checked}) > 1:
            (new, new_raw, _), (old, old_raw, _) = checked
            raise SettingsError(
                f"{host}: {new}={new_raw!r} and its old name {old}={old_raw!r} "
                f"disagree: set one of them"
            )
        values[setting.key] = checked[0][2]
    settings = Settings(**values)
    _check_combinations(settings, host)
    _check_cert_watch(settings, host)
    return settings


def _check_cert_watch(s: Settings, host: str) -> None:
    """The watcher's copies are its own: no setting may name a file among them."""
    for key in (
        "dh_file",
        "postfix_cert_file",
        "postfix_key_file",
        "dovecot_cert_file",
        "dovecot_key_file",
    ):
        value = getattr(s, key)
        if value and value.startswith(CERT_COPIES_DIR + "/"):
            raise SettingsError(
                f"{host}: {key}={value!r}: {CERT_COPIES_DIR}/ holds the copies the "
                "certificate watcher serves; name the files your ACME client writes"
            )


def notes(data: Mapping[str, Any]) -> list[str]:
    """Hints about host data that is not ours but looks like an old name of ours misspelt
    (`tls_profil`): never refused (it may be another deploy's), only worth a warning."""
    out = []
    for key in sorted(map(str, data)):
        norm = key.lower().replace("-", "_")
        if key in _ALIASES or norm.startswith(NAMESPACE):
            continue
        close = difflib.get_close_matches(norm, _ALIASES, n=1, cutoff=0.85)
        if close:
            out.append(
                f"{key!r} is not a mailtls setting, ignored (did you mean {NAMESPACE}{close[0]}?)"
            )
    return out


def _check_combinations(s: Settings, host: str) -> None:
    if s.dh_rotation and s.dh_source != "generated":
        raise SettingsError(
            f"{host}: dh_rotation=true needs dh_source=generated (an RFC 7919 group such as "
            f"{s.dh_source} is fixed: regenerating it changes nothing)"
        )
    if s.dh_source != "generated" and s.dh_bits != 3072 and s.dh_bits != int(s.dh_source[5:]):
        raise SettingsError(
            f"{host}: dh_bits={s.dh_bits} applies only to dh_source=generated "
            f"({s.dh_source} is {s.dh_source[5:]} bits)"
        )
    for cert, key in (
        ("postfix_cert_file", "postfix_key_file"),
        ("dovecot_cert_file", "dovecot_key_file"),
    ):
        if (getattr(s, cert) is None) != (getattr(s, key) is None):
            raise SettingsError(f"{host}: set {cert} and {key} together")
    # The deploy writes dh_file: it must not be (or sit among) the certificates and keys.
    for other in ("postfix_cert_file", "postfix_key_file", "dovecot_cert_file", "dovecot_key_file"):
        if getattr(s, other) == s.dh_file:
            raise SettingsError(
                f"{host}: dh_file={s.dh_file!r} is also {other}: the DH parameters "
                "would overwrite it"
            )
    if s.dh_file.startswith(_CERT_DIRS) or not s.dh_file.endswith(".pem"):
        raise SettingsError(
            f"{host}: dh_file={s.dh_file!r}: expected a .pem file outside "
            f"{' and '.join(_CERT_DIRS)} (the deploy writes it)"
        )
    if s.dh_file.startswith(_SHARED_DIRS):
        raise SettingsError(
            f"{host}: dh_file={s.dh_file!r}: other users can write to "
            f"{s.dh_file.rsplit('/', 1)[0]}; root must not write the DH file there"
        )


def defaults() -> dict[str, Any]:
    """{Settings field: default}."""
    return {s.key: s.default for s in SETTINGS}


def data_defaults() -> dict[str, Any]:
    """{namespaced host-data key: default}, for `@deploy(data_defaults=...)`."""
    return {s.name: s.default for s in SETTINGS}
