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
import re
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from tasks.audit.verdict import DEFAULT_EXPECTED_PORTS, MAIL_PORTS
from tasks.policy import DEFAULT_RESUMPTION, MIN_DH_BITS, PROFILES, RESUMPTION
from tasks.scripts import CONTRACT


class SettingsError(ValueError):
    """Bad host data: one line naming the key and the host."""


# Paths go into main.cf, master.cf, Dovecot config and shell commands: allow only plain absolute
# paths. fullmatch, not `$`: `$` also matches before a trailing newline, which would end a config line.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")
_MAX_PATH = 4095  # PATH_MAX less the terminating NUL
# Where the certificate watcher keeps the copies the daemons serve (tasks/certs.py).
CERT_COPIES_DIR = CONTRACT["SERVED"]
# Where certificates and keys live: a DH file there would overwrite one of them.
_CERT_DIRS = ("/etc/ssl/certs/", "/etc/ssl/private/")
# Directories others can write to (Debian): root would write the DH file through a name they can
# predict or replace. The host's own directories are checked too (tasks/dh_guard.py).
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
# Cron fields: (name, lowest, highest); day of week 7 is Sunday, as 0.
_CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
# [0-9], not \d: \d also matches other scripts' digits (Arabic-Indic, fullwidth), which cron refuses.
_CRON_ITEM = re.compile(r"(\*|([0-9]+)(?:-([0-9]+))?)(?:/([0-9]+))?", re.ASCII)
_BOOL_WORDS = {"on": True, "off": False, "yes": True, "no": False, "true": True, "false": False}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.lower()]
    raise ValueError("expected true/false (or on/off)")


def _choice(*allowed: Any) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, str) and value.isdigit() and int(value) in allowed:
            value = int(value)
        if isinstance(value, bool) or value not in allowed:
            raise ValueError(f"expected one of {', '.join(map(str, allowed))}")
        return value

    return check


