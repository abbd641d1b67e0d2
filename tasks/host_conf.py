"""Everything the deploy writes for one host, computed from its settings and its MailHost fact.
No I/O: tasks/mail_tls.py applies the result, bench/bench.py's floor writes the same bytes.

    >>> from tasks.policy import HostCaps
    >>> from tasks.settings import validate
    >>> caps = HostCaps(postfix=(3, 7, 11), dovecot=(2, 3, 19), openssl=(3, 0, 15))
    >>> info = {"caps": caps, "postconf": {}, "services": {}, "files": {}}
    >>> conf = render(validate({}, "mx1"), info)
    >>> conf.policy.name, conf.postfix.main["smtpd_tls_protocols"]
    ('intermediate', '>=TLSv1.2')
    >>> "ssl_min_protocol = TLSv1.2" in conf.dovecot
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasks import certs, dovecot_conf, postfix_conf, probes
from tasks.policy import Policy, resolve
from tasks.postfix_conf import PostfixConf
from tasks.settings import Settings


@dataclass(frozen=True)
class HostConf:
    policy: Policy  # the profile resolved for what the host runs (its notes are for the user)
    cert_plan: certs.CertPlan  # what the certificate watcher does here; the files daemons name
    postfix: PostfixConf | None  # main.cf / master.cf settings; None when refused
    dovecot: str | None  # dovecot_conf.CONF_PATH's text; None where Dovecot is not installed
    # Why the deploy must not touch this host (file:line or service, and what to remove): set
    # when something outside our files would override the policy. Empty: go ahead.
    refusals: tuple[str, ...]
    verify: str | None  # probes.VERIFY_PATH: what mailtls-apply's commit checks; None when refused


def render(settings: Settings, info: Mapping[str, Any]) -> HostConf:
    """The policy for this host and both daemons' config, as the deploy applies them.

    `info`: the MailHost fact (caps, postconf, services, master_params, files, dovecot_tree).
    The certificate files the daemons are configured with come from certs.plan(): the watcher's
    copies where it follows renewals, else the settings. Everything an override would defeat is
    found here, before the deploy changes anything (refusals).
    """
    caps = info["caps"]
    policy = resolve(
        settings.tls_profile,
        caps,
        pq_hybrid=settings.tls_pq_hybrid,
        dh_file=settings.dh_file,
        resumption=settings.tls_resumption,
    )
    cert_plan = certs.plan(settings, caps.dovecot is not None, info["files"])
    pf_cert, pf_key = certs.served("postfix", settings, cert_plan)
    refusals: list[str] = []
    postfix = None
    try:
        postfix = postfix_conf.render(
            policy,
            caps,
            info["postconf"],
            info["services"],
            info.get("master_params", {}),
            cert_file=pf_cert,
            key_file=pf_key,
            submission=settings.postfix_submission,
            submissions=settings.postfix_submissions,
        )
    except postfix_conf.MasterCfError as exc:
        refusals.append(f"/etc/postfix/master.cf: {exc}")
    if pf_cert and pf_key:  # what would serve another certificate than the one we set
        refusals += postfix_conf.cert_overrides(
            info["postconf"], info["services"], info.get("master_params", {}), pf_cert, pf_key
        )
    dovecot = None
    dc_cert, dc_key = certs.served("dovecot", settings, cert_plan)
    if caps.dovecot is not None:
        dovecot = dovecot_conf.render(policy, caps, dc_cert, dc_key)
        refusals += dovecot_conf.overrides(dovecot, info.get("dovecot_tree", []))
    verify = None
    if postfix is not None and not refusals:
        verify = probes.render(
            policy,
            *probes.stable(postfix.main, postfix.params),
            postfix.remove,
            None if dovecot is None else dovecot_conf.readback(dovecot),
            {"postfix": pf_cert, "dovecot": dc_cert},
        )
    return HostConf(policy, cert_plan, postfix, dovecot, tuple(refusals), verify)
