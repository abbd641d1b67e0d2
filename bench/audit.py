"""Benchmark the audit: `pyinfra audit.py` on 1 and on 10 deployed hosts against sslyze's own CLI
scanning the same ports with the same checks, side by side in each round.

    .venv/bin/python bench/audit.py --runs 3            # 10 hosts, Debian 12/13/14 alternating
    .venv/bin/python bench/audit.py --runs 1 --hosts 3  # quick look

Needs root. It starts its own hosts (named `ba1`..., or $MAILTLS_BENCH_PREFIX + "a1"...),
deploys them once with the default profile (untimed), then runs every variant once per round, in
an order rotated each round, and stops the hosts at the end (also on Ctrl-C). Each figure is the
median over the rounds; each ratio is taken inside a round, then its median reported.

- sslyze_cli_SUITE: `python -m sslyze` on the first host of SUITE, its 7 mail ports, with the
  scan commands the audit asks of sslyze (cipher suites of every version, groups, certificate,
  renegotiation, resumption, compression, extended master secret; STARTTLS by port).
- audit_1_SUITE: `pyinfra -y inventory.py audit.py` on that host (the whole audit: facts and
  log report over SSH, scan, probes, verdicts, JSON, HTML, metrics).
- audit_N: the same on all N hosts at once. Judged against one host's audit, and against its
  CPU-bound minimum: all the CPU it used (controller and hosts) spread over this machine's cores.

Targets (issue 23): audit_1 <= 0.25 x sslyze_cli on the same host; audit_N (10) <= 1.5 x audit_1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sslyze.plugins.scan_commands import ScanCommandsRepository  # noqa: E402

from bench.measure import PREFIX, PYINFRA, Sample, log, med, pyinfra_env, ratio, timed  # noqa: E402
from tasks.audit.scan import COMMANDS  # noqa: E402
from tasks.policy import PORTS  # noqa: E402
from testhosts import hosts as th  # noqa: E402

RESULTS = ROOT / "bench" / "results-audit.json"
SUITES = ("bookworm", "trixie", "forky")
TARGETS = {"audit_1 / sslyze_cli": 0.25, "audit_N / audit_1": 1.5}
# The CLI option of each scan command the audit runs (tasks.audit.scan.COMMANDS: the folded
# ones and those left to sslyze), as sslyze's CLI names it.
SSLYZE_CHECKS = sorted(
    f"--{ScanCommandsRepository.get_implementation_cls(c).cli_connector_cls._cli_option}"
    for c in COMMANDS
)


def sslyze_cli(host: th.Host, out: Path) -> Sample:
    # --starttls auto: SMTP on 25/587, IMAP on 143, POP3 on 110, TLS from the first byte on the
    # others, as tasks.policy.PORTS says for each.
    targets = [f"{host.address}:{port}" for port in PORTS]
    sample, res = timed(
        [sys.executable, "-m", "sslyze", "--starttls", "auto", *SSLYZE_CHECKS, *targets],
        hosts=[host],
    )
    if res.returncode != 0 or "SCANS COMPLETED" not in res.stdout:
        raise RuntimeError(f"sslyze CLI on {host.name} failed:\n{res.stdout[-3000:]}{res.stderr}")
    sample["errors"] = res.stdout.count("ERROR - Could not connect") + res.stdout.count(
        "ERROR - Error when running"
    )
    return sample


def audit(hosts: list[th.Host], out: Path) -> Sample:
    env = pyinfra_env(hosts) | {"MAILTLS_AUDIT_JSON": str(out / "{host}.json")}
    sample, res = timed([PYINFRA, "-y", "inventory.py", "audit.py"], env=env, hosts=hosts)
    results = [json.loads((out / f"{h.name}.json").read_text()) for h in hosts]
    if res.returncode != 0 or not all(r["ok"] for r in results):
        raise RuntimeError(f"audit of {len(hosts)} hosts failed:\n{res.stderr[-4000:]}")
    sample["scan_seconds"] = max(r["scan_seconds"] for r in results)
    sample["retries"] = sum(p.get("retries", 0) for r in results for p in r["ports"])
    return sample


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--hosts", type=int, default=10, help="hosts of the parallel audit")
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--output", default=str(RESULTS))
    args = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("needs root (systemd-nspawn test hosts)")
    suites = [s for s in args.suites.split(",") if s]
    if args.hosts < len(suites):
        ap.error(f"--hosts {args.hosts}: at least one per suite ({len(suites)})")
    specs = [f"{PREFIX}a{i + 1}:{suites[i % len(suites)]}" for i in range(args.hosts)]
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    names = [s.split(":")[0] for s in specs]
    rounds: list[dict[str, Sample]] = []
    try:
        log(f"starting {len(specs)} hosts and deploying them (untimed)")
        hosts = th.up(specs, log=log)
        single = {s: hosts[i] for i, s in enumerate(suites)}
        deploy, res = timed([PYINFRA, "-y", "inventory.py", "deploy.py"], env=pyinfra_env(hosts))
        if res.returncode != 0:
            raise RuntimeError(f"deploy failed:\n{res.stderr[-4000:]}")
        variants: dict[str, Callable[[Path], Sample]] = {
            f"sslyze_cli_{s}": partial(sslyze_cli, h) for s, h in single.items()
        }
        variants |= {f"audit_1_{s}": partial(audit, [h]) for s, h in single.items()}
        variants["audit_N"] = partial(audit, hosts)
        order = list(variants)
        for r in range(args.runs):
            samples: dict[str, Sample] = {}
            for key in order[r % len(order) :] + order[: r % len(order)]:
                with tempfile.TemporaryDirectory() as tmp:
                    samples[key] = variants[key](Path(tmp))
                log(f"round {r + 1} {key}: {samples[key]['wall']:.2f} s")
            rounds.append(samples)
    finally:
        th.down(names)
    summary = summarise(rounds, suites, args.hosts)
    print(table(summary))
    Path(args.output).write_text(
        json.dumps(
            {
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "rev": os.environ.get("MAILTLS_BENCH_REV"),
                "cores": os.cpu_count(),
                "hosts": args.hosts,
                "suites": suites,
                "summary": summary,
                "rounds": rounds,
            },
            indent=2,
        )
        + "\n"
    )
    log(f"written {args.output}")
    return 0


def summarise(rounds: list[dict[str, Sample]], suites: list[str], n: int) -> dict:
    """Medians over the rounds, and the ratios taken inside each round."""
    cores = os.cpu_count() or 1
    out: dict = {"wall": {}, "cpu": {}, "ratios": {}, "targets": TARGETS}
    for key in rounds[0] if rounds else []:
        out["wall"][key] = med([r[key]["wall"] for r in rounds])
        out["cpu"][key] = med([r[key]["local_cpu"] + r[key].get("host_cpu", 0) for r in rounds])
    per_round: dict[str, list] = {}
    for r in rounds:
        one = [r[f"audit_1_{s}"]["wall"] for s in suites]
        for s in suites:
            per_round.setdefault(f"audit_1 / sslyze_cli ({s})", []).append(
                ratio(r[f"audit_1_{s}"]["wall"], r[f"sslyze_cli_{s}"]["wall"])
            )
        per_round.setdefault(f"audit_N / audit_1 (N={n})", []).append(
            ratio(r["audit_N"]["wall"], med(one))
        )
        floor = (r["audit_N"]["local_cpu"] + r["audit_N"].get("host_cpu", 0)) / cores
        per_round.setdefault("audit_N / its CPU-bound minimum", []).append(
            ratio(r["audit_N"]["wall"], floor)
        )
    out["ratios"] = {k: med(v) for k, v in per_round.items()}
    return out


def table(summary: dict) -> str:
    lines = [f"{'variant':<22} {'wall s':>8} {'CPU s':>8}"]
    for key, wall in summary["wall"].items():
        lines.append(f"{key:<22} {wall:>8.2f} {summary['cpu'][key]:>8.2f}")
    lines.append("")
    for key, value in summary["ratios"].items():
        target = next((t for k, t in TARGETS.items() if key.startswith(k)), None)
        verdict = "" if target is None else f" (target <= {target:.2f})"
        lines.append(f"{key:<40} {value:>6.2f}{verdict}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
