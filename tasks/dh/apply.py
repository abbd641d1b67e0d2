"""DH parameters, applied: the file, the rotation script, its settings and cron job, and a
background generation, from the pure plan (tasks/dh/plan.py) and the MailHost fact."""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.operations import crontab

from tasks import ops
from tasks.dh import plan as dh
from tasks.dh.plan import DhPlan
from tasks.host_facts import HostFacts
from tasks.scripts import script


@deploy("DH parameters")
def apply_dh(p: DhPlan, info: HostFacts, run: str | None = None) -> bool:
    """Make the DH file what plan `p` says; install or remove the rotation files and job.

    Runs before the Postfix/Dovecot config step (which needs mailtls-apply on the host).
    `info` is the MailHost fact read with files=dh_fact_files(settings), as `p` was made.
    Returns True when the DH file changes in this run: Postfix and Dovecot then need a reload
    even if their config does not change (a pending mark is also left, via mailtls-apply).

    **Example:**

    .. code:: python

        conf = host_conf.render(settings, info)
        dh_changed = apply_dh(p=conf.dh, info=info)
    """
    files, modes = info.files, info.modes

    dh_op = None
    if p.params is not None and p.dh_file:
        readers = ("postfix",) + (("dovecot",) if info.caps.dovecot else ())
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
            data=p.rotate_conf.encode(),
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
        minute, hour, day_of_month, month, day_of_week = p.schedule.split()
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
            f"{host.name}: DH: {p.generation_why}; generating {p.bits}-bit "
            f"parameters in the background (unit {dh.ROTATE_UNIT}; "
            "journalctl -t mailtls-dh-rotate)"
        )
        ops.start_generation(
            name=f"Generate {p.bits}-bit DH parameters in the background",
            unit=dh.ROTATE_UNIT,
            command=dh.ROTATE_BIN,
        )
    elif p.dh_file and p.bits:
        host.noop(f"DH generation: {p.generation_why}")
    return bool(dh_op and dh_op.will_change)
