"""Dovecot view of the policy: the conf.d file for Dovecot 2.3 or 2.4. No I/O but reading templates.

2.3 and 2.4 reject each other's TLS syntax (fatal at start), so each major version has its own
template in files/dovecot/; the values both share are decided here once.

    >>> from tasks.policy import HostCaps, resolve
    >>> caps = HostCaps(postfix=None, dovecot=(2, 4, 1), openssl=(3, 5, 9))
    >>> "ssl_server_prefer_ciphers = client" in render(resolve("intermediate", caps), caps)
    True
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Sequence

import jinja2

from tasks.assets import FILES
from tasks.policy import HostCaps, Policy

TEMPLATES = FILES / "dovecot"
CONF_PATH = "/etc/dovecot/conf.d/99-mailtls.conf"  # read after Debian's 10-ssl.conf: ours wins

# login_log_format_elements: each version's default plus the negotiated protocol and cipher.
LOGIN_LOG_FORMAT = {
    "2.3": "user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<%{session}> %{ssl_security}",
    "2.4": (
        "user=<%{user}> method=%{mechanism} rip=%{remote_ip} lip=%{local_ip} "
        "mpid=%{mail_pid} %{secured} session=<%{session}> %{ssl_security}"
    ),
}


def major(caps: HostCaps) -> str:
    if caps.dovecot is None:
        raise ValueError("Dovecot is not installed")
    version = f"{caps.dovecot[0]}.{caps.dovecot[1]}"
    if version not in LOGIN_LOG_FORMAT:
        raise ValueError(f"Dovecot {version} is not supported (2.3 and 2.4 are)")
    return version


def context(
    policy: Policy, caps: HostCaps, cert_file: str | None = None, key_file: str | None = None
) -> dict:
    """Template values: mandatory-TLS floor (IMAP/POP3 logins need TLS), suites, groups."""
    return {
        "profile": policy.name,
        "min_protocol": policy.mandatory_min_protocol,
        "cipher_list": ":".join(policy.tls12_suites),
        "cipher_suites": ":".join(policy.tls13_suites),
        "curve_list": "/".join(":".join(t) for t in policy.group_tiers),  # OpenSSL's syntax
        "prefer_server": policy.server_preference,
        "dh_file": policy.dh_file,
        "cert_file": cert_file,
        "key_file": key_file,
        "login_log_format_elements": LOGIN_LOG_FORMAT[major(caps)],
    }


@functools.cache
def _templates() -> jinja2.Environment:
    """One environment per process: each template is compiled once, not once per host."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(
    policy: Policy, caps: HostCaps, cert_file: str | None = None, key_file: str | None = None
) -> str:
    template = _templates().get_template(f"mailtls-{major(caps)}.conf.j2")
    return template.render(**context(policy, caps, cert_file, key_file))


# The TLS-policy settings of both versions: set anywhere else with another value, one of these
# may beat ours (the DH file is not: it only matters under legacy-dhe, where ours is checked).
TLS_POLICY_KEYS = (
    "ssl_min_protocol",
    "ssl_cipher_list",
    "ssl_cipher_suites",
    "ssl_curve_list",
    "ssl_prefer_server_ciphers",
    "ssl_server_prefer_ciphers",
    "ssl_protocols",
)
# The server certificate settings per version: (certificate, key, alternative certificate,
# alternative key). They matter only where our file sets a certificate: then one read after ours
# or inside a block serves another certificate, and an alternative one (an ECDSA beside an RSA
# certificate) is served to some clients wherever it is set, since ours does not replace it.
CERT_KEYS = {
    "2.3": ("ssl_cert", "ssl_key", "ssl_alt_cert", "ssl_alt_key"),
    "2.4": (
        "ssl_server_cert_file",
        "ssl_server_key_file",
        "ssl_server_alt_cert_file",
        "ssl_server_alt_key_file",
    ),
}
# What the MailHost fact (tasks/facts.py) greps Dovecot's files for. Debian's 10-ssl.conf sets
# the certificate on every host, so its few lines are in the fact's dovecot_tree everywhere.
POLICY_KEYS = TLS_POLICY_KEYS + CERT_KEYS["2.3"] + CERT_KEYS["2.4"]
MAIN_CONF = "/etc/dovecot/dovecot.conf"


