"""Outside-in checks of a mail host, shared by integration tests: handshakes from the controller
with `openssl s_client`, SASL AUTH and mail over smtplib, and snapshots of what the deploy must
leave alone (non-TLS Postfix settings, Dovecot settings, config file checksums, listeners).

    >>> results = negative_probes(host.address, [25, 465, 993])          # doctest: +SKIP
    >>> [r for r in results if not r.ok]                                   # doctest: +SKIP
    []
"""

from __future__ import annotations

import re
import smtplib
import ssl
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from testhosts.image import TEST_PASSWORD, TEST_USER

# Every port a mail host may serve TLS on -> its STARTTLS protocol (None: implicit TLS). Written
# out here, not read from tasks.policy.PORTS: the tests' own oracle for what the tool claims.
TLS_PORTS = {
    25: "smtp", 587: "smtp", 465: None, 143: "imap", 993: None, 110: "pop3", 995: None,
    4190: "sieve",  # ManageSieve (the managesieve variant)
}  # fmt: skip
# The ones every test checks on a stock-shaped host: SMTP and IMAP (the lived-in tests: all).
STOCK_TLS_PORTS = {p: s for p, s in TLS_PORTS.items() if p not in (110, 995, 4190)}

# Handshakes the intermediate profile forbids (each must be refused), with the s_client options
# offering only that. Client-side SECLEVEL=0 so the controller's OpenSSL really offers them: a
# refusal must come from the server.
FORBIDDEN = {
    "TLS 1.1": ("-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"),
    "TLS 1.2 RSA key exchange": ("-tls1_2", "-cipher", "kRSA:@SECLEVEL=0"),
    "TLS 1.2 non-AEAD (ECDHE CBC)": (
        "-tls1_2",
        "-cipher",
        "ECDHE:!AESGCM:!AESCCM:!CHACHA20:!ARIAGCM:@SECLEVEL=0",
    ),
    "TLS 1.2 DHE only": ("-tls1_2", "-cipher", "kDHE:@SECLEVEL=0"),
    "TLS 1.3 FFDHE groups only": ("-tls1_3", "-groups", "ffdhe2048:ffdhe3072:ffdhe4096"),
}
# Handshakes within the profile (each must succeed, with an ECDHE key exchange).
ALLOWED = {
    "TLS 1.2 ECDHE AEAD": ("-tls1_2", "-cipher", "ECDHE+AESGCM:ECDHE+CHACHA20"),
    "TLS 1.3 default": ("-tls1_3",),
}

_ESTABLISHED = re.compile(r"^New, (TLSv1(?:\.[0-3])?|SSLv3), Cipher is (?!\(NONE\))(\S+)", re.M)
_PROTOCOL = re.compile(
    r"^\s+Protocol\s*:\s*(\S+)", re.M
)  # negotiated ("New, X" is the suite's own minimum)
_TEMP_KEY = re.compile(r"^(?:Server Temp Key|Negotiated TLS1\.3 group): (.+)$", re.M)


@dataclass(frozen=True)
class Probe:
    port: int
    name: str
    must_succeed: bool
    established: bool
    detail: (
        str  # "TLSv1.2 ECDHE-RSA-AES128-SHA (ECDH, prime256v1, 256 bits)" or openssl's last words
    )

    @property
    def ok(self) -> bool:
        return self.established == self.must_succeed

    def __str__(self) -> str:
        want = "must succeed" if self.must_succeed else "must be refused"
        got = f"ACCEPTED {self.detail}" if self.established else f"refused ({self.detail})"
        return f"port {self.port} {self.name}: {want}, {got}"


def s_client(address: str, port: int, *args: str, timeout: float = 60) -> str:
    """One real handshake from the controller; openssl's stdout + stderr."""
    starttls = ["-starttls", s] if (s := TLS_PORTS.get(port)) else []
    argv = ["openssl", "s_client", "-connect", f"{address}:{port}", *starttls, *args]
    try:
        res = subprocess.run(argv, input="", capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"
    return res.stdout + res.stderr


def handshake(out: str) -> tuple[bool, str]:
    """(established, detail) from s_client output."""
    m = _ESTABLISHED.search(out)
    if m:
        key, proto = _TEMP_KEY.search(out), _PROTOCOL.search(out)
        return True, f"{proto.group(1) if proto else m.group(1)} {m.group(2)}" + (
            f" ({key.group(1)})" if key else ""
        )
    lines = [
        line
        for line in out.splitlines()
        if re.search(r"error|alert|errno|timeout|refused", line, re.I)
    ]
    last = lines[-1] if lines else (out.strip().splitlines() or ["no output"])[-1]
    return False, last.strip()[:160]


def _probe(address: str, port: int, name: str, args: tuple, must_succeed: bool) -> Probe:
    established, detail = handshake(s_client(address, port, *args))
    if (
        established
        and must_succeed
        and "ECDH" not in detail
        and "X25519" not in detail
        and "MLKEM" not in detail
        and "secp" not in detail
        and "prime256v1" not in detail
    ):
        established, detail = False, f"established without ECDHE: {detail}"
    return Probe(port, name, must_succeed, established, detail)


def negative_probes(address: str, ports, workers: int = 6) -> list[Probe]:
    """Every FORBIDDEN and ALLOWED handshake on every port, in parallel; in (port, probe) order."""
    jobs: list[tuple[int, str, tuple[str, ...], bool]]
    jobs = [(p, n, a, False) for p in ports for n, a in FORBIDDEN.items()]
    jobs += [(p, n, a, True) for p in ports for n, a in ALLOWED.items()]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda j: _probe(address, *j), jobs))
    return sorted(results, key=lambda r: (r.port, not r.must_succeed, r.name))


