"""The mail TLS deploy as a reusable pyinfra @deploy: `from tasks.deploy import mail_tls`.

One host, in order: read everything (one fact), resolve the policy for what the host runs,
then DH file -> Postfix -> Dovecot, then one commit that checks, reloads and probes each daemon
whose config changed or whose reload is still pending from an interrupted run.
"""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api import deploy

from tasks import dh, dovecot_conf, nodelay, ops, postfix_conf, probes
from tasks.facts import MailHost
from tasks.policy import resolve
from tasks.settings import Settings, validate


def fact_files(settings: Settings) -> tuple[str, ...]:
    """The files whose checksums the deploy's MailHost fact reads."""
    return (ops.APPLY, dovecot_conf.CONF_PATH, probes.VERIFY_PATH, *dh.dh_fact_files(settings))


def settings_for(current_host=None) -> Settings:
    h = current_host or host
    return validate(h.data.dict(), h.name)


@deploy("Mail TLS: forward-secret Postfix and Dovecot")
def mail_tls(settings: Settings | None = None) -> None:
    """Apply the TLS policy to the current host.

    **Example:**

    .. code:: python

        from tasks.deploy import mail_tls
        mail_tls()  # settings from host data (tls_profile, dh_source, ...)
    """
    settings = settings or settings_for()
    nodelay.for_host(host)  # whatever the inventory: no 40 ms stall per command from here on
    apply_script = (ops.FILES / "mailtls-apply").read_bytes()
    info = host.get_fact(MailHost, files=fact_files(settings))
    caps = info["caps"]
    if caps.postfix is None:
        raise RuntimeError(f"{host.name}: Postfix is not installed")
    policy = resolve(settings.tls_profile, caps, pq_hybrid=settings.tls_pq_hybrid,
                     dh_file=settings.dh_file)
    for note in policy.notes:
        logger.warning(f"{host.name}: {note}")

    # Pre-flight: everything rendered and every override found before anything changes.
    refusals = []
    try:
        pf = postfix_conf.render(
            policy, caps, info["postconf"], info["services"], info["master_params"],
            cert_file=settings.postfix_cert_file, key_file=settings.postfix_key_file,
            submission=settings.postfix_submission, submissions=settings.postfix_submissions,
        )
    except postfix_conf.MasterCfError as exc:
        pf = None
        refusals.append(f"/etc/postfix/master.cf: {exc}")
    dovecot_text = None
    if caps.dovecot is None:
        logger.info(f"{host.name}: Dovecot is not installed, skipping it")
    else:
        dovecot_text = dovecot_conf.render(policy, caps, settings.dovecot_cert_file,
                                           settings.dovecot_key_file)
        refusals += dovecot_conf.overrides(dovecot_text, info["dovecot_tree"])
    if refusals:
        ops.refuse(name="Pre-flight: settings outside mailtls override the TLS policy",
                   reasons=refusals)
        return
    for note in pf.notes:
        logger.warning(f"{host.name}: {note}")

    # The safety net, and what its commit verifies after each reload (read-back values and
    # handshakes to try): one round trip.
    verify = probes.render(
        policy, *probes.stable(pf.main, pf.params), pf.remove,
        None if dovecot_text is None else dovecot_conf.readback(dovecot_text),
    ).encode()
    ops.put_files(name=f"mailtls-apply (check, reload, verify, roll back), {probes.VERIFY_PATH}",
                  files=((apply_script, ops.APPLY, "0755", info["files"].get(ops.APPLY)),
                         (verify, probes.VERIFY_PATH, "0644", info["files"].get(probes.VERIFY_PATH))))
    # The fact was read before the DH task could mark a reload pending: tell the commit directly.
    dh_changed = dh.apply_dh(settings, policy, info)

    pf_op = ops.postfix_settings(name="Postfix TLS settings (main.cf, master.cf)", conf=pf,
                                 postconf=info["postconf"], services=info["services"],
                                 master_params=info["master_params"])
    reload = {"postfix": pf_op.will_change}

    if dovecot_text is not None:
        dc_op = ops.put_bytes(name=f"Dovecot TLS settings ({dovecot_conf.CONF_PATH})",
                              data=dovecot_text.encode(), dest=dovecot_conf.CONF_PATH,
                              current_sha256=info["files"].get(dovecot_conf.CONF_PATH),
                              pending=("dovecot",))
        reload["dovecot"] = dc_op.will_change

    # One commit for both, after every change: the daemons are checked, reloaded and probed at
    # the same time (Dovecot's fits in the second Postfix waits for a just-edited main.cf).
    ops.commit(name="Postfix, Dovecot: check, reload, probe",
               daemons=tuple(d for d, changed in reload.items()
                             if changed or dh_changed or d in info["pending"]))
