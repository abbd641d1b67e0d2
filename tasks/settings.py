"""Every user-facing host-data key: its default, what it does, and how it is checked. No I/O.

Keys are flat so inventories, group_data/all.py and `--data key=value` all work the same.
`validate(data, host)` returns a frozen Settings or raises SettingsError naming the key and host;
deploy.py runs it for every host before any operation, so bad input never touches a host.

    >>> validate({"tls_profile": "modern"}, "mx1").tls_profile
    'modern'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from collections.abc import Callable, Mapping
from typing import Any

from tasks.policy import MIN_DH_BITS, PROFILES


class SettingsError(ValueError):
    """Bad host data: one line naming the key and the host."""


# Paths go into main.cf, master.cf, Dovecot config and shell commands: allow only plain absolute
# paths. fullmatch, not `$`: `$` also matches before a trailing newline, which would end a config line.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")
_MAX_PATH = 4095  # PATH_MAX less the terminating NUL
# Where certificates and keys live: a DH file there would overwrite one of them.
_CERT_DIRS = ("/etc/ssl/certs/", "/etc/ssl/private/")
# Cron fields: (name, lowest, highest); day of week 7 is Sunday, as 0.
_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
                ("day of week", 0, 7))
_CRON_ITEM = re.compile(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?")
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
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _SAFE_PATH.fullmatch(value) or "/../" in value + "/":
        raise ValueError("expected an absolute path of letters, digits and ._/+- only")
    if value.endswith("/") or len(value) > _MAX_PATH:
        raise ValueError("expected the path of a file (no trailing /, at most 4095 characters)")
    return value


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
        raise ValueError("expected five cron fields (minute hour day-of-month month day-of-week), "
                         "e.g. '17 4 * * 0'")
    for part, (name, low, high) in zip(parts, _CRON_FIELDS):
        _cron_field(part, name, low, high)
    return " ".join(parts)


@dataclass(frozen=True)
class Setting:
    key: str
    default: Any
    check: Callable[[Any], Any]
    doc: str


# The one table of user-facing settings. README's settings table is generated from it.
SETTINGS: tuple[Setting, ...] = (
    Setting("tls_profile", "intermediate", _choice(*PROFILES),
            "TLS profile: intermediate (TLS >= 1.2, ECDHE + AEAD), modern (TLS 1.3 only where TLS "
            "is mandatory; port 25 keeps the intermediate floor), legacy-dhe (adds DHE suites and a "
            "DH file)."),
    Setting("tls_pq_hybrid", True, _bool,
            "Offer the hybrid post-quantum group X25519MLKEM768 first where the host's OpenSSL is "
            ">= 3.5 (never on OpenSSL 3.0, where it breaks handshakes)."),
    Setting("postfix_cert_file", None, _path_or_none,
            "Postfix certificate (smtpd_tls_cert_file); unset keeps what main.cf has."),
    Setting("postfix_key_file", None, _path_or_none,
            "Postfix private key (smtpd_tls_key_file); unset keeps what main.cf has."),
    Setting("dovecot_cert_file", None, _path_or_none,
            "Dovecot certificate; unset keeps what Dovecot uses now."),
    Setting("dovecot_key_file", None, _path_or_none,
            "Dovecot private key; unset keeps what Dovecot uses now."),
    Setting("postfix_submission", True, _bool,
            "Create the submission service (587, STARTTLS required) in master.cf when no service "
            "listens on 587. Whatever serves 587 (submission, 587, [addr]:587) gets the "
            "mandatory-TLS policy."),
    Setting("postfix_submissions", True, _bool,
            "Create the submissions service (465, implicit TLS) in master.cf when no service "
            "listens on 465. Whatever serves 465 (smtps, submissions, 465, [addr]:465) gets the "
            "mandatory-TLS policy."),
    Setting("dh_source", "ffdhe3072", _choice("ffdhe3072", "ffdhe4096", "generated"),
            "DH parameters for profiles with DHE: an RFC 7919 group shipped in files/dh/ "
            "(ffdhe3072, ffdhe4096) or safe-prime parameters generated on the host (generated)."),
    Setting("dh_bits", 3072, _dh_bits,
            "Size of generated DH parameters: 2048, 3072 or 4096 (dh_source=generated only)."),
    Setting("dh_file", "/etc/ssl/mailtls/dh.pem", _path,
            "Where the DH parameter file lives on the host (used by Postfix and Dovecot)."),
    Setting("dh_rotation", False, _bool,
            "Regenerate the DH parameters by cron (dh_source=generated only; a fixed RFC 7919 "
            "group never changes, so rotating it would do nothing)."),
    Setting("dh_rotation_schedule", "17 4 * * 0", _cron,
            "Cron schedule (minute hour day-of-month month day-of-week) of the DH rotation."),
)
_BY_KEY = {s.key: s for s in SETTINGS}
# Keys with these prefixes are ours: an unknown one is a typo, refused rather than ignored.
OUR_PREFIXES = ("tls_", "postfix_", "dovecot_", "dh_", "mailtls_")


@dataclass(frozen=True)
class Settings:
    tls_profile: str
    tls_pq_hybrid: bool
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


assert [f.name for f in fields(Settings)] == [s.key for s in SETTINGS], "Settings and SETTINGS differ"


def validate(data: Mapping[str, Any], host: str) -> Settings:
    """Check every key we own in `data` (host data, after group data and --data) for `host`."""
    for key in sorted(map(str, data)):
        # TLS_Profile and tls-profile are typos of ours too: refuse them rather than ignore them.
        norm = key.lower().replace("-", "_")
        if norm.startswith(OUR_PREFIXES) and key not in _BY_KEY:
            if norm in _BY_KEY:
                hint = f" (did you mean {norm}?)"
            else:
                close = [k for k in _BY_KEY if k.split("_")[0] == norm.split("_")[0]]
                hint = f" (known: {', '.join(close)})" if close else ""
            raise SettingsError(f"{host}: unknown setting {key!r}{hint}")
    values = {}
    for setting in SETTINGS:
        raw = data.get(setting.key, setting.default)
        try:
            values[setting.key] = setting.check(raw)
        except ValueError as exc:
            raise SettingsError(f"{host}: {setting.key}={raw!r}: {exc}") from None
    settings = Settings(**values)
    _check_combinations(settings, host)
    return settings


def _check_combinations(s: Settings, host: str) -> None:
    if s.dh_rotation and s.dh_source != "generated":
        raise SettingsError(
            f"{host}: dh_rotation=true needs dh_source=generated (an RFC 7919 group such as "
            f"{s.dh_source} is fixed: regenerating it changes nothing)")
    if s.dh_source != "generated" and s.dh_bits != 3072 and s.dh_bits != int(s.dh_source[5:]):
        raise SettingsError(f"{host}: dh_bits={s.dh_bits} applies only to dh_source=generated "
                            f"({s.dh_source} is {s.dh_source[5:]} bits)")
    for cert, key in (("postfix_cert_file", "postfix_key_file"), ("dovecot_cert_file", "dovecot_key_file")):
        if (getattr(s, cert) is None) != (getattr(s, key) is None):
            raise SettingsError(f"{host}: set {cert} and {key} together")
    # The deploy writes dh_file: it must not be (or sit among) the certificates and keys.
    for other in ("postfix_cert_file", "postfix_key_file", "dovecot_cert_file", "dovecot_key_file"):
        if getattr(s, other) == s.dh_file:
            raise SettingsError(f"{host}: dh_file={s.dh_file!r} is also {other}: the DH parameters "
                                "would overwrite it")
    if s.dh_file.startswith(_CERT_DIRS) or not s.dh_file.endswith(".pem"):
        raise SettingsError(f"{host}: dh_file={s.dh_file!r}: expected a .pem file outside "
                            f"{' and '.join(_CERT_DIRS)} (the deploy writes it)")


def defaults() -> dict[str, Any]:
    return {s.key: s.default for s in SETTINGS}


def markdown_table() -> str:
    """The README's settings table, generated from SETTINGS (a unit test keeps them equal)."""
    rows = ["| key | default | what it does |", "|---|---|---|"]
    for s in SETTINGS:
        default = "unset" if s.default is None else f"`{str(s.default).lower() if isinstance(s.default, bool) else s.default}`"
        rows.append(f"| `{s.key}` | {default} | {s.doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
