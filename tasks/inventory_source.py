"""Parse the inventory sources that inventory.py documents; pure except for the test-host registry."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
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


DEMO_HOSTS = "bookworm,trixie"  # what `python -m testhosts up` starts with no names


def local_test_hosts(names: str | None = None) -> list:
    """Running local test hosts by name; by default the demo hosts that are running.

    Never every running host: other tests' and benchmarks' hosts are not the demo's to change.
    """
    from testhosts import hosts as th

    wanted = {n.strip() for n in (names or DEMO_HOSTS).split(",") if n.strip()}
    found = [(h.name, h.pyinfra_data()) for h, alive in th.status() if alive and h.name in wanted]
    if names and len(found) != len(wanted):
        missing = wanted - {n for n, _ in found}
        raise InventoryError(
            f"MAILTLS_TESTHOSTS: no running test host {', '.join(sorted(missing))}"
        )
    if not found:
        raise InventoryError(
            "no hosts: set MAILTLS_HOSTS or MAILTLS_HOSTS_FILE, or start local test hosts with "
            "`python -m testhosts up`"
        )
    return found


def hosts_from_env(env: Mapping[str, str]) -> list:
    if env.get("MAILTLS_HOSTS"):
        return parse_hosts_list(env["MAILTLS_HOSTS"])
    if env.get("MAILTLS_HOSTS_FILE"):
        return parse_hosts_file(Path(env["MAILTLS_HOSTS_FILE"]))
    return local_test_hosts(env.get("MAILTLS_TESTHOSTS"))
