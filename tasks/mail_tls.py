"""The mail TLS deploy as a reusable pyinfra @deploy: `from tasks.mail_tls import mail_tls`.

One host, in order: read everything (one fact), compute its config (tasks/host_conf.py: the
policy for what the host runs, both daemons' settings), then DH file (apply_dh, below) ->
certificate copies -> Postfix -> Dovecot, then one commit that checks, reloads and probes each daemon
whose config changed or whose reload is still pending from an interrupted run.
"""

from __future__ import annotations

import secrets
from typing import cast

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.host import Host
from pyinfra.facts.files import FindInFile, Sha256File
from pyinfra.operations import crontab

from tasks import certs, dh, dovecot_conf, host_conf, nodelay, ops, probes
from tasks.facts import MailHost
from tasks.policy import PROFILES, HostCaps, Policy
from tasks.scripts import script
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
        probes.VERIFY_PATH,
        *dh.dh_fact_files(settings),
        *certs.fact_files(settings),
    )


def unsupported(caps: HostCaps) -> str | None:
    """Why this host cannot be deployed to, in one line; None when it can."""
    if caps.postfix is None:
        return "Postfix is not installed"
    if caps.postfix[0] != 3 or caps.postfix[:2] < (3, 7):
        return (
            f"Postfix {'.'.join(map(str, caps.postfix))} is not supported (3.7 and later 3.x are)"
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
    nodelay.for_host(host)  # whatever the inventory: no 40 ms stall per command from here on
    apply_script = script("mailtls-apply")
    # Where the DH file goes is checked against the host (links, certificates, shared
    # directories) only for profiles that write one.
    guard = settings.dh_file if PROFILES[settings.tls_profile].uses_dh_file else ""
    info = host.get_fact(MailHost, files=fact_files(settings), guard=guard)
    caps = info["caps"]
    problem = unsupported(caps)
    if problem:  # this host fails, one line, no traceback; the other hosts carry on
        ops.fail(name="Supported Postfix and Dovecot", message=f"{host.name}: {problem}")
        return
    refusal = dh.host_refusal(settings.dh_file, info["guard"]) if guard else None
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
        conf = host_conf.render(settings, {**info, "dovecot_named": named})
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
    # handshakes to try): one round trip.
    files, modes = info["files"], info["modes"]
    ops.put_files(
        name=f"mailtls-apply (check, reload, verify, roll back), {probes.VERIFY_PATH}",
        files=(
            (apply_script, ops.APPLY, "0755", files.get(ops.APPLY), modes.get(ops.APPLY)),
            (
                conf.verify.encode(),
                probes.VERIFY_PATH,
                "0644",
                files.get(probes.VERIFY_PATH),
                modes.get(probes.VERIFY_PATH),
            ),
        ),
    )
    # This run's id goes with every change it installs: its commit then knows whether another
    # commit on the host (the certificate watcher, a DH rotation) verified or rolled back its
    # change meanwhile.
    run = secrets.token_hex(8)
    # The fact was read before the DH task could mark a reload pending: tell the commit directly.
    # pyinfra 3.10 types a @deploy's call as an operation's (keyword arguments, OperationMeta
    # result); a deploy returns its function's value.
    dh_changed = cast(bool, apply_dh(settings=settings, policy=policy, info=info, run=run))
    # Before the config that names the copies: they exist (checked) by the time it does.
    cert_changed = cast(
        "tuple[str, ...]",
        certs.apply_certs(settings=settings, info=info, p=conf.cert_plan, run=run),
    )

    pf_op = ops.postfix_settings(
        name="Postfix TLS settings (main.cf, master.cf)",
        conf=conf.postfix,
        postconf=info["postconf"],
        services=info["services"],
        master_params=info["master_params"],
        run=run,
    )
    reload = {"postfix": pf_op.will_change}

    if conf.dovecot is not None:
        dc_op = ops.put_bytes(
            name=f"Dovecot TLS settings ({dovecot_conf.CONF_PATH})",
            data=conf.dovecot.encode(),
            dest=dovecot_conf.CONF_PATH,
            current_sha256=files.get(dovecot_conf.CONF_PATH),
            current_mode=modes.get(dovecot_conf.CONF_PATH),
            pending=("dovecot",),
            run=run,
        )
        reload["dovecot"] = dc_op.will_change

    # While a DH rotation runs, what is pending is left to it: it commits every daemon when it
    # installs its file (a re-run during that commit would reload a second time).
    pending = set() if info["busy"] else info["pending"]
    if info["busy"] and info["pending"]:
        logger.info(
            f"{host.name}: reload pending for {', '.join(sorted(info['pending']))}: "
            "left to the DH rotation that is running (it commits every daemon)"
        )
    # One commit for both, after every change: the daemons are checked, reloaded and verified at
    # the same time. Nothing to commit (the scheduled re-run): no operation at all, since each
    # one costs the controller a call-stack walk per host.
    daemons = tuple(
        d
        for d, changed in reload.items()
        if changed or dh_changed or d in cert_changed or d in pending
    )
    if daemons:
        ops.commit(name="Postfix, Dovecot: check, reload, probe", daemons=daemons, run=run)
    else:
        host.noop("Postfix, Dovecot: nothing to check or reload")


@deploy("DH parameters")
def apply_dh(settings: Settings, policy: Policy, info: dict, run: str | None = None) -> bool:
    """Make policy.dh_file right for the profile; install or remove the rotation job.

    Runs before the Postfix/Dovecot config step (which needs mailtls-apply on the host).
    `info` is the MailHost fact read with files=DH_FACT_FILES (or dh_fact_files(settings)).
    Returns True when the DH file changes in this run: Postfix and Dovecot then need a reload
    even if their config does not change (a pending mark is also left, via mailtls-apply).

    **Example:**

    .. code:: python

        info = host.get_fact(MailHost, files=dh.dh_fact_files(settings))
        dh_changed = apply_dh(settings=settings, policy=policy, info=info)
    """
    files, modes = dict(info["files"]), info["modes"]
    if policy.offers_dhe and settings.dh_file not in info.get("asked", ()):
        # The fact was not asked for this dh_file (a caller without dh_fact_files): read it now.
        digest = host.get_fact(Sha256File, path=settings.dh_file)
        if digest:
            files[settings.dh_file] = digest
    p = dh.plan(settings, policy, files)

    dh_op = None
    if p.params is not None and p.dh_file:
        readers = ("postfix",) + (("dovecot",) if info["caps"].dovecot else ())
        dh_op = ops.put_bytes(
            name=f"DH parameters: {p.params_why}",
            data=p.params.read_bytes(),
            dest=p.dh_file,
            current_sha256=files.get(p.dh_file),
            current_mode=modes.get(p.dh_file),
            pending=readers,
            run=run,
        )
    elif p.dh_file:
        host.noop(f"{p.dh_file}: {p.params_why}")

    if p.rotation_files:
        ops.put_bytes(
            name="DH rotation settings",
            dest=dh.ROTATE_CONF,
            data=dh.rotate_conf(settings).encode(),
            current_sha256=files.get(dh.ROTATE_CONF),
            current_mode=modes.get(dh.ROTATE_CONF),
        )
        ops.put_bytes(
            name="DH rotation script",
            data=script(dh.ROTATE_SCRIPT.name),
            dest=dh.ROTATE_BIN,
            mode="0755",
            current_sha256=files.get(dh.ROTATE_BIN),
            current_mode=modes.get(dh.ROTATE_BIN),
        )

    if p.cron:
        minute, hour, day_of_month, month, day_of_week = settings.dh_rotation_schedule.split()
        crontab.crontab(
            name="DH rotation cron job",
            command=dh.ROTATE_BIN,
            cron_name=dh.CRON_NAME,
            present=True,
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month=month,
            day_of_week=day_of_week,
        )
    elif p.cron is not None:
        # Found by its command, not its name: a name line left behind (a run that failed or
        # died before cron_name_absent) names the admin's next job, which would be deleted.
        crontab.crontab(name="No DH rotation cron job", command=dh.ROTATE_BIN, present=False)
        ops.cron_name_absent(name="No DH rotation cron job name", cron_name=dh.CRON_NAME)

    if p.rotation_files is False:
        # After the cron job is gone. Removing the config also makes a generation still
        # running discard its result rather than overwrite the file we just installed.
        ops.absent(name="No DH rotation files", paths=[dh.ROTATE_CONF, dh.ROTATE_BIN], files=files)
    elif p.rotation_files is None:  # none there: no operation (a call-stack walk per host)
        host.noop("No DH rotation files: none there")

    if p.start_generation:
        logger.info(
            f"{host.name}: DH: {p.generation_why}; generating {settings.dh_bits}-bit "
            f"parameters in the background (unit {dh.ROTATE_UNIT}; "
            "journalctl -t mailtls-dh-rotate)"
        )
        ops.start_generation(
            name=f"Generate {settings.dh_bits}-bit DH parameters in the background",
            unit=dh.ROTATE_UNIT,
            command=dh.ROTATE_BIN,
        )
    elif p.dh_file and settings.dh_source == "generated":
        host.noop(f"DH generation: {p.generation_why}")
    return bool(dh_op and dh_op.will_change)
