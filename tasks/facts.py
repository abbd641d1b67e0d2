"""Custom pyinfra facts: everything the deploy needs from a host, read in one round trip."""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase, QuoteString, StringCommand

from tasks.dovecot.conf import CONF_PATH, POLICY_KEYS
from tasks.host_facts import READ_MAX, HostFacts, PostfixInstance, Unit
from tasks.policy import HostCaps, parse_version
from tasks.scripts import CONTRACT

# Held for their whole run by files/mailtls-dh-rotate (LOCK) and files/mailtls-cert-watch (.lock).
# The fact never takes DH_ROTATE_LOCK (it reads /proc/PID/fdinfo): a rotation must never skip for it.
DH_ROTATE_LOCK = CONTRACT["DH_ROTATE_LOCK"]
CERT_WATCH_LOCK = CONTRACT["CERT_WATCH_LOCK"]

# Each section starts with a `@@name` line. Missing daemons print nothing in their section.
# The postconf runs (a few ms each) go at the same time, into a temporary directory, and the
# checksums in one sha256sum (their modes in one stat): this read is all a no-op run does on a host.
_SCRIPT = r"""
export LC_ALL=C
t=$(mktemp -d) || exit 1
trap 'rm -rf "$t"' EXIT
trap 'exit 1' HUP INT PIPE TERM
if command -v postconf >/dev/null; then
    { echo @@postfix_version; postconf -h mail_version; } > "$t/1" 2>/dev/null &
    { echo @@postconf_n; postconf -n; } > "$t/2" 2>/dev/null &
    { echo @@postconf_m; postconf -M; } > "$t/3" 2>/dev/null &
    { echo @@postconf_p; postconf -P; } > "$t/4" 2>/dev/null &
fi
command -v dovecot >/dev/null && { echo @@dovecot_version; dovecot --version; } > "$t/5" 2>/dev/null &
# Dovecot files other than ours that set a TLS-policy setting: then their block structure and
# every !include, so the deploy can tell whether one beats ours (none on a stock host: no output).
if [ -d /etc/dovecot ]; then
    k='^[[:space:]]*({keys})[[:space:]]*='
    hits=$(grep -rlE "$k" --exclude={ours} /etc/dovecot 2>/dev/null)
    [ -z "$hits" ] || { echo @@dovecot_tree; grep -rnE '^[[:space:]]*!include' /etc/dovecot
                        grep -nHE "^[^#]*[{}]|$k" $hits; } > "$t/6" 2>/dev/null
fi &
{ echo @@openssl_version; openssl version; } > "$t/7" 2>/dev/null &
# Postfix instances besides /etc/postfix (postmulti's multi_instance_directories, Debian's
# /etc/postfix-NAME for postfix@NAME): their directory, name and whether they are enabled.
if command -v postconf >/dev/null; then
    { echo @@instances
      for d in $(postconf -h multi_instance_directories | tr ',' ' ') /etc/postfix-*; do
          [ -f "$d/main.cf" ] || continue
          echo "$d $(postconf -c "$d" -h multi_instance_name) $(postconf -c "$d" -h multi_instance_enable)"
      done | sort -u
    } > "$t/9" 2>/dev/null &
fi
# Whether each daemon runs (as mailtls-apply asks), else whether systemd reports a unit of it
# failed; and whether it is enabled.
if command -v systemctl >/dev/null; then
    { echo @@units
      if command -v postconf >/dev/null; then
          s=inactive
          if postfix status >/dev/null 2>&1; then s=active; else
              for u in {postfix_units}; do systemctl is-failed --quiet "$u" && s=failed; done
          fi
          echo "postfix $(systemctl is-enabled postfix.service) $s"
      fi
      command -v dovecot >/dev/null &&
          echo "dovecot $(systemctl is-enabled {dovecot_units}) $(systemctl is-active {dovecot_units})"
    } > "$t/8" 2>/dev/null &
fi
echo @@asked
printf '%s\n' {files}
set --
for f in {files}; do [ -f "$f" ] && set -- "$@" "$f"; done
# Some paths name the admin's certificate sources, where a non-root user may put anything: only
# regular files (-f: no FIFO or device), of at most {read_max} bytes, under a time limit (a file
# swapped for a FIFO after the stat). One stat for all, one sha256sum for those small enough.
if [ $# -gt 0 ]; then
    st=$(timeout -k 1 5 stat -L -c '%s %a %n' -- "$@" 2>/dev/null)
    set --
    echo @@modes
    while read -r n m f; do
        [ -n "$f" ] && [ "$n" -le {read_max} ] && echo "$m $f" && set -- "$@" "$f"
    done <<EOF
$st
EOF
    [ $# -eq 0 ] || { echo @@files; timeout -k 1 10 sha256sum -- "$@"; } 2>/dev/null
    echo @@oversize
    while read -r n m f; do [ -n "$f" ] && [ "$n" -gt {read_max} ] && echo "$f"; done <<EOF
$st
EOF
fi
marks={pending}
set -- "$marks"/*
if [ -e "$1" ]; then  # whose reload is it? (nothing to ask on a converged host: no process)
    # A certificate check takes seconds: let one that runs finish (and commit what it began).
    [ -f {cert_lock} ] && flock -w 60 {cert_lock} true 2>/dev/null
    set -- "$marks"/*
    # A DH rotation (minutes) commits every daemon when it installs its file: while its lock is
    # held (the kernel drops it with its process), what is pending is left to it. Seen without
    # taking it (a rotation cron starts while the fact holds it would skip its week): the file
    # open in a process whose fdinfo lists a lock on it. (/proc/locks hides that lock: its PID
    # is the flock(1) helper's that took it, gone since.)
    [ -f {rotate_lock} ] && l=$(readlink -f {rotate_lock}) &&
        [ -n "$(find /proc/[0-9]*/fd -maxdepth 1 -lname "$l" -printf '%h/../fdinfo/%f\n' 2>/dev/null |
                xargs -r grep -ls '^lock:.*FLOCK')" ] && echo @@busy && echo {rotate_lock}
fi
echo @@pending
for f; do [ -e "$f" ] && echo "${f##*/}"; done
g={guard}
if [ -n "$g" ]; then  # where the DH file would go, and the TLS files it must not be (dh.host_refusal)
    echo @@guard
    {
        [ -L "$g" ] && echo "link $(readlink -- "$g")"
        r=$(readlink -m -- "$g"); echo "real $r"; d=${r%/*}
        while [ -n "$d" ]; do [ -d "$d" ] && stat -c 'dir %u %g %a %n' -- "$d"; d=${d%/*}; done
        stat -c 'dir %u %g %a /' /
        for p in $({ postconf -n; postconf -P; } 2>/dev/null |
                   sed -n 's/^[^=]*\(cert\|key\|chain\)_files\{0,1\} = //p' | tr ',' ' ') \
                 $(doveconf -P -n 2>/dev/null |
                   sed -n 's/^[[:space:]]*ssl_[a-z_]*\(cert\|key\)[a-z_]* = <\{0,1\}\(\/[^ ]*\)$/\2/p'); do
            case "$p" in /*) echo "tls $(readlink -m -- "$p") $p" ;; esac
        done
    } 2>/dev/null
fi
wait
cat "$t"/* 2>/dev/null
echo @@end
"""


