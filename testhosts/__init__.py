"""Disposable Debian mail-server hosts for tests, CI and the demo.

Each host is a real Debian (bookworm or trixie) booted with systemd under
systemd-nspawn, in a network namespace of its own, reachable from the
controller over SSH on a /30 link: controller 10.213.I.1, host 10.213.I.2.

    python -m testhosts up bookworm trixie   # start, print addresses
    python -m testhosts status
    python -m testhosts down --all
"""

from testhosts.hosts import Host, down, down_all, status, up

__all__ = ["Host", "up", "down", "down_all", "status"]
