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

Every decision comes from checksums the MailHost fact already read (`fact_files()`); this module
is the pure part (`plan()`), tasks/certs/apply.py applies it.

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

from tasks.assets import FILES, sha256
from tasks.scripts import CONTRACT
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
# The files each daemon is configured with: (certificate, key), in the contract's SERVED.
COPIES = {
    "postfix": (CONTRACT["SERVED_POSTFIX"], CONTRACT["SERVED_POSTFIX"]),
    "dovecot": (CONTRACT["SERVED_DOVECOT_CERT"], CONTRACT["SERVED_DOVECOT_KEY"]),
}
INSTALLED = (WATCH_BIN, WATCH_CONF, *UNIT_FILES, TIMER_LINK)


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
    out = [*INSTALLED, *COPIES["postfix"], *COPIES["dovecot"]]
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
    return "# Written by the mailtls deploy (tasks/certs/); read by mailtls-cert-watch.\n" + lines


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
    remove = not watch and any(p in files for p in INSTALLED)
    return CertPlan(watch, tuple(refresh), tuple(rejected), remove)


def served(daemon: str, settings: Settings, p: CertPlan) -> tuple[str | None, str | None]:
    """(certificate, key) the daemon's config names: the watcher's copies, or the settings."""
    if daemon in p.watch:
        return COPIES[daemon]
    return (getattr(settings, f"{daemon}_cert_file"), getattr(settings, f"{daemon}_key_file"))