def settings_of(text: str) -> dict[str, str]:
    """'key = value' lines of a rendered file."""
    out = {}
    for line in text.splitlines():
        key, found, value = line.partition("=")
        if found and not line.lstrip().startswith("#"):
            out[key.strip()] = value.strip()
    return out


def readback(text: str) -> dict[str, str]:
    r"""What `doveconf` must report for our file's TLS-policy settings: doveconf name -> value.
    2.4 keeps ssl_server_* in the ssl_server filter: `doveconf ssl_server_prefer_ciphers` shows
    the default there, `doveconf ssl_server/prefer_ciphers` the value in effect. 2.4.5 prints
    no filter path asked after a plain name: mailtls-apply asks the filter paths first.

    >>> readback("ssl_server_prefer_ciphers = server\nssl_min_protocol = TLSv1.2\n")
    {'ssl_server/prefer_ciphers': 'server', 'ssl_min_protocol': 'TLSv1.2'}
    """
    return {
        (f"ssl_server/{k[len('ssl_server_') :]}" if k.startswith("ssl_server_") else k): v
        for k, v in settings_of(text).items()
        if k in TLS_POLICY_KEYS
    }


def _unquote(value: str) -> str:
    value = value.split(" #", 1)[0].strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def certificate(text: str) -> tuple[str, str] | None:
    r"""(certificate, key) a Dovecot file sets (ours, or its grep lines), None when it sets none.

    >>> certificate("ssl_cert = </etc/ssl/a.pem\nssl_key = </etc/ssl/a.key\n")
    ('/etc/ssl/a.pem', '/etc/ssl/a.key')
    >>> certificate("ssl_server_cert_file = /etc/ssl/a.pem\nssl_server_key_file = /etc/ssl/a.key")
    ('/etc/ssl/a.pem', '/etc/ssl/a.key')
    >>> certificate("ssl_min_protocol = TLSv1.2") is None
    True
    """
    found = settings_of(text)
    for cert, key, *_ in CERT_KEYS.values():
        if found.get(cert) and found.get(key):
            return (found[cert].removeprefix("<"), found[key].removeprefix("<"))
    return None


def overrides(text: str, tree: Sequence[str], conf_path: str = CONF_PATH) -> list[str]:
    """What in the host's Dovecot config beats the policy or the certificate in `text` (our
    rendered file).

    `tree` is the MailHost fact's ``dovecot_tree``: grep lines 'file:line:text' with every
    !include and, for files setting a policy or certificate key, their block lines and those
    settings. Walked from dovecot.conf in Dovecot's order (includes in place, globs sorted), with
    our file where its include glob puts it, present or not: a global setting read after ours
    wins, a setting inside a block (protocol imap { }, local_name x { }, local/remote { }) wins
    wherever it is. Certificate settings count only where ours sets a certificate (else what
    Dovecot serves is the admin's business); an alternative certificate counts wherever it is.
    Returns one line per override naming file, line and what to do; empty when ours wins.

    >>> overrides("ssl_cipher_list = ECDHE+AESGCM", [
    ...     "/etc/dovecot/dovecot.conf:97:!include conf.d/*.conf",
    ...     "/etc/dovecot/dovecot.conf:101:!include_try local.conf",
    ...     "/etc/dovecot/local.conf:1:ssl_cipher_list = ALL"])[0][:35]
    '/etc/dovecot/local.conf:1: ssl_ciph'
    """
    return _walk(text, tree, conf_path)[0]


