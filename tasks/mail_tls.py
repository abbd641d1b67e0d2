"""The mail TLS deploy as a reusable pyinfra @deploy: `from tasks.mail_tls import mail_tls`.

One host, in order: read everything (one fact), make every plan (tasks/host_conf.py: the policy
for what the host runs, DH, certificates, both daemons' settings, what the commit verifies),
install the safety net, then each feature's apply step: DH file (tasks/dh/apply.py) ->
certificate copies (tasks/certs/apply.py) -> Postfix -> Dovecot, then one commit that checks,
reloads and probes each daemon whose config changed or whose reload is still pending from an
interrupted run.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import cast

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.host import Host
from pyinfra.facts.files import FindInFile

from tasks import host_conf, nodelay, ops
from tasks.certs import plan as certs
from tasks.certs.apply import apply_certs
from tasks.dh import plan as dh
from tasks.dh.apply import apply_dh
from tasks.dovecot import conf as dovecot_conf
from tasks.dovecot.apply import apply_dovecot
from tasks.facts import MailHost
from tasks.policy import GATES, PROFILES, HostCaps, minver
from tasks.postfix.apply import apply_postfix
from tasks.safety import verify as verify_conf
from tasks.safety.apply import install_safety_net
from tasks.settings import Settings, data_defaults, host_settings

# The certificate lines of our Dovecot file, both versions' (dovecot_conf.CERT_KEYS).
CERT_LINES = (
    "^(" + "|".join(k for keys in dovecot_conf.CERT_KEYS.values() for k in keys[:2]) + ") ="
)


def fact_files(settings: Settings) -> tuple[str, ...]:
    """The files whose checksums the deploy's MailHost fact reads."""
    return (
        ops.APPLY,
        dovecot_conf.CONF_PATH,
        verify_conf.VERIFY_PATH,
        *dh.dh_fact_files(settings),
        *certs.fact_files(settings),
    )


def unsupported(caps: HostCaps) -> str | None:
    """Why this host cannot be deployed to, in one line; None when it can."""
    if caps.postfix is None:
        return "Postfix is not installed"
    if caps.postfix[0] != 3 or not minver(caps, "postfix_supported"):
        return (
            f"Postfix {'.'.join(map(str, caps.postfix))} is not supported "
            f"({'.'.join(map(str, GATES['postfix_supported'][1]))} and later 3.x are)"
        )
    if caps.dovecot is not None:
        try:
            dovecot_conf.major(caps)
        except ValueError as exc:
            return str(exc)
    return None


def settings_for(h: Host) -> Settings:
    """The host's settings (tasks.settings.host_settings: our data_defaults do not count)."""
    return host_settings(h)