def _tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # snakeoil certificates
    return ctx


def sasl_auth(address: str, port: int, user: str = TEST_USER, password: str = TEST_PASSWORD) -> str:
    """AUTH PLAIN on a submission port (465 implicit TLS, else STARTTLS): '235 ...' on success,
    else what went wrong (never raises)."""
    try:
        smtp: smtplib.SMTP
        if port == 465:
            smtp = smtplib.SMTP_SSL(address, port, context=_tls_context(), timeout=60)
        else:
            smtp = smtplib.SMTP(address, port, timeout=60)
            smtp.starttls(context=_tls_context())
        with smtp:
            smtp.ehlo("controller.mailtls.test")
            if not smtp.has_extn("auth"):
                return "no AUTH offered"
            smtp.user, smtp.password = user, password
            code, text = smtp.auth("PLAIN", smtp.auth_plain)
            return f"{code} {text.decode(errors='replace')}"
    except smtplib.SMTPAuthenticationError as exc:
        error = exc.smtp_error
        return f"{exc.smtp_code} {error.decode(errors='replace') if isinstance(error, bytes) else error}"
    except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"


def deliver(host, port: int = 25, timeout: float = 60) -> str:
    """Send one mail over SMTP + STARTTLS to the test user's local mailbox; return its tag once it
    is in /var/mail (raises AssertionError with the host's mail log tail otherwise)."""
    tag = uuid.uuid4().hex
    rcpt = f"{TEST_USER}@{host.fqdn}"
    with smtplib.SMTP(host.address, port, timeout=timeout) as smtp:
        smtp.ehlo("controller.mailtls.test")
        smtp.starttls(context=_tls_context())
        smtp.ehlo("controller.mailtls.test")
        smtp.sendmail(
            "probe@controller.mailtls.test",
            [rcpt],
            f"Subject: {tag}\r\nTo: {rcpt}\r\n\r\nhello\r\n",
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tag in host.ssh(f"cat /var/mail/{TEST_USER}", check=False).stdout:
            return tag
        time.sleep(0.5)
    raise AssertionError(f"mail {tag} not delivered on {host.name}:\n" + mail_log(host, 40))


def mail_log(host, lines: int = 100) -> str:
    """The host's newest mail-related log lines, from the journal (where Debian 12/13 keep them)."""
    return host.ssh(
        f"journalctl -q --no-pager -o short-iso -n {int(lines)} "
        "-t postfix/smtpd -t postfix/smtps/smtpd -t postfix/submission/smtpd "
        "-t postfix/submissions/smtpd -t postfix/master -t postfix/postscreen -t postfix/local "
        "-t dovecot -u dovecot",
        check=False,
    ).stdout


# Resolve each enabled inet service of `postconf -M` to its port on the host (names via
# /etc/services, as master(8) does).
_SERVICE_PORTS = r"""
postconf -M 2>/dev/null | awk '$2 == "inet" {print $1}' | while read -r svc; do
  p=${svc##*:}
  case "$p" in *[!0-9]*) p=$(getent services "$p/tcp" | awk '{split($2, a, "/"); print a[1]}') ;; esac
  echo "$svc ${p:-?}"
done
"""


def services_by_port(host) -> dict[int, list[str]]:
    """{port: [master.cf inet services listening on it]} on the host."""
    out: dict[int, list[str]] = {}
    for line in host.ssh(_SERVICE_PORTS).stdout.splitlines():
        svc, port = line.split()
        if port.isdigit():
            out.setdefault(int(port), []).append(svc)
    return out


def listeners(host) -> dict[int, list[str]]:
    """{port: ['0.0.0.0 master', '[::] master', ...]} from `ss -ltnp` on the host.

    A listening socket is named after the daemon's master process that owns it: ss also lists
    the children that inherited it (an smtpd or login process still alive), in no fixed order.
    """
    out: dict[int, list[str]] = {}
    for line in host.ssh("ss -Hltnp").stdout.splitlines():
        fields = line.split()
        addr, _, port = fields[3].rpartition(":")
        procs = re.findall(r'\("([^"]+)",pid=', line)
        owner = next((p for p in ("master", "dovecot") if p in procs), procs[0] if procs else "?")
        out.setdefault(int(port), []).append(f"{addr} {owner}")
    return out


# TLS 1.3 signature algorithms that only a certificate of that key type can answer.
CERT_SIGALGS = {
    "RSA": "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512",
    "ECDSA": "ecdsa_secp256r1_sha256:ecdsa_secp384r1_sha384:ecdsa_secp521r1_sha512",
}


def certificate_kinds(address: str, ports) -> dict[int, list[str]]:
    """{port: the key types of the certificates served there}: a TLS 1.3 handshake per type,
    offering only the signature algorithms its key can make (a dual RSA+ECDSA server answers
    both)."""
    jobs = [(p, kind) for p in ports for kind in CERT_SIGALGS]
    with ThreadPoolExecutor(max_workers=6) as pool:
        ok = list(
            pool.map(
                lambda j: handshake(
                    s_client(address, j[0], "-tls1_3", "-sigalgs", CERT_SIGALGS[j[1]])
                )[0],
                jobs,
            )
        )
    kinds: dict[int, list[str]] = {p: [] for p in ports}
    for (port, kind), established in zip(jobs, ok, strict=True):
        if established:
            kinds[port].append(kind)
    return kinds


def tls_ports(host) -> list[int]:
    """The TLS_PORTS the host listens on."""
    return sorted(p for p in listeners(host) if p in TLS_PORTS)


# What counts as TLS policy (the deploy may change it): Postfix parameters about TLS, and the
# Dovecot ssl settings plus the login log format the deploy extends with the TLS details.
def is_tls_key(key: str) -> bool:
    return "tls" in key or key.startswith("ssl") or key in ("login_log_format_elements",)


def postfix_state(host) -> dict[str, list[str]]:
    """postconf -n / -M / -P of the host, lines as printed."""
    out = host.ssh(
        "postconf -n 2>/dev/null; echo @@M; postconf -M 2>/dev/null; echo @@P; postconf -P 2>/dev/null"
    ).stdout
    main, rest = out.split("@@M\n", 1)
    master, params = rest.split("@@P\n", 1)
    return {"main": main.splitlines(), "master": master.splitlines(), "params": params.splitlines()}


def non_tls_postfix(state: dict[str, list[str]]) -> dict[str, object]:
    """The parts of postfix_state() that are not TLS policy: main.cf settings and every master.cf
    service line with its non-TLS -o options (in order)."""
    main = sorted(line for line in state["main"] if not is_tls_key(line.split("=", 1)[0].strip()))
    master = {}
    for line in state["master"]:
        words = line.split()
        kept, i = [], 0
        while i < len(words):
            if words[i] == "-o" and i + 1 < len(words):
                if not is_tls_key(words[i + 1].split("=", 1)[0]):
                    kept += words[i : i + 2]
                i += 2
            else:
                kept.append(words[i])
                i += 1
        master[f"{words[0]}/{words[1]}"] = " ".join(kept)
    return {"main": main, "master": master}


def dovecot_state(host) -> list[str]:
    """`doveconf -n` minus its version banner and TLS settings (nested blocks keep their lines)."""
    return non_tls_dovecot(host.ssh("doveconf -n 2>/dev/null").stdout)


def non_tls_dovecot(doveconf_n: str) -> list[str]:
    """`doveconf -n` lines minus TLS settings, also inside 2.4's `ssl_server { ... }` blocks."""
    kept: list[str] = []
    stack: list[bool] = []  # per open block: inside a TLS block
    for line in doveconf_n.splitlines():
        word = line.strip().split(" ", 1)[0]
        if line.startswith("#") or not word:
            continue
        if word == "}":
            if stack.pop() is False:
                kept.append(line)
            continue
        inside_tls = any(s is True for s in stack)
        if line.rstrip().endswith("{"):
            stack.append(inside_tls or is_tls_key(word))
            if not stack[-1]:
                kept.append(line)
            continue
        if not inside_tls and not is_tls_key(word):
            kept.append(line)
    return kept


CONFIG_DIRS = "/etc/postfix /etc/dovecot"


def config_checksums(host) -> str:
    """sha256 of every file and symlink target under the config dirs, and the pending marks."""
    return host.ssh(
        f"find {CONFIG_DIRS} \\( -type f -o -type l \\) -printf '%p -> %l\\n' | sort; "
        f"find {CONFIG_DIRS} -type f -print0 | sort -z | xargs -0 sha256sum; "
        "echo pending: $(ls /var/lib/mailtls/pending 2>/dev/null)"
    ).stdout


def daemons_active(host) -> list[str]:
    """['active', 'active'] when Postfix and Dovecot both run."""
    return host.ssh("systemctl is-active postfix dovecot", check=False).stdout.split()
