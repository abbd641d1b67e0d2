"""DH parameters for profiles that offer DHE, and their rotation by cron, done safely.

Two sources (host data `dh_source`):
- `ffdhe3072` / `ffdhe4096`: an RFC 7919 group shipped in files/dh/, uploaded as is. Fixed
  groups never change, so there is nothing to rotate.
- `generated`: safe-prime parameters of `dh_bits` made on the host by files/mailtls-dh-rotate.
  That takes minutes at 3072/4096 bits, so the deploy never waits for it: when the file is
  missing it installs the RFC 7919 group of the same size at once (a valid placeholder) and
  starts the script in the background (`systemd-run --unit=mailtls-dh-rotate`); the script
  swaps in its parameters and reloads the daemons when done. With `dh_rotation` a named cron
  job runs the same script on `dh_rotation_schedule`.

Every decision is made from checksums the MailHost fact already read (no extra round trips):
pass `dh_fact_files(settings)` in its `files=`. This module is the pure part: `plan()` holds all
the logic, `host_refusal()` judges where the file would go. tasks/dh/apply.py turns a plan
into operations (tasks/ops.py: put_bytes, absent, start_generation, cron_name_absent).

    >>> from tasks.settings import validate
    >>> s = validate({"tls_profile": "legacy-dhe", "dh_source": "generated"}, "mx1")
    >>> from tasks.policy import HostCaps, resolve
    >>> p = resolve("legacy-dhe", HostCaps((3, 7), (2, 3), (3, 0)), dh_file=s.dh_file)
    >>> plan(s, p, {}).start_generation
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.assets import FILES, sha256
from tasks.policy import MIN_DH_BITS, Policy
from tasks.scripts import CONTRACT
from tasks.settings import Settings, defaults

ROTATE_SCRIPT = FILES / "mailtls-dh-rotate"
ROTATE_BIN = CONTRACT["DH_ROTATE_BIN"]
ROTATE_CONF = CONTRACT["DH_ROTATE_CONF"]
# Written by the script after it installed parameters: "made here, for these settings".
ROTATE_STAMP = CONTRACT["DH_ROTATE_STAMP"]
ROTATE_UNIT = "mailtls-dh-rotate"
# systemd keeps a transient unit's file here while the unit is loaded; with --collect it is
# unloaded as soon as it ends (even on failure), so the file exists exactly while it runs.
ROTATE_RUNNING = f"/run/systemd/transient/{ROTATE_UNIT}.service"
# Must not contain the command: crontab.crontab rewrites every line matching the command when
# the schedule changes, its own `# pyinfra-name=` line included.
CRON_NAME = "mailtls-dh-rotation"
# dh_source values that name a shipped RFC 7919 group. ffdhe2048 is shipped only as the
# placeholder for dh_bits=2048 (internet.nl grades it insufficient).
FIXED_SOURCES = {"ffdhe3072": 3072, "ffdhe4096": 4096}
GENERATED_BITS = (2048, 3072, 4096)

DEFAULT_DH_FILE: str = defaults()["dh_file"]

# Paths plan() needs checksums of, for the MailHost fact's `files=` (dh_fact_files() adds a
# dh_file that is not the default).
DH_FACT_FILES = (DEFAULT_DH_FILE, ROTATE_BIN, ROTATE_CONF, ROTATE_STAMP, ROTATE_RUNNING)


def dh_fact_files(settings: Settings) -> tuple[str, ...]:
    """DH_FACT_FILES plus this host's dh_file when it is not the default."""
    extra = () if settings.dh_file in DH_FACT_FILES else (settings.dh_file,)
    return DH_FACT_FILES + extra


def shipped_group(bits: int) -> Path:
    """The RFC 7919 group of `bits` bits shipped in files/dh/."""
    return FILES / "dh" / f"ffdhe{bits}.pem"


def rotate_conf(settings: Settings) -> str:
    """Contents of ROTATE_CONF: what the script generates, and where."""
    return (
        "# Written by the mailtls deploy (tasks/dh/); read by mailtls-dh-rotate.\n"
        f"DH_FILE={settings.dh_file}\n"
        f"DH_BITS={settings.dh_bits}\n"
    )


def rotate_stamp(dh_file: str, bits: int, dh_sha256: str) -> str:
    """Contents the script writes to ROTATE_STAMP after installing parameters (same bytes: the
    contract's printf format, DH_STAMP_FORMAT).

    >>> rotate_stamp("/etc/ssl/mailtls/dh.pem", 3072, "4f2a")
    'DH_FILE=/etc/ssl/mailtls/dh.pem\\nDH_BITS=3072\\nDH_SHA256=4f2a\\n'
    """
    return CONTRACT["DH_STAMP_FORMAT"].replace("\\n", "\n") % (dh_file, bits, dh_sha256)


