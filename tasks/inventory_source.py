"""Parse the inventory sources that inventory.py documents. Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from pathlib import Path

from pyinfra_cli.util import parse_cli_arg  # the same value parsing as `--data key=value`


class InventoryError(ValueError):
    pass


def _target(text: str, where: str) -> tuple[str, dict]:
    """'root@mx.example.org:2222' -> ('mx.example.org', {'ssh_user': 'root', 'ssh_port': 2222}).

    IPv6: '2001:db8::1' (no port) or '[2001:db8::1]:2222'.
    """
    data: dict = {}
    user, at, rest = text.rpartition("@")
    if at:
        if not user:
            raise InventoryError(f"{where}: empty user in {text!r}")
        data["ssh_user"] = user
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise InventoryError(
                f"{where}: bad host {text!r} (IPv6 with a port: [2001:db8::1]:2222)"
            )
        colon, port = tail[:1], tail[1:]
        _ipv6(host, text, where)
    elif rest.count(":") > 1:  # a bare IPv6 address: no port
        host, colon, port = rest, "", ""
        _ipv6(host, text, where)
    else:
        host, colon, port = rest.partition(":")
    if colon:
        if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
            raise InventoryError(f"{where}: bad port in {text!r}")
        data["ssh_port"] = int(port)
    if not host or any(c.isspace() or c in "'\"`$;&|<>[]" for c in host):
        raise InventoryError(f"{where}: bad host {text!r}")
    return host, data


def _ipv6(address: str, text: str, where: str) -> None:
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        raise InventoryError(
            f"{where}: bad IPv6 address in {text!r} (with a port: [2001:db8::1]:2222)"
        ) from None


def parse_hosts_list(text: str) -> list:
    return [_target(t.strip(), "MAILTLS_HOSTS") for t in text.split(",") if t.strip()]


def parse_hosts_file(path: Path) -> list:
    hosts = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}:{n}"
        first, *pairs = line.split()
        name, data = _target(first, where)
        for pair in pairs:
            key, eq, value = pair.partition("=")
            if not eq or not key:
                raise InventoryError(f"{where}: expected key=value, got {pair!r}")
            data[key] = parse_cli_arg(value)
        hosts.append((name, data))
    return hosts


def hosts_from_env(
    env: Mapping[str, str], default: Callable[[str | None], list] | None = None
) -> list:
    """The hosts MAILTLS_HOSTS or MAILTLS_HOSTS_FILE name; else `default(MAILTLS_TESTHOSTS)`
    (inventory.py passes the local test hosts: the harness is the entry point's, not ours).

    >>> hosts_from_env({"MAILTLS_HOSTS": "mx1.example.org"})
    [('mx1.example.org', {})]
    """
    if env.get("MAILTLS_HOSTS"):
        return parse_hosts_list(env["MAILTLS_HOSTS"])
    if env.get("MAILTLS_HOSTS_FILE"):
        return parse_hosts_file(Path(env["MAILTLS_HOSTS_FILE"]))
    if default is None:
        raise InventoryError("no hosts: set MAILTLS_HOSTS or MAILTLS_HOSTS_FILE")
    try:
        return default(env.get("MAILTLS_TESTHOSTS"))
    except LookupError as exc:
        raise InventoryError(str(exc)) from None
