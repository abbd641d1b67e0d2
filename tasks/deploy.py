"""The mail TLS deploy as a reusable pyinfra @deploy: `from tasks.deploy import mail_tls`.

One host, in order: read everything (one fact), resolve the policy for what the host runs,
then DH file -> Postfix -> Dovecot, then one commit that checks, reloads and probes each daemon
whose config changed or whose reload is still pending from an interrupted run.
"""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import PyinfraError

from tasks import certs, dh, dovecot_conf, nodelay, ops, postfix_conf, probes
from tasks.facts import MailHost
from tasks.policy import PROFILES, HostCaps, resolve
from tasks.settings import Settings, data_defaults, host_settings


def fact_files(settings: Settings) -> tuple[str, ...]:
    """The files whose checksums the deploy's MailHost fact reads."""
    return (ops.APPLY, dovecot_conf.CONF_PATH, probes.VERIFY_PATH, *dh.dh_fact_files(settings),
            *certs.fact_files(settings))


def unsupported(caps: HostCaps) -> str | None:
    """Why this host cannot be deployed to, in one line; None when it can."""
    if caps.postfix is None:
        return "Postfix is not installed"
    if caps.postfix[0] != 3 or caps.postfix[:2] < (3, 7):
        return f"Postfix {'.'.join(map(str, caps.postfix))} is not supported (3.7 and later 3.x are)"
    if caps.dovecot is not None:
        try:
            dovecot_conf.major(caps)
        except ValueError as exc:
            return str(exc)
    return None


def settings_for(current_host=None) -> Settings:
    return host_settings(current_host or host)


# data_defaults: `host.data.mailtls_tls_profile` works inside the deploy, pyinfra's way.
@deploy("Mail TLS: forward-secret Postfix and Dovecot", data_defaults=data_defaults())
def mail_tls(settings: Settings | None = None) -> None:
    """Apply the TLS policy to the current host.

    **Example:**

    .. code:: python

        from tasks.deploy import mail_tls
        mail_tls()  # settings from host data (mailtls_tls_profile, mailtls_dh_source, ...)
    """
    settings = settings or settings_for()
    nodelay.for_host(host)  # whatever the inventory: no 40 ms stall per command from here on
    apply_script = (ops.FILES / "mailtls-apply").read_bytes()
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
    policy = resolve(settings.tls_profile, caps, pq_hybrid=settings.tls_pq_hybrid,
                     dh_file=settings.dh_file, resumption=settings.tls_resumption)
    for note in policy.notes:
        logger.warning(f"{host.name}: {note}")

    # Pre-flight: everything rendered and every override found before anything changes.
    # The daemons name the checked copies of the certificate renewals put in service (certs.py).
    cert_plan = certs.plan(settings, caps.dovecot is not None, info["files"])
    pf_cert, pf_key = certs.served("postfix", settings, cert_plan)
    refusals = []
    try:
        pf = postfix_conf.render(
            policy, caps, info["postconf"], info["services"], info["master_params"],
            cert_file=pf_cert, key_file=pf_key,
            submission=settings.postfix_submission, submissions=settings.postfix_submissions,
        )
    except postfix_conf.MasterCfError as exc:
        pf = None
        refusals.append(f"/etc/postfix/master.cf: {exc}")
    dovecot_text = None
    if caps.dovecot is None:
        logger.info(f"{host.name}: Dovecot is not installed, skipping it")
    else:
        dovecot_text = dovecot_conf.render(policy, caps, *certs.served("dovecot", settings, cert_plan))
        refusals += dovecot_conf.overrides(dovecot_text, info["dovecot_tree"])
    if refusals:
        ops.fail(name="Pre-flight: settings outside mailtls override the TLS policy",
                 message="\n".join(f"{host.name}: {r}" for r in refusals)
                 + f"\n{host.name}: nothing was changed on this host")
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
    # Before the config that names the copies: they exist (checked) by the time it does.
    cert_changed = certs.apply_certs(settings, info, cert_plan)

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
                             if changed or dh_changed or d in cert_changed or d in info["pending"]))