def _kv(lines: list[str]) -> dict[str, str]:
    """'name = value' lines (postconf -n/-P) to a dict; 'name =' is an empty value."""
    out = {}
    for line in lines:
        key, found, value = f"{line} ".partition(" = ")
        if found:
            out[key.strip()] = value.strip()
    return out


class CronNameLines(FactBase[int]):
    """How many ``# pyinfra-name=NAME`` lines a crontab holds, wherever they are.

    pyinfra's Crontab fact drops comments that no job follows: this sees them.
    """

    def command(self, cron_name: str, user: str | None = None) -> StringCommand:
        user_args = ["-u", QuoteString(user)] if user else []
        return StringCommand(
            "crontab",
            *user_args,
            "-l",
            "2>/dev/null",
            "|",
            "grep",
            "-cxF",
            QuoteString(f"# pyinfra-name={cron_name}"),
            "||",
            "true",
        )

    def process(self, output: list[str]) -> int:
        return int(output[0]) if output and output[0].strip().isdigit() else 0


class MailHost(FactBase[HostFacts]):
    """Versions, current Postfix/Dovecot TLS config, checksums of managed files, pending
    reloads, as one HostFacts (its docstring shows the shape).

    Example:
        info = host.get_fact(MailHost, files=("/etc/dovecot/conf.d/99-mailtls.conf",))
        info.caps.postfix, info.files.get("/etc/dovecot/conf.d/99-mailtls.conf")
    """

    def command(self, files=(), guard: str = "") -> str:
        quoted = " ".join(shlex.quote(f) for f in files) or "''"
        return (
            _SCRIPT.replace("{files}", quoted)
            .replace("{guard}", shlex.quote(guard))
            .replace("{keys}", "|".join(POLICY_KEYS))
            .replace("{ours}", CONF_PATH.rsplit("/", 1)[1])
            .replace("{cert_lock}", CERT_WATCH_LOCK)
            .replace("{rotate_lock}", DH_ROTATE_LOCK)
            .replace("{pending}", CONTRACT["PENDING"])
            .replace("{read_max}", str(READ_MAX))
            .replace("{postfix_units}", CONTRACT["POSTFIX_UNITS"])
            .replace("{dovecot_units}", CONTRACT["DOVECOT_UNITS"])
        )

    def process(self, output: list[str]) -> HostFacts:
        sections: dict[str, list[str]] = {}
        current = None
        for line in output:
            if line.startswith("@@"):
                current = line[2:].strip()
                sections[current] = []
            elif current:
                sections[current].append(line)

        def version(name):
            text = " ".join(sections.get(name, [])).strip()
            return parse_version(text) if text else None

        services = {}
        for line in sections.get("postconf_m", []):
            parts = line.split()
            if len(parts) >= 2:
                services[f"{parts[0]}/{parts[1]}"] = " ".join(parts)
        files = {}
        for line in sections.get("files", []):  # sha256sum: "<digest>  <path>"
            digest, _, path = line.partition("  ")
            files[path] = digest
        modes = {}
        for line in sections.get("modes", []):  # stat: "<octal mode> <path>"
            mode, _, path = line.partition(" ")
            modes[path] = mode

        def lines(name: str) -> tuple[str, ...]:
            return tuple(line for line in sections.get(name, []) if line)

        return HostFacts(
            caps=HostCaps(
                postfix=version("postfix_version"),
                dovecot=version("dovecot_version"),
                openssl=version("openssl_version") or (0,),
            ),
            postconf=_kv(sections.get("postconf_n", [])),
            services=services,
            master_params=_kv(sections.get("postconf_p", [])),
            files=files,
            modes=modes,
            asked=frozenset(lines("asked")),
            oversize=frozenset(lines("oversize")),
            pending=frozenset(" ".join(sections.get("pending", [])).split()),
            busy=lines("busy"),
            guard=lines("guard"),
            dovecot_tree=lines("dovecot_tree"),
            instances=tuple(
                PostfixInstance(f[0], f[1] if len(f) > 1 else "", f[-1] == "yes")
                for f in (line.split() for line in lines("instances"))
                if f
            ),
            units={
                f[0]: Unit(enabled=f[1], active=f[2])
                for f in (line.split() for line in lines("units"))
                if len(f) == 3
            },
        )