def _path_or_none(value: Any) -> str | None:
    """A plain absolute file path, normalised: '/etc/ssl//certs/./x.pem' -> '/etc/ssl/certs/x.pem'
    (so comparisons with other paths cannot be walked around)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _SAFE_PATH.fullmatch(value) or "/../" in value + "/":
        raise ValueError("expected an absolute path of letters, digits and ._/+- only")
    if value.endswith("/") or value.endswith("/.") or len(value) > _MAX_PATH:
        raise ValueError("expected the path of a file (no trailing /, at most 4095 characters)")
    return re.sub(r"/(\./)+", "/", re.sub(r"/+", "/", value + "/"))[:-1]


def _path(value: Any) -> str:
    path = _path_or_none(value)
    if path is None:
        raise ValueError("a path is required")
    return path


def _dh_bits(value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected 2048, 3072 or 4096")
    if value < MIN_DH_BITS:
        raise ValueError(f"{value}-bit DH is breakable (Logjam); {MIN_DH_BITS} bits at least")
    return _choice(2048, 3072, 4096)(value)


def _cron_field(text: str, name: str, low: int, high: int) -> None:
    for item in text.split(","):
        m = _CRON_ITEM.fullmatch(item)
        if not m:
            raise ValueError(f"{name} field {text!r}: expected *, N, N-M, */S or N-M/S")
        first, last, step = m.group(2), m.group(3), m.group(4)
        for number in (first, last):
            if number is not None and not low <= int(number) <= high:
                raise ValueError(f"{name} field {text!r}: {int(number)} is outside {low}-{high}")
        if first is not None and last is not None and int(first) > int(last):
            raise ValueError(f"{name} field {text!r}: range {first}-{last} runs backwards")
        if step is not None and not 1 <= int(step) <= high:
            raise ValueError(f"{name} field {text!r}: step {int(step)} is outside 1-{high}")


def _cron(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected five cron fields, e.g. '17 4 * * 0'")
    parts = value.split()
    # Only digits and * / , -: no @reboot, names, % (a newline to cron) or shell characters.
    if len(parts) != 5:
        raise ValueError(
            "expected five cron fields (minute hour day-of-month month day-of-week), "
            "e.g. '17 4 * * 0'"
        )
    for part, (name, low, high) in zip(parts, _CRON_FIELDS, strict=True):
        _cron_field(part, name, low, high)
    return " ".join(parts)


def _ports(value: Any) -> tuple[int, ...]:
    # --data audit_ports=25 arrives as the int 25 (pyinfra parses --data values)
    one = isinstance(value, int) and not isinstance(value, bool)
    items = value.split(",") if isinstance(value, str) else [value] if one else value
    if not isinstance(items, (list, tuple)):
        raise ValueError("expected comma-separated ports, e.g. '25,587,465,143,993'")
    ports = []
    for item in items:
        text = str(item).strip()
        if not text and isinstance(item, str):
            continue  # "25,587," as the audit always took it
        if isinstance(item, bool) or not text.isdigit() or int(text) not in MAIL_PORTS:
            raise ValueError(
                f"{text!r} is not a mail port this audit knows ({', '.join(map(str, MAIL_PORTS))})"
            )
        if int(text) not in ports:
            ports.append(int(text))
    if not ports:
        raise ValueError("expected at least one port")
    return tuple(ports)


def _hours(value: Any) -> float:
    try:
        hours = float(value) if not isinstance(value, bool) else -1.0
    except (TypeError, ValueError):
        raise ValueError("expected a number of hours, e.g. 24") from None
    if not 0 < hours <= 24 * 366:  # also refuses nan and inf
        raise ValueError("expected a number of hours above 0 and at most a year")
    return hours


def _json_path(value: Any) -> str | None:
    """A controller-side path (relative or absolute, `{host}` allowed), or unset."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or any(c in value for c in "\0\n\r"):
        raise ValueError("expected a file path on the controller")
    return value


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
        _choice(*PROFILES),
        "TLS profile: intermediate (TLS >= 1.2, ECDHE + AEAD), modern (TLS 1.3 only where TLS "
        "is mandatory; port 25 keeps the intermediate floor), legacy-dhe (adds DHE suites and a "
        "DH file).",
    ),
    Setting(
        "tls_pq_hybrid",
        True,
        _bool,
        "Offer the hybrid post-quantum group X25519MLKEM768 first where the host's OpenSSL is "
        ">= 3.5 (never on OpenSSL 3.0, where it breaks handshakes).",
    ),
    Setting(
        "tls_resumption",
        DEFAULT_RESUMPTION,
        _choice(*RESUMPTION),
        "Session resumption: bounded (Postfix resumes TLS 1.2 by ticket with ticket keys usable "
        "for at most one hour, lifetime hint 4800 s; Dovecot issues no TLS 1.2 tickets) or off (no "
        "resumption: every session a full handshake). TLS 1.3 resumption always adds a fresh "
        "(EC)DHE. See docs/resumption.md.",
        alias=False,
    ),
    Setting(
        "postfix_cert_file",
        None,
        _path_or_none,
        "Postfix certificate (chain) as your ACME client writes it; with mailtls_cert_watch Postfix "
        "serves a checked copy, else smtpd_tls_cert_file names it; a setting that would serve "
        "another certificate (smtpd_tls_chain_files, an ECDSA pair, a master.cf -o) stops the "
        "deploy. Unset keeps what main.cf has: the watcher's copy too, which is then no longer "
        "renewed (every run warns, docs/certificates.md).",
    ),
    Setting(
        "postfix_key_file",
        None,
        _path_or_none,
        "Postfix private key, as for the certificate; unset keeps what main.cf has.",
    ),
    Setting(
        "dovecot_cert_file",
        None,
        _path_or_none,
        "Dovecot certificate (chain), as for Postfix's (a certificate set after 99-mailtls.conf, "
        "in a block, or an alternative one stops the deploy). Unset keeps what Dovecot uses now: "
        "the one 99-mailtls.conf names stays named, the watcher's copy too (no longer renewed: "
        "every run warns), until a file read after it sets another.",
    ),
    Setting(
        "dovecot_key_file",
        None,
        _path_or_none,
        "Dovecot private key; unset keeps what Dovecot uses now.",
    ),
    Setting(
        "postfix_submission",
        True,
        _bool,
        "Create the submission service (587, STARTTLS required) in master.cf when no service "
        "listens on 587. Whatever serves 587 (submission, 587, [addr]:587) gets the "
        "mandatory-TLS policy.",
    ),
    Setting(
        "postfix_submissions",
        True,
        _bool,
        "Create the submissions service (465, implicit TLS) in master.cf when no service "
        "listens on 465. Whatever serves 465 (smtps, submissions, 465, [addr]:465) gets the "
        "mandatory-TLS policy.",
    ),
    Setting(
        "dh_source",
        "ffdhe3072",
        _choice("ffdhe3072", "ffdhe4096", "generated"),
        "DH parameters for profiles with DHE: an RFC 7919 group shipped in files/dh/ "
        "(ffdhe3072, ffdhe4096) or safe-prime parameters generated on the host (generated).",
    ),
    Setting(
        "dh_bits",
        3072,
        _dh_bits,
        "Size of generated DH parameters: 2048, 3072 or 4096 (dh_source=generated only).",
    ),
    Setting(
        "dh_file",
        "/etc/ssl/mailtls/dh.pem",
        _path,
        "Where the DH parameter file lives on the host (used by Postfix and Dovecot).",
    ),
    Setting(
        "dh_rotation",
        False,
        _bool,
        "Regenerate the DH parameters by cron (dh_source=generated only; a fixed RFC 7919 "
        "group never changes, so rotating it would do nothing).",
    ),
    Setting(
        "dh_rotation_schedule",
        "17 4 * * 0",
        _cron,
        "Cron schedule (minute hour day-of-month month day-of-week) of the DH rotation.",
    ),
    Setting(
        "cert_watch",
        True,
        _bool,
        "Follow certificate renewals (any ACME client): when the certificate or key files set "
        "above change, a timer checks the new pair, copies it to the files the daemons are "
        "configured with and reloads them through the safety net; a broken pair is never "
        "served (docs/certificates.md).",
        alias=False,
    ),
    Setting(
        "audit_ports",
        ",".join(map(str, DEFAULT_EXPECTED_PORTS)),
        _ports,
        "Audit: TLS ports that must be open (closed = failure); 110/995 are scanned when they "
        "answer.",
    ),
    Setting("audit_log_hours", 24, _hours, "Audit: window of the mail-log report, in hours."),
    Setting(
        "audit_json",
        None,
        _json_path,
        "Audit: where the JSON results go on the controller (`{host}` is replaced); unset: "
        "$MAILTLS_AUDIT_JSON, else audit-results/HOST.json.",
    ),
    Setting(
        "audit_exclude_self",
        True,
        _bool,
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
    audit_exclude_self: bool


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


def markdown_table() -> str:
    """The README's settings table, generated from SETTINGS (a unit test keeps them equal)."""
    rows = ["| key | old name (alias) | default | what it does |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = (
            "unset"
            if s.default is None
            else f"`{str(s.default).lower() if isinstance(s.default, bool) else s.default}`"
        )
        alias = f"`{s.key}`" if s.alias else "-"
        rows.append(f"| `{s.name}` | {alias} | {default} | {s.doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
