"""Certificate renewals, whatever ACME client writes them, through the deploy's safety net.

With `mailtls_cert_watch` (default) and a daemon's certificate and key set, the daemon is not
pointed at the admin's files but at copies this module's watcher owns (CERT_COPIES_DIR): Postfix
at one file holding key and chain (smtpd_tls_cert_file = smtpd_tls_key_file: every new smtpd
reads it by itself, and one rename replaces it whole), Dovecot at a certificate and a key (it
reads them only when it loads its config). files/mailtls-cert-watch, run every minute by a
systemd timer, notices when the admin's files change, checks the new pair (readable, key matches,
valid now, key not readable by others), and only then replaces the copies and commits through
mailtls-apply (check, reload, probe, roll back). A broken pair is never copied. See
docs/certificates.md.

Every decision comes from checksums the MailHost fact already read (`fact_files()`); `plan()`
is pure.

    >>> from tasks.settings import validate
    >>> s = validate({"postfix_cert_file": "/etc/le/live/mx/fullchain.pem",
    ...               "postfix_key_file": "/etc/le/live/mx/privkey.pem"}, "mx1")
    >>> p = plan(s, has_dovecot=True, files={})
    >>> p.refresh, served("postfix", s, p)
    (('postfix',), ('/etc/ssl/mailtls/served/postfix.pem', '/etc/ssl/mailtls/served/postfix.pem'))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pyinfra import host, logger
from pyinfra.api import QuoteString, StringCommand, deploy, operation

from tasks.ops import FILES, put_bytes, sha256
from tasks.scripts import CONTRACT, script
from tasks.settings import CERT_COPIES_DIR as CERT_COPIES_DIR  # re-exported: its old home
from tasks.settings import Settings

WATCH_BIN = CONTRACT["CERT_WATCH_BIN"]
WATCH_CONF = CONTRACT["CERT_WATCH_CONF"]
STATE_DIR = CONTRACT["CERT_WATCH_STATE"]
SERVICE = "mailtls-cert-watch.service"
TIMER = "mailtls-cert-watch.timer"
UNIT_FILES = {
    f"/etc/systemd/system/{SERVICE}": FILES / SERVICE,
    f"/etc/systemd/system/{TIMER}": FILES / TIMER,
}
# Exists (a symlink to the timer) exactly while the timer is enabled: the fact sees it for free.
TIMER_LINK = f"/etc/systemd/system/timers.target.wants/{TIMER}"
# The files each daemon is configured with: (certificate, key), in CERT_COPIES_DIR.
COPIES = {
    "postfix": (CONTRACT["SERVED_POSTFIX"], CONTRACT["SERVED_POSTFIX"]),
    "dovecot": (CONTRACT["SERVED_DOVECOT_CERT"], CONTRACT["SERVED_DOVECOT_KEY"]),
}
_INSTALLED = (WATCH_BIN, WATCH_CONF, *UNIT_FILES, TIMER_LINK)


def sources(settings: Settings, has_dovecot: bool = True) -> dict[str, tuple[str, str]]:
    """{daemon: (certificate, key)} the watcher follows: those set, if cert_watch is on."""
    if not settings.cert_watch:
        return {}
    pairs = {"postfix": (settings.postfix_cert_file, settings.postfix_key_file)}
    if has_dovecot:
        pairs["dovecot"] = (settings.dovecot_cert_file, settings.dovecot_key_file)
    return {d: (c, k) for d, (c, k) in pairs.items() if c and k}


def fact_files(settings: Settings) -> tuple[str, ...]:
    """Paths whose checksums plan() needs, for the MailHost fact's `files=`; and the copies of
    every daemon, which tell host_conf.render() whether a daemon whose settings are unset still
    serves them."""
    out = [*_INSTALLED, *COPIES["postfix"], *COPIES["dovecot"]]
    for daemon, pair in sources(settings).items():
        out += [
            *pair,
            f"{STATE_DIR}/{daemon}.good",
            f"{STATE_DIR}/{daemon}.rejected",
            *COPIES[daemon],
        ]
    return tuple(dict.fromkeys(out))


def watch_conf(pairs: Mapping[str, tuple[str, str]]) -> str:
    """Contents of WATCH_CONF: `DAEMON CERT KEY` lines (paths are validated: no spaces)."""
    lines = "".join(f"{d} {c} {k}\n" for d, (c, k) in pairs.items())
    return "# Written by the mailtls deploy (tasks/certs.py); read by mailtls-cert-watch.\n" + lines


def state_line(cert_sha256: str, key_sha256: str) -> str:
    """What the watcher records in STATE_DIR/DAEMON.good (.rejected) for a source pair."""
    return f"{cert_sha256} {key_sha256}\n"


@dataclass(frozen=True)
class CertPlan:
    """watch: {daemon: (cert, key)} followed (empty: watcher absent, removed if there);
    refresh: daemons whose copies must be (re)made now; rejected: daemons whose current source
    pair the watcher refused (the last good copies stay in service)."""

    watch: dict[str, tuple[str, str]]
    refresh: tuple[str, ...]
    rejected: tuple[str, ...]
    remove: bool


def plan(settings: Settings, has_dovecot: bool, files: Mapping[str, str]) -> CertPlan:
    """Decide from settings and {path: sha256} of what exists on the host. No I/O."""
    watch = sources(settings, has_dovecot)
    refresh, rejected = [], []
    for daemon, (cert, key) in watch.items():
        copies = all(p in files for p in COPIES[daemon])
        if cert in files and key in files:
            seen = sha256(state_line(files[cert], files[key]).encode())
            if copies and files.get(f"{STATE_DIR}/{daemon}.good") == seen:
                continue
            if copies and files.get(f"{STATE_DIR}/{daemon}.rejected") == seen:
                rejected.append(daemon)
                continue
        refresh.append(daemon)  # also when a source is missing: the watcher says why, and fails
    remove = not watch and any(p in files for p in _INSTALLED)
    return CertPlan(watch, tuple(refresh), tuple(rejected), remove)


def served(daemon: str, settings: Settings, p: CertPlan) -> tuple[str | None, str | None]:
    """(certificate, key) the daemon's config names: the watcher's copies, or the settings."""
    if daemon in p.watch:
        return COPIES[daemon]
    return (getattr(settings, f"{daemon}_cert_file"), getattr(settings, f"{daemon}_key_file"))


@operation(is_idempotent=False)
def copy_pairs(daemons: tuple[str, ...], run: str | None = None):
    """
    Check each daemon's source pair and copy it to the files the daemon is configured with,
    marking a reload pending (mailtls-apply begin); fails, changing nothing, on a broken pair.
    Only call when plan() says so. The deploy's commit then reloads.

    **Example:**

    .. code:: python

        copy_pairs(name="Certificate copies", daemons=("postfix",))
    """
    # MAILTLS_RUN: the deploy's run id, which the watcher's mailtls-apply install records.
    env = [QuoteString(f"MAILTLS_RUN={run}")] if run else []
    yield StringCommand(
        *env, QuoteString(WATCH_BIN), "--deploy", *(QuoteString(d) for d in daemons)
    )


@operation()
def timer_enabled(units_changed: bool, enabled: bool):
    """
    Enable and start the watcher's timer when it is not enabled yet or its units changed.

    **Example:**

    .. code:: python

        timer_enabled(units_changed=op.will_change, enabled=TIMER_LINK in info["files"])
    """
    if enabled and not units_changed:
        host.noop(f"{TIMER} is enabled")
        return
    yield f"systemctl daemon-reload && systemctl enable --now {TIMER} && systemctl restart {TIMER}"


@operation()
def watcher_absent(files: Mapping[str, str]):
    """
    Stop, disable and remove the watcher (the copies stay: a config may still name them).

    **Example:**

    .. code:: python

        watcher_absent(files=info["files"])
    """
    if not any(p in files for p in _INSTALLED):
        host.noop("no certificate watcher")
        return
    yield (
        f"systemctl disable --now {TIMER} >/dev/null 2>&1; rm -f {' '.join(_INSTALLED)} && "
        "systemctl daemon-reload"
    )


@deploy("Certificate renewals")
def apply_certs(
    settings: Settings, info: dict, p: CertPlan, run: str | None = None
) -> tuple[str, ...]:
    """Install (or remove) the watcher and make the copies the daemons serve current.

    Runs before the Postfix/Dovecot config steps, which name the copies (served()); `p` is
    plan() for this host. Returns the daemons whose copies change in this run (they need the
    commit).

    **Example:**

    .. code:: python

        cert_changed = certs.apply_certs(settings=settings, info=info, p=conf.cert_plan)
    """
    files, modes = info["files"], info["modes"]
    if not p.watch:
        if p.remove:
            watcher_absent(name="No certificate watcher", files=files)
        return ()
    put_bytes(
        name="Certificate watcher",
        data=script("mailtls-cert-watch"),
        dest=WATCH_BIN,
        mode="0755",
        current_sha256=files.get(WATCH_BIN),
        current_mode=modes.get(WATCH_BIN),
    )
    put_bytes(
        name="Certificate watcher settings",
        data=watch_conf(p.watch).encode(),
        dest=WATCH_CONF,
        current_sha256=files.get(WATCH_CONF),
        current_mode=modes.get(WATCH_CONF),
    )
    for daemon in p.rejected:
        cert, _ = p.watch[daemon]
        logger.warning(
            f"{host.name}: {daemon}: the certificate/key at {cert} were refused by "
            f"mailtls-cert-watch; the last good pair stays in service "
            f"(cat {STATE_DIR}/{daemon}.status; journalctl -t mailtls-cert-watch)"
        )
    changed: tuple[str, ...] = ()
    if p.refresh:
        op = copy_pairs(
            name=f"Certificate copies ({', '.join(p.refresh)})", daemons=p.refresh, run=run
        )
        changed = p.refresh if op.will_change else ()
    units_changed = False
    for dest, src in UNIT_FILES.items():
        op = put_bytes(
            name=f"Certificate watcher unit {src.name}",
            data=src.read_bytes(),
            dest=dest,
            current_sha256=files.get(dest),
            current_mode=modes.get(dest),
        )
        units_changed = units_changed or op.will_change
    timer_enabled(
        name=f"Certificate watcher timer ({TIMER})",
        units_changed=units_changed,
        enabled=TIMER_LINK in files,
    )
    return changed