def certificate_replaced(text: str, tree: Sequence[str], conf_path: str = CONF_PATH) -> bool:
    """Whether a certificate setting read after our file, outside any block, replaces the one
    `text` sets everywhere: then ours is never served, and leaving it out changes nothing.

    >>> certificate_replaced("ssl_cert = </a\\nssl_key = </b", [
    ...     "/etc/dovecot/dovecot.conf:97:!include conf.d/*.conf",
    ...     "/etc/dovecot/dovecot.conf:101:!include_try local.conf",
    ...     "/etc/dovecot/local.conf:1:ssl_cert = </etc/ssl/mine.pem"])
    True
    """
    return _walk(text, tree, conf_path)[1]


def _walk(text: str, tree: Sequence[str], conf_path: str) -> tuple[list[str], bool]:
    """overrides() and certificate_replaced(), in one walk."""
    settings = settings_of(text)
    ours = {k: v for k, v in settings.items() if k in TLS_POLICY_KEYS}
    # The certificate keys of the version whose certificate our file sets (none: not checked).
    cert_keys: tuple[str, ...] = next(
        (keys for keys in CERT_KEYS.values() if keys[0] in settings), ()
    )
    alt_keys = cert_keys[2:]
    ours.update({k: v for k, v in settings.items() if k in cert_keys})
    files: dict[str, list[tuple[str, str]]] = {}
    for line in tree:
        path, _, rest = line.partition(":")
        lineno, _, body = rest.partition(":")
        files.setdefault(path, []).append((lineno, body))
    for lines in files.values():  # the fact lists !include lines and settings in separate runs
        lines.sort(key=lambda item: int(item[0]) if item[0].isdigit() else 0)
    found: list[str] = []
    seen_ours = replaced = False
    stack: list[str] = []

    def walk(path: str, depth: int) -> None:
        nonlocal seen_ours, replaced
        if path == conf_path:
            seen_ours = True
            return
        if depth > 20:
            return
        for lineno, body in files.get(path, []):
            code = body.split("#", 1)[0].strip()
            if code.startswith("!include"):
                parts = code.split(None, 1)
                if len(parts) == 2:
                    pattern = _unquote(parts[1])
                    if not pattern.startswith("/"):
                        pattern = f"{path.rsplit('/', 1)[0]}/{pattern}"
                    names = set(files) | {conf_path}
                    for match in sorted(n for n in names if fnmatch.fnmatchcase(n, pattern)):
                        walk(match, depth + 1)
                continue
            key, eq, value = code.partition("=")
            key = key.strip()
            if eq and key in TLS_POLICY_KEYS and "{" not in key:
                value = _unquote(value.strip().rstrip("}").strip())
                if value != ours.get(key):
                    where = (
                        f"inside '{stack[-1]} {{'"
                        if stack
                        else (f"read after {conf_path}" if seen_ours else "")
                    )
                    if where:
                        want = (
                            f"or set it to {ours[key]}"
                            if key in ours
                            else "the setting is not used by this Dovecot"
                        )
                        found.append(
                            f"{path}:{lineno}: {key} = {value} ({where}) overrides the "
                            f"mailtls policy: remove this line ({want})"
                        )
            elif eq and key in cert_keys and "{" not in key:
                value = _unquote(value.strip().rstrip("}").strip())
                if value != ours.get(key, ""):
                    where = (
                        f"inside '{stack[-1]} {{'"
                        if stack
                        else f"read after {conf_path}"
                        if seen_ours
                        else f"served beside the certificate {conf_path} sets"
                        if key in alt_keys
                        else ""
                    )
                    replaced = replaced or (seen_ours and not stack and key == cert_keys[0])
                    if where:
                        found.append(
                            f"{path}:{lineno}: {key} = {value} ({where}) makes Dovecot serve "
                            f"another certificate than the one mailtls sets "
                            f"({ours[cert_keys[0]]}): remove this line, or unset "
                            "mailtls_dovecot_cert_file/_key_file to manage Dovecot's "
                            "certificate yourself"
                        )
            for ch in code:
                if ch == "{":
                    stack.append(code.split("{", 1)[0].strip())
                elif ch == "}" and stack:
                    stack.pop()

    walk(MAIN_CONF, 0)
    return found, replaced
