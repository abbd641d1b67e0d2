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

from tasks import certs, dovecot_conf, postfix_conf
from tasks.policy import Policy, resolve
from tasks.postfix_conf import PostfixConf
from tasks.settings import Settings


@dataclass(frozen=True)
class HostConf:
    policy: Policy  # the profile resolved for what the host runs (its notes are for the user)
    postfix: PostfixConf  # main.cf / master.cf settings
    dovecot: str | None  # dovecot_conf.CONF_PATH's text; None where Dovecot is not installed


def render(settings: Settings, info: Mapping[str, Any]) -> HostConf:
    """The policy for this host and both daemons' config, as the deploy applies them.

    `info`: the MailHost fact (caps, postconf, services, files). The certificate files the
    daemons are configured with come from certs.plan(): the watcher's copies where it follows
    renewals, else the settings.
    """
    caps = info["caps"]
    policy = resolve(settings.tls_profile, caps, pq_hybrid=settings.tls_pq_hybrid,
                     dh_file=settings.dh_file, resumption=settings.tls_resumption)
    cert_plan = certs.plan(settings, caps.dovecot is not None, info["files"])
    pf_cert, pf_key = certs.served("postfix", settings, cert_plan)
    postfix = postfix_conf.render(
        policy, caps, info["postconf"], info["services"],
        cert_file=pf_cert, key_file=pf_key,
        submission=settings.postfix_submission, submissions=settings.postfix_submissions,
    )
    dovecot = None
    if caps.dovecot is not None:
        dovecot = dovecot_conf.render(policy, caps, *certs.served("dovecot", settings, cert_plan))
    return HostConf(policy, postfix, dovecot)
