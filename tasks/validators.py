"""How each setting's value is checked and normalised: one function per kind of value, each
returning the clean value or raising ValueError with what was expected (tasks/settings.py adds
the key and the host). Pure.

    >>> path("/etc/ssl//certs/./x.pem")
    '/etc/ssl/certs/x.pem'
    >>> mail_ports("25,587,")
    (25, 587)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tasks.policy import MIN_DH_BITS, PORTS

# Paths go into main.cf, master.cf, Dovecot config and shell commands: allow only plain absolute
# paths. fullmatch, not `$`: `$` also matches before a trailing newline, which would end a config line.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")
_MAX_PATH = 4095  # PATH_MAX less the terminating NUL
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


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.lower()]
    raise ValueError("expected true/false (or on/off)")


def choice(*allowed: Any) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, str) and value.isdigit() and int(value) in allowed:
            value = int(value)
        if isinstance(value, bool) or value not in allowed:
            raise ValueError(f"expected one of {', '.join(map(str, allowed))}")
        return value

    return check


def path_or_none(value: Any) -> str | None:
    """A plain absolute file path, normalised: '/etc/ssl//certs/./x.pem' -> '/etc/ssl/certs/x.pem'
    (so comparisons with other paths cannot be walked around)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _SAFE_PATH.fullmatch(value) or "/../" in value + "/":
        raise ValueError("expected an absolute path of letters, digits and ._/+- only")
    if value.endswith("/") or value.endswith("/.") or len(value) > _MAX_PATH:
        raise ValueError("expected the path of a file (no trailing /, at most 4095 characters)")
    return re.sub(r"/(\./)+", "/", re.sub(r"/+", "/", value + "/"))[:-1]


def path(value: Any) -> str:
    path = path_or_none(value)
    if path is None:
        raise ValueError("a path is required")
    return path


def dh_bits(value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected 2048, 3072 or 4096")
    if value < MIN_DH_BITS:
        raise ValueError(f"{value}-bit DH is breakable (Logjam); {MIN_DH_BITS} bits at least")
    return choice(2048, 3072, 4096)(value)


def cron_field(text: str, name: str, low: int, high: int) -> None:
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


def cron(value: Any) -> str:
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
        cron_field(part, name, low, high)
    return " ".join(parts)


def mail_ports(value: Any) -> tuple[int, ...]:
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
        if isinstance(item, bool) or not text.isdigit() or int(text) not in PORTS:
            raise ValueError(
                f"{text!r} is not a mail port this audit knows ({', '.join(map(str, PORTS))})"
            )
        if int(text) not in ports:
            ports.append(int(text))
    if not ports:
        raise ValueError("expected at least one port")
    return tuple(ports)


def hours(value: Any) -> float:
    try:
        hours = float(value) if not isinstance(value, bool) else -1.0
    except (TypeError, ValueError):
        raise ValueError("expected a number of hours, e.g. 24") from None
    if not 0 < hours <= 24 * 366:  # also refuses nan and inf
        raise ValueError("expected a number of hours above 0 and at most a year")
    return hours


def json_path(value: Any) -> str | None:
    """A controller-side path (relative or absolute, `{host}` allowed), or unset."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or any(c in value for c in "\0\n\r"):
        raise ValueError("expected a file path on the controller")
    return value


def run_file(suffix: str) -> Callable[[Any], str | None]:
    """A controller-side path for a file written once per audit run (the HTML page, the metrics),
    or unset. `{host}` is refused: the file holds every host of the run. A path ending in '/' is
    a directory (the file gets its default name there); else, with `suffix`, it must end in it.

    >>> run_file(".prom")("/var/lib/node_exporter/textfile/")
    '/var/lib/node_exporter/textfile/'
    >>> run_file(".prom")("out/mailtls.txt")
    Traceback (most recent call last):
    ...
    ValueError: expected a file name ending in .prom (or a directory ending in /)
    """

    def check(value: Any) -> str | None:
        path = json_path(value)
        if path is None:
            return None
        if "{host}" in path:
            raise ValueError("one file per run holds every host: {host} has no place in it")
        if suffix and not path.endswith(("/", suffix)):
            raise ValueError(
                f"expected a file name ending in {suffix} (or a directory ending in /)"
            )
        return path

    return check
