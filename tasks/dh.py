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
pass `dh_fact_files(settings)` in its `files=`. `plan()` is pure and holds all the logic;
`apply_dh()` turns a plan into operations.

    >>> from tasks.settings import validate
    >>> s = validate({"tls_profile": "legacy-dhe", "dh_source": "generated"}, "mx1")
    >>> from tasks.policy import HostCaps, resolve
    >>> p = resolve("legacy-dhe", HostCaps((3, 7), (2, 3), (3, 0)), dh_file=s.dh_file)
    >>> plan(s, p, {}).start_generation
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import QuoteString, StringCommand, deploy, operation
from pyinfra.api import FactBase
from pyinfra.facts.files import Sha256File
from pyinfra.operations import crontab

from tasks.ops import put_bytes, sha256
from tasks.policy import MIN_DH_BITS, Policy
from tasks.settings import Settings, defaults

FILES_DIR = Path(__file__).resolve().parent.parent / "files"
ROTATE_SCRIPT = FILES_DIR / "mailtls-dh-rotate"
ROTATE_BIN = "/usr/local/sbin/mailtls-dh-rotate"
ROTATE_CONF = "/etc/mailtls/dh-rotate.conf"
# Written by the script after it installed parameters: "made here, for these settings".
ROTATE_STAMP = "/var/lib/mailtls/dh-rotate.done"
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

# Paths apply_dh() needs checksums of, for the MailHost fact's `files=`. A dh_file the fact was
# not asked for costs apply_dh() one extra small fact (dh_fact_files() adds it).
DH_FACT_FILES = (DEFAULT_DH_FILE, ROTATE_BIN, ROTATE_CONF, ROTATE_STAMP, ROTATE_RUNNING)


def dh_fact_files(settings: Settings) -> tuple[str, ...]:
    """DH_FACT_FILES plus this host's dh_file when it is not the default."""
    extra = () if settings.dh_file in DH_FACT_FILES else (settings.dh_file,)
    return DH_FACT_FILES + extra


def shipped_group(bits: int) -> Path:
    """The RFC 7919 group of `bits` bits shipped in files/dh/."""
    return FILES_DIR / "dh" / f"ffdhe{bits}.pem"


def sha256_path(path: Path) -> str:
    return sha256(path.read_bytes())


def rotate_conf(settings: Settings) -> str:
    """Contents of ROTATE_CONF: what the script generates, and where."""
    return (
        "# Written by the mailtls deploy (tasks/dh.py); read by mailtls-dh-rotate.\n"
        f"DH_FILE={settings.dh_file}\n"
        f"DH_BITS={settings.dh_bits}\n"
    )


def rotate_stamp(dh_file: str, bits: int, dh_sha256: str) -> str:
    """Contents the script writes to ROTATE_STAMP after installing parameters (same bytes)."""
    return f"DH_FILE={dh_file}\nDH_BITS={bits}\nDH_SHA256={dh_sha256}\n"


def host_refusal(dh_file: str, guard: list[str]) -> str | None:
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
            return (f"dh_file={dh_file!r} is a symlink (to {rest}): the deploy never replaces a link "
                    "by a plain file; name the file itself, or another path")
        if kind == "real":
            real = rest
    for line in guard:
        kind, _, rest = line.partition(" ")
        if kind == "tls":
            resolved, _, named = rest.partition(" ")
            if real in (resolved, named) or dh_file in (resolved, named):
                return (f"dh_file={dh_file!r} is a certificate or key the host uses now ({named}): "
                        "the DH parameters would overwrite it")
        elif kind == "dir":
            uid, gid, mode, path = (rest.split(" ", 3) + ["", "", "", ""])[:4]
            bits = int(mode, 8) if mode.isdigit() else 0o7777
            if uid != "0":
                return (f"dh_file={dh_file!r}: {path} is owned by uid {uid}, not root: root must not "
                        "write the DH file there")
            if bits & 0o1002 or (bits & 0o020 and gid != "0"):
                return (f"dh_file={dh_file!r}: {path} is writable by others or sticky (mode {mode}): "
                        "root must not write the DH file there")
    return None


