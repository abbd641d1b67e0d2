"""Certificate renewals, applied: the watcher, its settings and units, and the copies the
daemons serve, from the pure plan (tasks/certs/plan.py) and the MailHost fact.

    >>> list(copy_pairs._inner(daemons=("postfix",), run="ab12"))
    [StringCommand(MAILTLS_RUN=ab12 /usr/local/sbin/mailtls-cert-watch --deploy postfix)]
"""

from __future__ import annotations

from collections.abc import Mapping

from pyinfra import host, logger
from pyinfra.api import QuoteString, StringCommand, deploy, operation

from tasks.certs.plan import (
    INSTALLED,
    STATE_DIR,
    TIMER,
    TIMER_LINK,
    UNIT_FILES,
    WATCH_BIN,
    WATCH_CONF,
    CertPlan,
    watch_conf,
)
from tasks.host_facts import HostFacts
from tasks.ops import put_bytes
from tasks.scripts import script


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

        timer_enabled(units_changed=op.will_change, enabled=TIMER_LINK in info.files)
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

        watcher_absent(files=info.files)
    """
    if not any(p in files for p in INSTALLED):
        host.noop("no certificate watcher")
        return
    yield (
        f"systemctl disable --now {TIMER} >/dev/null 2>&1; rm -f {' '.join(INSTALLED)} && "
        "systemctl daemon-reload"
    )


@deploy("Certificate renewals")
def apply_certs(info: HostFacts, p: CertPlan, run: str | None = None) -> tuple[str, ...]:
    """Install (or remove) the watcher and make the copies the daemons serve current.

    Runs before the Postfix/Dovecot config steps, which name the copies (served()); `p` is
    plan() for this host. Returns the daemons whose copies change in this run (they need the
    commit).

    **Example:**

    .. code:: python

        cert_changed = apply_certs(info=info, p=conf.cert_plan)
    """
    files, modes = info.files, info.modes
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