# data_defaults: `host.data.mailtls_tls_profile` works inside the deploy, pyinfra's way.
@deploy("Mail TLS: forward-secret Postfix and Dovecot", data_defaults=data_defaults())
def mail_tls(settings: Settings | None = None) -> None:
    """Apply the TLS policy to the current host.

    **Example:**

    .. code:: python

        from tasks.mail_tls import mail_tls
        mail_tls()  # settings from host data (mailtls_tls_profile, mailtls_dh_source, ...)
    """
    settings = settings or settings_for(host)
    nodelay.for_host(host)  # whatever the inventory: no delayed-ACK stall per command from here on
    # Where the DH file goes is checked against the host (links, certificates, shared
    # directories) only for profiles that write one.
    guard = settings.dh_file if PROFILES[settings.tls_profile].uses_dh_file else ""
    info = host.get_fact(MailHost, files=fact_files(settings), guard=guard)
    caps = info.caps
    problem = unsupported(caps)
    if problem:  # this host fails, one line, no traceback; the other hosts carry on
        ops.fail(name="Supported Postfix and Dovecot", message=f"{host.name}: {problem}")
        return
    refusal = dh.host_refusal(settings.dh_file, info.guard) if guard else None
    if refusal:  # a settings error: it stops the whole run, before any change on any host
        raise PyinfraError(f"invalid settings: {host.name}: {refusal}")
    # Pre-flight (pure): everything rendered and every override found before anything changes.
    conf = host_conf.render(settings, info)
    if conf.read_dovecot_named:
        # Certificate settings unset, and our Dovecot file's checksum does not tell which
        # certificate it names (a changed profile, an older mailtls, the settings' files named
        # directly): one small read, only in a run that rewrites that file anyway.
        lines = host.get_fact(
            FindInFile, path=dovecot_conf.CONF_PATH, pattern=CERT_LINES, extended_regex=True
        )
        named = dovecot_conf.certificate("\n".join(lines or ()))
        conf = host_conf.render(settings, replace(info, dovecot_named=named, named_read=True))
    policy = conf.policy
    if conf.refusals or conf.postfix is None or conf.verify is None:
        ops.fail(
            name="Pre-flight: settings outside mailtls override the TLS policy",
            message="\n".join(f"{host.name}: {r}" for r in conf.refusals)
            + f"\n{host.name}: nothing was changed on this host",
        )
        return
    for note in (*policy.notes, *conf.postfix.notes, *conf.warnings):
        logger.warning(f"{host.name}: {note}")
    if conf.dovecot is None:
        logger.info(f"{host.name}: Dovecot is not installed, skipping it")

    # The safety net, and what its commit verifies after each reload (read-back values and
    # handshakes to try).
    install_safety_net(conf.verify, info)
    # This run's id goes with every change it installs: its commit then knows whether another
    # commit on the host (the certificate watcher, a DH rotation) verified or rolled back its
    # change meanwhile.
    run = secrets.token_hex(8)
    # Each feature applies its plan to the fact, in this order: the DH file and the certificate
    # copies exist (checked) before the config that names them. The fact was read before the DH
    # step could mark a reload pending: its result tells the commit directly. pyinfra 3.10 types
    # a @deploy's call as an operation's (keyword arguments, OperationMeta result); a deploy
    # returns its function's value.
    dh_changed = cast(bool, apply_dh(p=conf.dh, info=info, run=run))
    cert_changed = cast("tuple[str, ...]", apply_certs(info=info, p=conf.cert_plan, run=run))
    reload = {"postfix": apply_postfix(conf.postfix, info, run)}
    if conf.dovecot is not None:
        reload["dovecot"] = apply_dovecot(conf.dovecot, info, run)

    # While a DH rotation runs, what is pending is left to it: it commits every daemon when it
    # installs its file (a re-run during that commit would reload a second time).
    pending = set() if info.busy else info.pending
    if info.busy and info.pending:
        logger.info(
            f"{host.name}: reload pending for {', '.join(sorted(info.pending))}: "
            "left to the DH rotation that is running (it commits every daemon)"
        )
    # A daemon systemd reports failed (the morning after a release upgrade: a file the new
    # version refuses, ours among them) is ours to bring back: the commit starts it once its
    # config checks, and verifies it, with or without a change. One the admin stopped or
    # disabled stays as it is, and the run says so.
    down = tuple(d for d in reload if d in info.units and info.units[d].state == "down")
    idle = {
        d: info.units[d].state
        for d in reload
        if d in info.units and info.units[d].state in ("stopped", "disabled")
    }
    for d in down:
        logger.warning(
            f"{host.name}: {d} is down (systemd: its unit failed): the commit checks its "
            "configuration, starts it and verifies it"
        )
    for d, st in idle.items():
        why = "disabled" if st == "disabled" else "stopped (enabled, not running)"
        logger.warning(
            f"{host.name}: {d} is {why}: left as it is; its TLS configuration is written and "
            "checked, and served once it starts"
        )
    # One commit for both, after every change: the daemons are checked, reloaded and verified at
    # the same time. Nothing to commit (the scheduled re-run): no operation at all, since each
    # one costs the controller a call-stack walk per host.
    daemons = tuple(
        d
        for d, changed in reload.items()
        if changed or dh_changed or d in cert_changed or d in pending or d in down
    )
    name = "Postfix, Dovecot: check, reload, probe"
    if down:
        name += f"; start {', '.join(down)} (down)"
    if daemons:
        ops.commit(name=name, daemons=daemons, run=run)
    else:
        left = "".join(f"; {d} {st}: left as it is" for d, st in idle.items())
        host.noop(f"Postfix, Dovecot: nothing to check or reload{left}")
