"""CLI: python -m testhosts {build,up,down,status,ssh}."""

from __future__ import annotations

import argparse
import os
import sys

from testhosts import hosts, image, variants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testhosts", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_build = sub.add_parser("build", help="build (or reuse) the cached root filesystems")
    p_build.add_argument(
        "suites",
        nargs="*",
        default=list(image.DEFAULT_SUITES),
        help=f"of {', '.join(image.SUITES)}; default: {' '.join(image.DEFAULT_SUITES)} "
        "(the others are built when a host first needs them)",
    )
    p_up = sub.add_parser("up", help="start hosts, restarting any of the same name")
    p_up.add_argument(
        "names",
        nargs="*",
        help="e.g. bookworm trixie (suite from the name), "
        "web1:trixie+legacy465 (shaped by a variant)",
    )
    p_up.add_argument("--suite", choices=sorted(image.SUITES))
    p_up.add_argument("--count", type=int, help="start NAME1..NAMEcount for each name given")
    p_down = sub.add_parser("down", help="stop hosts and clear their leftovers")
    p_down.add_argument("names", nargs="*")
    p_down.add_argument("--all", action="store_true")
    p_shape = sub.add_parser("shape", help="apply lived-in variants to a running host")
    p_shape.add_argument("name")
    p_shape.add_argument("variants", nargs="+", choices=sorted(variants.VARIANTS))
    sub.add_parser("variants", help="list the lived-in variants")
    sub.add_parser("status", help="list hosts and addresses")
    p_ssh = sub.add_parser("ssh", help="open a shell (or run a command) on a host")
    p_ssh.add_argument("name")
    p_ssh.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    if args.cmd == "variants":
        print(variants.__doc__)
        return 0
    if os.geteuid() != 0:
        parser.error("must run as root (network namespaces, mounts, systemd-nspawn)")
    if args.cmd == "build":
        unknown = sorted(set(args.suites) - set(image.SUITES))
        if unknown:
            parser.error(
                f"unknown suite(s) {', '.join(unknown)}; expected of {', '.join(image.SUITES)}"
            )
        for suite, path in image.build_all(args.suites).items():
            print(f"{suite}\t{path}")
    elif args.cmd == "up":
        names = args.names or list(hosts.DEMO_HOSTS)
        if args.count:
            names = [f"{n}{i}" for n in names for i in range(1, args.count + 1)]
        for h in hosts.up(names, suite=args.suite, log=lambda m: print(m, file=sys.stderr)):
            print(f"{h.name}\t{h.suite}\t{h.address}\t{'+'.join(h.variants)}")
    elif args.cmd == "shape":
        host = hosts.get(args.name)
        if not host:
            print(f"no running host {args.name!r}", file=sys.stderr)
            return 1
        variants.shape(host, args.variants)
    elif args.cmd == "down":
        if args.all:
            hosts.down_all()
        elif args.names:
            hosts.down(args.names)
        else:
            parser.error("name hosts or pass --all")
    elif args.cmd == "status":
        for h, alive in hosts.status():
            print(
                f"{h.name}\t{h.suite}\t{h.address}\t{'running' if alive else 'dead'}\t{'+'.join(h.variants)}"
            )
    elif args.cmd == "ssh":
        host = hosts.get(args.name)
        if not host:
            print(f"no running host {args.name!r}", file=sys.stderr)
            return 1
        os.execvp("ssh", host.ssh_argv(*args.command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