@dataclass(frozen=True)
class DhPlan:
    """What apply_dh() does on one host; built by plan() from host data and checksums.

    params: shipped group to install at dh_file (the chosen group, or a placeholder), or None.
    rotation_files: True = script and config present, False = absent (removed if there).
    cron: True = job present, False = absent, None = leave crontab alone (nothing of ours).
    """

    dh_file: str | None
    params: Path | None
    params_why: str
    rotation_files: bool
    start_generation: bool
    generation_why: str
    cron: bool | None


def plan(settings: Settings, policy: Policy, files: Mapping[str, str]) -> DhPlan:
    """Decide from settings, policy and {path: sha256} of what exists on the host. No I/O.

    Raises ValueError for parameters weaker than MIN_DH_BITS (settings.validate refuses them
    first; this is the last line before a host is touched).
    """
    ours = ROTATE_BIN in files or ROTATE_CONF in files
    if not policy.offers_dhe:
        # The DH file stays: Postfix/Dovecot config may still name it until the config step
        # that runs after us rewrites it, and a missing file would break their TLS.
        return DhPlan(None, None, f"profile {policy.name} offers no DHE", False, False,
                      "no DHE", False if ours else None)

    dh_file = policy.dh_file
    if not dh_file:
        raise ValueError(f"profile {policy.name} offers DHE but has no DH file")
    if settings.dh_source in FIXED_SOURCES:
        bits = FIXED_SOURCES[settings.dh_source]
        return DhPlan(dh_file, shipped_group(bits), f"RFC 7919 {settings.dh_source}", False, False,
                      "fixed group: nothing to generate", False if ours else None)
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
        rotate_stamp(dh_file, settings.dh_bits, current).encode())
    running = ROTATE_RUNNING in files
    if stamp_ok:
        start, why = False, f"{dh_file} holds {settings.dh_bits}-bit parameters generated here"
    elif running:
        start, why = False, f"unit {ROTATE_UNIT} is already generating"
    elif current is None:
        start, why = True, f"{dh_file} is missing"
    else:
        start, why = True, (f"{dh_file} is not (yet) {settings.dh_bits}-bit parameters generated "
                            "here (placeholder, other settings, or an interrupted run)")
    return DhPlan(dh_file, params, params_why, True, start, why, settings.dh_rotation)


@operation()
def absent(paths: list[str], files: Mapping[str, str]):
    """
    Remove files that the fact saw on the host (``files``: path -> sha256); no-op otherwise.

    **Example:**

    .. code:: python

        absent(name="Remove rotation files", paths=[ROTATE_CONF], files=info["files"])
    """
    there = [p for p in paths if p in files]
    if not there:
        host.noop(f"{', '.join(paths)} absent")
        return
    yield StringCommand("rm", "-f", *(QuoteString(p) for p in there))


@operation(is_idempotent=False)
def start_generation(unit: str = ROTATE_UNIT, command: str = ROTATE_BIN):
    """
    Start the rotation script as a transient systemd unit and return at once.

    The unit is collected when it ends, also on failure, so its file under
    /run/systemd/transient/ tells a later deploy whether it still runs. Only call when plan()
    says so: starting is a change by nature.

    **Example:**

    .. code:: python

        start_generation(name="Generate DH parameters in the background")
    """
    yield StringCommand(
        "systemctl", "is-active", "--quiet", QuoteString(unit), "||",
        "systemd-run", "--no-block", "--collect", "--quiet", QuoteString(f"--unit={unit}"),
        QuoteString("--description=mailtls: generate DH parameters"), QuoteString(command),
    )


class CronNameLines(FactBase[int]):
    """How many ``# pyinfra-name=NAME`` lines a crontab holds, wherever they are.

    pyinfra's Crontab fact drops comments that no job follows: this sees them.
    """

    def command(self, cron_name: str, user: str | None = None) -> StringCommand:
        user_args = ["-u", QuoteString(user)] if user else []
        return StringCommand("crontab", *user_args, "-l", "2>/dev/null", "|", "grep", "-cxF",
                             QuoteString(f"# pyinfra-name={cron_name}"), "||", "true")

    def process(self, output: list[str]) -> int:
        return int(output[0]) if output and output[0].strip().isdigit() else 0


