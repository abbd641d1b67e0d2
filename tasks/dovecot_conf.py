"""Dovecot view of the policy: the conf.d file for Dovecot 2.3 or 2.4. No I/O but reading templates.

2.3 and 2.4 reject each other's TLS syntax (fatal at start), so each major version has its own
template in files/dovecot/; the values both share are decided here once.

    >>> from tasks.policy import HostCaps, resolve
    >>> caps = HostCaps(postfix=None, dovecot=(2, 4, 1), openssl=(3, 5, 9))
    >>> "ssl_server_prefer_ciphers = client" in render(resolve("intermediate", caps), caps)
    True
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from tasks.policy import HostCaps, Policy

TEMPLATES = Path(__file__).resolve().parent.parent / "files" / "dovecot"
CONF_PATH = "/etc/dovecot/conf.d/99-mailtls.conf"  # read after Debian's 10-ssl.conf: ours wins

# login_log_format_elements: each version's default plus the negotiated protocol and cipher.
LOGIN_LOG_FORMAT = {
    "2.3": "user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<%{session}> %{ssl_security}",
    "2.4": ("user=<%{user}> method=%{mechanism} rip=%{remote_ip} lip=%{local_ip} "
            "mpid=%{mail_pid} %{secured} session=<%{session}> %{ssl_security}"),
}


def major(caps: HostCaps) -> str:
    if caps.dovecot is None:
        raise ValueError("Dovecot is not installed")
    version = f"{caps.dovecot[0]}.{caps.dovecot[1]}"
    if version not in LOGIN_LOG_FORMAT:
        raise ValueError(f"Dovecot {version} is not supported (2.3 and 2.4 are)")
    return version


def context(policy: Policy, caps: HostCaps, cert_file: str | None = None,
            key_file: str | None = None) -> dict:
    """Template values: mandatory-TLS floor (IMAP/POP3 logins need TLS), suites, groups."""
    return {
        "profile": policy.name,
        "min_protocol": policy.mandatory_min_protocol,
        "cipher_list": ":".join(policy.tls12_suites),
        "cipher_suites": ":".join(policy.tls13_suites),
        "curve_list": ":".join(policy.groups),
        "prefer_server": policy.server_preference,
        "dh_file": policy.dh_file,
        "cert_file": cert_file,
        "key_file": key_file,
        "login_log_format_elements": LOGIN_LOG_FORMAT[major(caps)],
    }


def render(policy: Policy, caps: HostCaps, cert_file: str | None = None,
           key_file: str | None = None) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    template = env.get_template(f"mailtls-{major(caps)}.conf.j2")
    return template.render(**context(policy, caps, cert_file, key_file))
