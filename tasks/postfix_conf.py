"""Postfix view of the policy: the main.cf and master.cf settings for a Postfix version. No I/O.

Every Postfix setting the project manages is decided here, once per version.

    >>> from tasks.policy import HostCaps, resolve
    >>> caps = HostCaps(postfix=(3, 7, 11), dovecot=None, openssl=(3, 0, 20))
    >>> main_cf(resolve("intermediate", caps), caps, {})["smtpd_tls_protocols"]
    '>=TLSv1.2'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tasks.policy import HostCaps, Policy

# Parameters the seed set that modern Postfix ignores and 3.9+ warns about: removed if present.
OBSOLETE = ("smtpd_tls_eecdh_grade", "smtpd_tls_dh512_param_file")

SERVICES = {
    # name/type: the master.cf line created when the service is missing (Debian's own template).
    "submission/inet": "submission inet n - y - - smtpd",
    "submissions/inet": "submissions inet n - y - - smtpd",
}


@dataclass(frozen=True)
class PostfixConf:
    main: dict[str, str]  # main.cf: parameter -> value
    remove: tuple[str, ...]  # main.cf parameters to delete (postconf -X)
    services: dict[str, str]  # master.cf services to create when missing
    params: dict[str, str]  # master.cf overrides: 'service/type/parameter' -> value

    def __bool__(self) -> bool:
        return bool(self.main or self.remove or self.services or self.params)

    def missing_from(self, postconf: Mapping[str, str], services: Mapping[str, str],
                     master_params: Mapping[str, str]) -> PostfixConf:
        """The part of this config a host does not have yet, given its `postconf -n`, `-M` and
        `-P` (the MailHost fact). Empty (false) when the host is converged."""
        return PostfixConf(
            main={k: v for k, v in self.main.items() if postconf.get(k) != v},
            remove=tuple(k for k in self.remove if k in postconf),
            services={svc: line for svc, line in self.services.items() if svc not in services},
            params={k: v for k, v in self.params.items() if master_params.get(k) != v},
        )


def _at_least(version, minimum) -> bool:
    return version is not None and tuple(version[: len(minimum)]) >= minimum


def main_cf(policy: Policy, caps: HostCaps, current: Mapping[str, str],
            cert_file: str | None = None, key_file: str | None = None) -> dict[str, str]:
    """main.cf settings. `current` is `postconf -n` (explicit settings) as a dict."""
    main = {
        # Port 25: opportunistic TLS. A failed handshake makes senders fall back to plaintext,
        # so the floor is the intermediate one whatever the profile; mandatory_* only applies
        # when main.cf itself enforces TLS.
        "smtpd_tls_protocols": f">={policy.opportunistic_min_protocol}",
        "smtpd_tls_mandatory_protocols": f">={policy.opportunistic_min_protocol}",
        # "high" grade = our list. tls_high_cipherlist instead of tls_medium_cipherlist so the
        # outbound client (smtp_tls_ciphers = medium) keeps talking to every peer.
        "smtpd_tls_ciphers": "high",
        "smtpd_tls_mandatory_ciphers": "high",
        "tls_high_cipherlist": ":".join(policy.tls12_suites),
        "tls_preempt_cipherlist": "yes" if policy.server_preference else "no",
        "tls_eecdh_auto_curves": " ".join(policy.groups),
        # The seed's "log the negotiated cipher": one summary line per TLS session.
        "smtpd_tls_loglevel": "1",
        "smtp_tls_loglevel": "1",
        "smtpd_tls_received_header": "yes",
    }
    for side in ("smtpd", "smtp"):  # TLS stays available in and out; never narrowed outbound
        if current.get(f"{side}_tls_security_level", "none") in ("", "none"):
            main[f"{side}_tls_security_level"] = "may"
    if _at_least(caps.postfix, (3, 8)):
        main["tls_ffdhe_auto_groups"] = ""  # no finite-field groups in TLS 1.3: ECDHE only
    if not _at_least(caps.postfix, (3, 10)):
        main["tls_ssl_options"] = "NO_RENEGOTIATION"  # always off from 3.10 on
    if policy.dh_file:
        main["smtpd_tls_dh1024_param_file"] = policy.dh_file
    main.update(resumption_cf(policy))
    if cert_file and key_file:
        main["smtpd_tls_cert_file"] = cert_file
        main["smtpd_tls_key_file"] = key_file
    return main


def resumption_cf(policy: Policy) -> dict[str, str]:
    """main.cf settings of the resumption policy (docs/resumption.md).

    smtpd_tls_session_cache_timeout T bounds the ticket keys (tlsmgr makes one every T/2;
    smtpd decrypts with it until 1.5 T after); 0 turns tickets and the session cache off.
    No on-disk server session cache: it would write master secrets to disk.
    """
    timeout = policy.resumption.postfix_cache_timeout
    return {
        "smtpd_tls_session_cache_timeout": f"{timeout}s",
        "smtpd_tls_session_cache_database": "",
    }


def removed(policy: Policy) -> tuple[str, ...]:
    """main.cf parameters to delete: obsolete ones, and the DH file when no DHE is offered."""
    return OBSOLETE + (() if policy.dh_file else ("smtpd_tls_dh1024_param_file",))


def master_cf(policy: Policy, present: Mapping[str, str], submission: bool = True,
              submissions: bool = True) -> tuple[dict[str, str], dict[str, str]]:
    """(services to create, per-service overrides) for 587 and 465.

    `present` is `postconf -M` keyed by 'name/type'. A service that exists is hardened even
    when its enable flag is off: every TLS session it serves must follow the policy.
    """
    wanted = {"submission/inet": submission, "submissions/inet": submissions}
    create = {svc: SERVICES[svc] for svc, on in wanted.items() if on and svc not in present}
    params = {}
    for svc in SERVICES:
        if svc not in present and svc not in create:
            continue
        name = svc.split("/")[0]
        overrides = {
            "syslog_name": f"postfix/{name}",
            "smtpd_tls_security_level": "encrypt",  # TLS is required here: the strict policy applies
            "smtpd_tls_mandatory_protocols": f">={policy.mandatory_min_protocol}",
            "smtpd_tls_mandatory_ciphers": "high",
        }
        if name == "submissions":
            overrides["smtpd_tls_wrappermode"] = "yes"
        params.update({f"{svc}/{k}": v for k, v in overrides.items()})
    return create, params


def render(policy: Policy, caps: HostCaps, current: Mapping[str, str], services: Mapping[str, str],
           *, cert_file: str | None = None, key_file: str | None = None, submission: bool = True,
           submissions: bool = True) -> PostfixConf:
    create, params = master_cf(policy, services, submission, submissions)
    return PostfixConf(
        main=main_cf(policy, caps, current, cert_file, key_file),
        remove=removed(policy),
        services=create,
        params=params,
    )
