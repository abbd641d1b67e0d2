"""One round of the bench: fresh stock hosts, every variant side by side in a rotated order, then
the checks that the floor and the playbook did what the deploy does."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench.ansible_cmp import ansible_matches_deploy, ansible_prepare, run_ansible
from bench.floor import FLOORS, floor_script, run_floor
from bench.measure import (
    PREFIX,
    PYINFRA,
    Sample,
    attach_counts,
    log,
    pyinfra_env,
    read_fact,
    results_table,
    run_pyinfra,
    ssh_true,
    sshd_events,
    timed,
)
from testhosts import hosts as th

SSHD_VERBOSE = (
    "echo 'LogLevel VERBOSE' > /etc/ssh/sshd_config.d/zz-mailtls-bench.conf && systemctl reload ssh"
)


def rotate(items: list, n: int) -> list:
    n %= max(1, len(items))
    return items[n:] + items[:n]


HOST_MEMORY = 300 << 20  # a booted stock host: its tmpfs root plus its processes (bench/README.md)


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) << 10
    return 0


def parallel_sets(args) -> dict[str, list[str]]:
    """Host names of each parallel run: "10" -> bp10n1..bp10n10; "10nw" (--no-wait) -> bw10n1..."""
    sets = {}
    for n in args.sizes:
        sets[str(n)] = [f"{PREFIX}p{n}n{i + 1}" for i in range(n)]
        if args.no_wait:
            sets[f"{n}nw"] = [f"{PREFIX}w{n}n{i + 1}" for i in range(n)]
    return sets


def one_round(r: int, args, suites: list[str]) -> dict:
    specs = []
    for s in suites:
        c = s[0]
        specs += [f"{PREFIX}{k}{c}:{s}" for k in FLOORS.values()] + [f"{PREFIX}d{c}:{s}"]
        specs += [f"{PREFIX}n{c}:{s}"] if args.ansible else []
    sets = parallel_sets(args)
    par = [f"{n}:{suites[i % len(suites)]}" for names in sets.values() for i, n in enumerate(names)]
    log(f"round {r + 1}: starting {len(specs) + len(par)} stock hosts")
    started = th.up(specs + par, log=lambda m: log(m))
    by = {h.name: h for h in started}
    for h in started:
        h.ssh(SSHD_VERBOSE)
    time.sleep(1)
    floor_h = {(kind, s): by[f"{PREFIX}{k}{s[0]}"] for kind, k in FLOORS.items() for s in suites}
    dep_h = {s: by[f"{PREFIX}d{s[0]}"] for s in suites}
    par_h = {key: [by[n] for n in names] for key, names in sets.items()}
    scripts = {(kind, s): floor_script(h, read_fact(h), kind) for (kind, s), h in floor_h.items()}
    ans = ansible_prepare(suites, by) if args.ansible else {}
    out: dict[str, list[Sample]] = {}

    def add(key: str, sample: Sample) -> None:
        out.setdefault(key, []).append(sample)

    # fresh phase: every variant on its own stock host, order rotated per round
    fresh: list[tuple[str, Callable[[], Sample]]] = []
    for (kind, s), h in floor_h.items():
        fresh.append((f"{kind}/{s}", partial(run_floor, h, scripts[(kind, s)], kind)))
    for s in suites:
        fresh.append((f"fresh1/{s}", partial(run_pyinfra, [dep_h[s]], "fresh1", False)))
    for key, hosts in par_h.items():
        extra = ("--no-wait",) if key.endswith("nw") else ()
        fresh.append((f"fresh{key}", partial(run_pyinfra, hosts, f"fresh{key}", False, extra)))
    fresh.append(("pyinfra_version", lambda: timed([PYINFRA, "--version"])[0]))
    for s in suites:
        fresh.append((f"ssh_true/{s}", partial(ssh_true, dep_h[s])))
    fresh += [
        (f"ansible_fresh/{s}", partial(run_ansible, *a, "ansible_fresh", False))
        for s, a in ans.items()
    ]
    for key, fn in rotate(fresh, r):
        sample = fn()
        add(key, sample)
        log(f"  {key:22s} {sample['wall']:7.2f} s  (load {sample['load']:.2f})")

    # no-op phase: converged hosts, repeated, rotated
    noop: list[tuple[str, Callable[[], Sample]]] = []
    for s in suites:
        noop.append((f"noop1/{s}", partial(run_pyinfra, [dep_h[s]], "noop1", True)))
        noop.append((f"ssh_true/{s}", partial(ssh_true, dep_h[s])))
    for key, hosts in par_h.items():
        extra = ("--no-wait",) if key.endswith("nw") else ()
        noop.append((f"noop{key}", partial(run_pyinfra, hosts, f"noop{key}", True, extra)))
    noop.append(("pyinfra_version", lambda: timed([PYINFRA, "--version"])[0]))
    noop += [
        (f"ansible_noop/{s}", partial(run_ansible, *a, "ansible_noop", True))
        for s, a in ans.items()
    ]
    for rep in range(args.noop_reps):
        for key, fn in rotate(noop, r + rep):
            sample = fn()
            add(key, sample)
            log(f"  {key:22s} {sample['wall']:7.2f} s  (load {sample['load']:.2f})")

    # the floor did what the deploy does: a real deploy on the floor hosts changes nothing
    matches: dict[str, bool] = {}
    for (kind, s), h in floor_h.items():
        _, res = timed([PYINFRA, "-y", "inventory.py", "deploy.py"], env=pyinfra_env([h]))
        ok = res.returncode == 0 and results_table(res.stderr)["success"] == 0
        matches[f"{kind}/{s}"] = ok
        if not ok:
            log(f"  WARNING: {kind}/{s}: the deploy still changed things after the floor script")

    # and so did the playbook: the deploy after it changes nothing
    ansible_matches = {s: ansible_matches_deploy(h) for s, (h, _) in ans.items()}
    for s, ok in ansible_matches.items():
        if not ok:
            log(f"  WARNING: ansible/{s}: the deploy still changed things after the playbook")

    events = {h.name: sshd_events(h) for h in started}
    for samples in out.values():
        attach_counts([x for x in samples if "hosts" in x], events)
    return {
        "samples": out,
        "floor_matches_deploy": matches,
        "ansible_matches_deploy": ansible_matches,
    }