@operation()
def cron_name_absent(cron_name: str, user: str | None = None):
    """
    Remove the ``# pyinfra-name=`` line of a cron job that crontab.crontab(present=False) removes.

    crontab.crontab deletes only the lines that match the job's command, so the name comment
    stays behind and would name whatever job is added after it (which a later run would then
    rewrite or delete). Call it after crontab.crontab(present=False, cron_name=...).

    **Example:**

    .. code:: python

        crontab.crontab(command="/usr/local/sbin/job", cron_name="job", present=False)
        cron_name_absent(cron_name="job")
    """
    comment = f"# pyinfra-name={cron_name}"
    if not host.get_fact(CronNameLines, cron_name=cron_name, user=user):
        host.noop(f"no cron job named {cron_name}")
        return
    user_args = ["-u", QuoteString(user)] if user else []
    yield StringCommand("crontab", *user_args, "-l", "|", "grep", "-vxF", QuoteString(comment),
                        "|", "crontab", *user_args, "-")


@deploy("DH parameters")
def apply_dh(settings: Settings, policy: Policy, info: dict) -> bool:
    """Make policy.dh_file right for the profile; install or remove the rotation job.

    Runs before the Postfix/Dovecot config step (which needs mailtls-apply on the host).
    `info` is the MailHost fact read with files=DH_FACT_FILES (or dh_fact_files(settings)).
    Returns True when the DH file changes in this run: Postfix and Dovecot then need a reload
    even if their config does not change (a pending mark is also left, via mailtls-apply).

    **Example:**

    .. code:: python

        info = host.get_fact(MailHost, files=dh.dh_fact_files(settings))
        dh_changed = dh.apply_dh(settings, policy, info)
    """
    files = dict(info["files"])
    if policy.offers_dhe and settings.dh_file not in info.get("asked", ()):
        # The fact was not asked for this dh_file (a caller without dh_fact_files): read it now.
        digest = host.get_fact(Sha256File, path=settings.dh_file)
        if digest:
            files[settings.dh_file] = digest
    p = plan(settings, policy, files)

    dh_op = None
    if p.params is not None:
        readers = ("postfix",) + (("dovecot",) if info["caps"].dovecot else ())
        dh_op = put_bytes(name=f"DH parameters: {p.params_why}", data=p.params.read_bytes(),
                          dest=p.dh_file, current_sha256=files.get(p.dh_file), pending=readers)
    elif p.dh_file:
        host.noop(f"{p.dh_file}: {p.params_why}")

    if p.rotation_files:
        put_bytes(name="DH rotation settings", dest=ROTATE_CONF,
                  data=rotate_conf(settings).encode(), current_sha256=files.get(ROTATE_CONF))
        put_bytes(name="DH rotation script", data=ROTATE_SCRIPT.read_bytes(), dest=ROTATE_BIN,
                  mode="0755", current_sha256=files.get(ROTATE_BIN))

    if p.cron is not None:
        minute, hour, day_of_month, month, day_of_week = settings.dh_rotation_schedule.split()
        crontab.crontab(
            name="DH rotation cron job" if p.cron else "No DH rotation cron job",
            command=ROTATE_BIN,
            cron_name=CRON_NAME,
            present=p.cron,
            minute=minute, hour=hour, day_of_month=day_of_month, month=month,
            day_of_week=day_of_week,
        )
        if not p.cron:
            cron_name_absent(name="No DH rotation cron job name", cron_name=CRON_NAME)

    if not p.rotation_files:
        # After the cron job is gone. Removing the config also makes a generation still
        # running discard its result rather than overwrite the file we just installed.
        absent(name="No DH rotation files", paths=[ROTATE_CONF, ROTATE_BIN], files=files)

    if p.start_generation:
        logger.info(f"{host.name}: DH: {p.generation_why}; generating {settings.dh_bits}-bit "
                    f"parameters in the background (unit {ROTATE_UNIT}; "
                    "journalctl -t mailtls-dh-rotate)")
        start_generation(name=f"Generate {settings.dh_bits}-bit DH parameters in the background")
    elif p.dh_file and settings.dh_source == "generated":
        host.noop(f"DH generation: {p.generation_why}")
    return bool(dh_op and dh_op.will_change)