def host_refusal(dh_file: str, guard: Sequence[str]) -> str | None:
    """Why `dh_file` must not be written on this host, or None. `guard`: the MailHost fact's
    lines for guard=dh_file. Pure; checked before any change (settings.py cannot see the host).

    Refused: a symlink (the deploy never replaces a link by a plain file; certbot's live/ files
    are links); the host's current certificate or key, under any name (main.cf, master.cf,
    Dovecot); a directory on the way that others can write to or that is sticky (root would
    write through a name they can predict or replace).

        >>> host_refusal("/srv/dh.pem", ["real /srv/dh.pem", "dir 0 0 1777 /srv"])
        "dh_file='/srv/dh.pem': /srv is writable by others or sticky (mode 1777): root must not write the DH file there"
    """
    real = dh_file
    for line in guard:
        kind, _, rest = line.partition(" ")
        if kind == "link":
            return (
                f"dh_file={dh_file!r} is a symlink (to {rest}): the deploy never replaces a link "
                "by a plain file; name the file itself, or another path"
            )
        if kind == "real":
            real = rest
    for line in guard:
        kind, _, rest = line.partition(" ")
        if kind == "tls":
            resolved, _, named = rest.partition(" ")
            if real in (resolved, named) or dh_file in (resolved, named):
                return (
                    f"dh_file={dh_file!r} is a certificate or key the host uses now ({named}): "
                    "the DH parameters would overwrite it"
                )
        elif kind == "dir":
            uid, gid, mode, path = (rest.split(" ", 3) + ["", "", "", ""])[:4]
            bits = int(mode, 8) if mode.isdigit() else 0o7777
            if uid != "0":
                return (
                    f"dh_file={dh_file!r}: {path} is owned by uid {uid}, not root: root must not "
                    "write the DH file there"
                )
            if bits & 0o1002 or (bits & 0o020 and gid != "0"):
                return (
                    f"dh_file={dh_file!r}: {path} is writable by others or sticky (mode {mode}): "
                    "root must not write the DH file there"
                )
    return None


@dataclass(frozen=True)
class DhPlan:
    """What apply_dh() does on one host; built by plan() from host data and checksums.

    params: shipped group to install at dh_file (the chosen group, or a placeholder), or None.
    rotation_files: True = script and config present, False = removed (some are there), None =
    nothing to do (none there).
    cron: True = job present, False = absent, None = leave crontab alone (nothing of ours).
    """

    dh_file: str | None
    params: Path | None
    params_why: str
    rotation_files: bool | None
    start_generation: bool
    generation_why: str
    cron: bool | None
    # From the settings, for the apply step (the settings stop at the plan).
    bits: int = 0  # what the host generates (dh_source=generated), else 0
    rotate_conf: str = ""  # ROTATE_CONF's text where rotation_files is True
    schedule: str = ""  # the cron job's five fields where cron is True


def plan(settings: Settings, policy: Policy, files: Mapping[str, str]) -> DhPlan:
    """Decide from settings, policy and {path: sha256} of what exists on the host. No I/O.

    Raises ValueError for parameters weaker than MIN_DH_BITS (settings.validate refuses them
    first; this is the last line before a host is touched).
    """
    ours = ROTATE_BIN in files or ROTATE_CONF in files
    if not policy.offers_dhe:
        # The DH file stays: Postfix/Dovecot config may still name it until the config step
        # that runs after us rewrites it, and a missing file would break their TLS.
        return DhPlan(
            None,
            None,
            f"profile {policy.name} offers no DHE",
            False if ours else None,
            False,
            "no DHE",
            False if ours else None,
        )

    dh_file = policy.dh_file
    if not dh_file:
        raise ValueError(f"profile {policy.name} offers DHE but has no DH file")
    if settings.dh_source in FIXED_SOURCES:
        bits = FIXED_SOURCES[settings.dh_source]
        return DhPlan(
            dh_file,
            shipped_group(bits),
            f"RFC 7919 {settings.dh_source}",
            False if ours else None,
            False,
            "fixed group: nothing to generate",
            False if ours else None,
        )
    if settings.dh_source != "generated":
        raise ValueError(f"unknown dh_source {settings.dh_source!r}")
    if settings.dh_bits < MIN_DH_BITS or settings.dh_bits not in GENERATED_BITS:
        raise ValueError(f"dh_bits={settings.dh_bits}: expected 2048, 3072 or 4096")

    current = files.get(dh_file)
    params, params_why = None, "generated parameters in place"
    if current is None:
        params = shipped_group(settings.dh_bits)
        params_why = f"placeholder ffdhe{settings.dh_bits} until generated parameters are ready"
    stamp_ok = current is not None and files.get(ROTATE_STAMP) == sha256(
        rotate_stamp(dh_file, settings.dh_bits, current).encode()
    )
    running = ROTATE_RUNNING in files
    if stamp_ok:
        start, why = False, f"{dh_file} holds {settings.dh_bits}-bit parameters generated here"
    elif running:
        start, why = False, f"unit {ROTATE_UNIT} is already generating"
    elif current is None:
        start, why = True, f"{dh_file} is missing"
    else:
        start, why = (
            True,
            (
                f"{dh_file} is not (yet) {settings.dh_bits}-bit parameters generated "
                "here (placeholder, other settings, or an interrupted run)"
            ),
        )
    return DhPlan(
        dh_file,
        params,
        params_why,
        True,
        start,
        why,
        settings.dh_rotation,
        bits=settings.dh_bits,
        rotate_conf=rotate_conf(settings),
        schedule=settings.dh_rotation_schedule,
    )
