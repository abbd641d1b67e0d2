"""What the MailHost fact (tasks/facts.py) reads from one host, as a typed value: the input of
every plan. Pure, so the plans and the tests need no pyinfra to build one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tasks.policy import HostCaps

# The most the fact reads of a file it is asked about (ours and certificates are a few KiB).
READ_MAX = 1024 * 1024


@dataclass(frozen=True)
class Unit:
    """How systemd sees a daemon's unit (`systemctl is-enabled` / `is-active` words).

    >>> Unit("enabled", "failed").state
    'down'
    """

    enabled: str  # enabled, disabled, masked, static, ...
    active: str  # active, inactive, failed, activating, ...

    @property
    def state(self) -> str:
        """running; down (failed: it would not start or died, the commit starts it once its
        config checks); stopped (inactive but enabled: the admin's, left alone); disabled."""
        if self.active in ("active", "activating", "reloading"):
            return "running"
        if self.active == "failed":
            return "down"
        return "disabled" if self.enabled in ("disabled", "masked") else "stopped"


@dataclass(frozen=True)
class PostfixInstance:
    """A Postfix instance besides /etc/postfix (postmulti, Debian's postfix@NAME)."""

    directory: str  # its config_directory, e.g. /etc/postfix-out
    name: str  # multi_instance_name ("" when unset)
    enabled: bool  # multi_instance_enable


@dataclass(frozen=True)
class HostFacts:
    """What MailHost read from one host. Only ``caps`` is required, so tests and the benchmark
    can build one by hand.

    Example::

        HostFacts(
            caps=HostCaps(postfix=(3, 10, 13), dovecot=(2, 4, 1), openssl=(3, 5, 9)),
            postconf={"smtpd_tls_security_level": "may"},    # postconf -n
            services={"smtp/inet": "smtp inet n - y - - smtpd"},  # postconf -M, by name/type
            master_params={"submission/inet/syslog_name": "postfix/submission"},  # postconf -P
            files={"/etc/dovecot/conf.d/99-mailtls.conf": "4f2a..."},  # path -> sha256
            modes={"/etc/dovecot/conf.d/99-mailtls.conf": "644"},  # of the same files
            asked=frozenset({"/etc/dovecot/conf.d/99-mailtls.conf", "/etc/ssl/mailtls/dh.pem"}),
            pending=frozenset({"postfix"}),
        )
    """

    caps: HostCaps
    postconf: Mapping[str, str] = field(default_factory=dict)  # main.cf's explicit settings
    services: Mapping[str, str] = field(default_factory=dict)  # master.cf 'name/type' -> line
    master_params: Mapping[str, str] = field(default_factory=dict)  # 'svc/type/param' -> value
    # path -> sha256 / octal mode, for the paths asked for that are regular files of at most
    # READ_MAX bytes; larger ones are in `oversize` (not read).
    files: Mapping[str, str] = field(default_factory=dict)
    modes: Mapping[str, str] = field(default_factory=dict)
    asked: frozenset[str] = frozenset()  # every path asked for
    oversize: frozenset[str] = frozenset()
    pending: frozenset[str] = frozenset()  # daemons with a reload pending
    # [DH_ROTATE_LOCK] while a DH rotation runs: it commits every daemon when it installs its file.
    busy: tuple[str, ...] = ()
    # For guard=PATH: lines about PATH and the TLS files the host uses now (dh.host_refusal()).
    guard: tuple[str, ...] = ()
    # grep lines `file:line:text` of Dovecot files other than ours that set a TLS-policy
    # setting, with their blocks and every !include; empty on a stock host.
    dovecot_tree: tuple[str, ...] = ()
    # The certificate and key our Dovecot file names, when the deploy had to read them (its
    # checksum did not tell: host_conf.HostConf.read_dovecot_named); named_read says it did.
    dovecot_named: tuple[str, str] | None = None
    named_read: bool = False
    # Postfix instances other than /etc/postfix, which the deploy does not manage (refused)
    instances: tuple[PostfixInstance, ...] = ()
    # daemon -> its systemd unit's state; a daemon absent here is not installed or has no systemd
    units: Mapping[str, Unit] = field(default_factory=dict)
