"""Everything the deploy writes for one host, computed from its settings and its MailHost fact.
No I/O: tasks/mail_tls.py applies the result, bench/bench.py's floor writes the same bytes.

    >>> from tasks.host_facts import HostFacts
    >>> from tasks.policy import HostCaps
    >>> from tasks.settings import validate
    >>> caps = HostCaps(postfix=(3, 7, 11), dovecot=(2, 3, 19), openssl=(3, 0, 15))
    >>> conf = render(validate({}, "mx1"), HostFacts(caps))
    >>> conf.policy.name, conf.postfix.main["smtpd_tls_protocols"]
    ('intermediate', '>=TLSv1.2')
    >>> "ssl_min_protocol = TLSv1.2" in conf.dovecot
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasks.assets import sha256
from tasks.certs import plan as certs
from tasks.dh import plan as dh
from tasks.dovecot import conf as dovecot_conf
from tasks.host_facts import HostFacts, PostfixInstance
from tasks.policy import Policy
from tasks.postfix import conf as postfix_conf
from tasks.postfix.conf import PostfixConf
from tasks.safety import verify as verify_conf
from tasks.settings import Settings


@dataclass(frozen=True)
class HostConf:
    policy: Policy  # the profile resolved for what the host runs (its notes are for the user)
    dh: dh.DhPlan  # the DH file, its rotation and cron job (legacy-dhe only; else their removal)
    cert_plan: certs.CertPlan  # what the certificate watcher does here; the files daemons name
    postfix: PostfixConf | None  # main.cf / master.cf settings; None when refused
    dovecot: str | None  # dovecot_conf.CONF_PATH's text; None where Dovecot is not installed
    # Why the deploy must not touch this host (file:line or service, and what to remove): set
    # when something outside our files would override the policy. Empty: go ahead.
    refusals: tuple[str, ...]
    verify: (
        str | None
    )  # verify_conf.VERIFY_PATH: what mailtls-apply's commit checks; None when refused
    # For the log on every run: a daemon that keeps serving copies nothing renews any more.
    warnings: tuple[str, ...] = ()
    # Dovecot's certificate settings are unset and the checksum of our file does not tell what
    # it names now: read its certificate lines (dovecot_conf.CONF_PATH) into the fact as
    # info.dovecot_named (dovecot_conf.certificate()) and render again.
    read_dovecot_named: bool = False


def render(settings: Settings, info: HostFacts) -> HostConf:
    """The policy for this host and both daemons' config, as the deploy applies them.

    `info`: the MailHost fact (caps, postconf, services, master_params, files, dovecot_tree).
    The certificate files the daemons are configured with come from certs.plan(): the watcher's
    copies where it follows renewals, else the settings. Everything an override would defeat is
    found here, before the deploy changes anything (refusals).
    """
    caps = info.caps
    policy = settings.policy(caps)
    cert_plan = certs.plan(settings, caps.dovecot is not None, info.files)
    pf_cert, pf_key = certs.served("postfix", settings, cert_plan)
    refusals: list[str] = [_instance_refusal(i) for i in info.instances]
    postfix = None
    try:
        postfix = postfix_conf.render(
            policy,
            caps,
            info.postconf,
            info.services,
            info.master_params,
            cert_file=pf_cert,
            key_file=pf_key,
            submission=settings.postfix_submission,
            submissions=settings.postfix_submissions,
        )
    except postfix_conf.MasterCfError as exc:
        refusals.append(f"/etc/postfix/master.cf: {exc}")
    if pf_cert and pf_key:  # what would serve another certificate than the one we set
        refusals += postfix_conf.cert_overrides(
            info.postconf, info.services, info.master_params, pf_cert, pf_key
        )
    warnings = []
    if pf_cert is None and info.postconf.get("smtpd_tls_cert_file") in certs.COPIES["postfix"]:
        # Unset keeps what main.cf has: here the watcher's copy, which nothing renews any more.
        warnings.append(_frozen("postfix", certs.COPIES["postfix"][0], info.files))
    dovecot = None
    dc_cert, dc_key = certs.served("dovecot", settings, cert_plan)
    read_named = False
    check_dc = True  # whether the commit expects every Dovecot port to serve dc_cert
    if caps.dovecot is not None:
        tree = info.dovecot_tree
        checked = None  # our file as the override check sees it
        if dc_cert is None:
            # Unset keeps what Dovecot uses now: the certificate our file names, if any, unless
            # a later file replaces it anyway (then leaving it out changes nothing served).
            named, read_named = _dovecot_named(policy, caps, info)
            if named and not dovecot_conf.certificate_replaced(
                dovecot_conf.render(policy, caps, *named), tree
            ):
                dc_cert, dc_key = named
                # Kept, not set: what else names a certificate stays the admin's business.
                checked = dovecot_conf.render(policy, caps)
                if named == certs.COPIES["dovecot"]:
                    warnings.append(_frozen("dovecot", dc_cert, info.files, caps))
        dovecot = dovecot_conf.render(policy, caps, dc_cert, dc_key)
        found = dovecot_conf.overrides(checked or dovecot, tree)
        refusals += found
        if checked and dovecot_conf.overrides(dovecot, tree) != found:
            # A kept certificate another one beats somewhere (a protocol block): the commit
            # cannot expect every port to serve ours.
            check_dc = False
    verify = None
    if postfix is not None and not refusals:
        verify = verify_conf.render(
            policy,
            *verify_conf.stable(postfix.main, postfix.params),
            postfix.remove,
            None if dovecot is None else dovecot_conf.readback(dovecot),
            {"postfix": pf_cert, "dovecot": dc_cert if check_dc else None},
            postfix_conf.clients(postfix),
        )
    return HostConf(
        policy,
        dh.plan(settings, policy, info.files),
        cert_plan,
        postfix,
        dovecot,
        tuple(refusals),
        verify,
        tuple(warnings),
        read_named,
    )


def _dovecot_named(
    policy: Policy, caps: Any, info: HostFacts
) -> tuple[tuple[str, str] | None, bool]:
    """(certificate, key) our Dovecot file names now, and whether the fact cannot tell (then the
    deploy reads the file's certificate lines: info.dovecot_named). On the steady path the
    checksum the fact read answers: our file as rendered without a certificate, or with the
    watcher's copies."""
    if info.named_read:
        return info.dovecot_named, False
    files = info.files
    current = files.get(dovecot_conf.CONF_PATH)
    if current is None or current == sha256(dovecot_conf.render(policy, caps).encode()):
        return None, False
    copies = certs.COPIES["dovecot"]
    if all(p in files for p in copies) and current == sha256(
        dovecot_conf.render(policy, caps, *copies).encode()
    ):
        return copies, False
    # Another profile, a file from an older mailtls, or the settings' own files named directly.
    return None, True


def _frozen(daemon: str, copy: str, files: Mapping[str, str], caps: Any = None) -> str:
    """The warning for a daemon left serving the watcher's copy after its settings went."""
    if daemon == "postfix":
        where = "main.cf keeps smtpd_tls_cert_file"
        other = "point smtpd_tls_cert_file and smtpd_tls_key_file at your files (postconf -e)"
    else:
        cert, key = dovecot_conf.CERT_KEYS[dovecot_conf.major(caps)][:2]
        where = f"{dovecot_conf.CONF_PATH} keeps naming"
        other = f"set {cert} and {key} to your files in /etc/dovecot/local.conf"
    state = "" if copy in files else " (and it is missing!)"
    return (
        f"{daemon}: mailtls_{daemon}_cert_file/_key_file are unset: {where} {copy}, the copy "
        f"of your certificate {daemon} serves now{state}, which nothing renews any more "
        f"(expiry: openssl x509 -noout -enddate -in {copy}): set mailtls_{daemon}_cert_file/"
        f"_key_file again to follow renewals, or {other}"
    )


def _instance_refusal(instance: PostfixInstance) -> str:
    """Why a host with another Postfix instance is refused: the deploy changes /etc/postfix
    only, and the other instance would keep serving its own TLS settings.

    >>> _instance_refusal(PostfixInstance("/etc/postfix-out", "postfix-out", True))[:62]
    'Postfix instance postfix-out (/etc/postfix-out, enabled) keeps'
    """
    name = instance.name or instance.directory.rsplit("/", 1)[-1]
    state = "enabled" if instance.enabled else "disabled: it serves once enabled"
    return (
        f"Postfix instance {name} ({instance.directory}, {state}) keeps its own TLS settings: "
        "mailtls manages /etc/postfix only, and a run that hardened one instance would report "
        "the host forward-secret while the other is not. Remove the instance (postmulti -e "
        "destroy) or deploy it as a host of its own"
    )
