"""Benchmark the mail TLS deploy on real test hosts (systemd-nspawn Debian 12/13, real SSH).

    .venv/bin/python bench/bench.py                    # 3 rounds, 10 and 30 parallel hosts
    .venv/bin/python bench/bench.py --rev HEAD         # a clean export of a commit, not the work tree
    .venv/bin/python bench/bench.py --parallel-hosts 0 --runs 1   # quick look
    .venv/bin/python bench/bench.py --runs 0 --parallel-hosts 0 --dh --dh-4096   # DH rotation only

Every figure is a median over rounds, and every variant is measured side by side in the same
round (the order is rotated each round) so that the shared machine's load hits all of them
alike. Each round starts brand-new stock hosts (names starting with "b", or
$MAILTLS_BENCH_PREFIX), and all of them are
stopped at the end, also on Ctrl-C or an error.

What is measured (per round):
- ssh_true: a bare `ssh host true` (new connection each time, like pyinfra's).
- pyinfra_version: `pyinfra --version` (Python start-up + imports: fixed overhead of any run).
- floor: ONE ssh session running, as one shell script, the same writes the deploy performs,
  rendered by the deploy's own pure function (tasks.host_conf.render, from the host's
  MailHost fact, read untimed beforehand), then `postfix reload` and `doveadm reload`.
  floor_checked: the same with `postfix check` and `doveconf -x -n` before the reloads.
  floor_apply: the same writes inside the deploy's safety net (`mailtls-apply begin` before
  each change, `mailtls-apply commit` = check, reload, read-back, probes): one SSH session
  doing everything the deploy must do on the host. The fresh-converge target is against it.
  After the round a real `pyinfra` run on each floor host must report "No changes": proof that
  the floor did all the work the deploy does (results.json: floor_matches_deploy).
- fresh: `pyinfra -y inventory.py deploy.py` on one stock host per suite, and on N stock hosts
  at once for each N of --parallel-hosts (suites alternating); --no-wait adds the same with
  `pyinfra --no-wait` on hosts of its own. Each N-host run is judged against its CPU-bound
  minimum: all the CPU it used (hosts + controller) spread over this machine's cores.
- noop: the same command again on the converged hosts (1 host and N hosts); it must report
  zero changes (parsed from pyinfra's results table on stderr).
- remote commands: counted on the hosts by sshd itself (LogLevel VERBOSE, set before the
  round): every "Starting session: command|subsystem" line (exec or sftp channel) and every
  "Accepted publickey" (connection), bucketed by the time window of each run (containers
  share the controller's clock).
- ansible_fresh, ansible_noop (--ansible): the same deploy as an Ansible playbook
  (bench/ansible/mailtls.yml, fed the same rendered config as the floor), fresh on its own
  stock host per suite and again on the converged host (must report changed=0); afterwards a
  real `pyinfra` run on that host must report "No changes" (results.json:
  ansible_matches_deploy). Its hosts get Debian's python3 before the round, untimed
  (python_debs); ansible-core from bench/requirements-ansible.txt in bench/.venv-ansible.
- dh (--dh): CPU seconds on the host of the DH rotation for each supported source/size, once
  the DH task (tasks/dh.py, files/mailtls-dh-rotate) exists in the checkout.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ansible_cmp import ANSIBLE_VENV, ansible_version
from bench.dh import dh_available, dh_prepare, dh_start_background, run_dh
from bench.floor import FLOORS
from bench.measure import PREFIX, PYINFRA, log
from bench.report import TARGETS, summarise, table
from bench.run import HOST_MEMORY, mem_available, one_round, parallel_sets
from testhosts import hosts as th

RESULTS = ROOT / "bench" / "results.json"
SUITES = ("bookworm", "trixie")


def reexec_at(rev: str) -> int:
    """Export `rev` to a temporary directory, copy this bench's modules into it, and run it there."""

    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tree = Path(tempfile.mkdtemp(prefix=f"mailtls-bench-{sha[:8]}-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", sha], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    (tree / "bench").mkdir(exist_ok=True)
    for module in Path(__file__).resolve().parent.glob("*.py"):  # this bench, that tree
        (tree / "bench" / module.name).write_bytes(module.read_bytes())
    # Byte-compile the project, as pip does for pyinfra and every other installed package: a
    # user's runs reuse the bytecode, while with PYTHONDONTWRITEBYTECODE set (as in some
    # shells here) every run would compile tasks/ and testhosts/ again (bench/README.md).
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(tree / "tasks"), str(tree / "testhosts")],
        check=True,
    )
    argv, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--rev":
            skip = True
            continue
        if a.startswith("--rev="):
            continue
        argv.append(a)
    if not any(a == "--output" or a.startswith("--output=") for a in argv):
        argv += ["--output", str(RESULTS)]
    log(f"benching {rev} ({sha[:10]}) from {tree}")
    env = dict(os.environ, MAILTLS_BENCH_REV=f"{rev} {sha}", MAILTLS_ANSIBLE_VENV=str(ANSIBLE_VENV))
    try:
        return subprocess.run(
            [sys.executable, str(tree / "bench" / "bench.py"), *argv], env=env
        ).returncode
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(tree)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="rounds of fresh hosts (medians over them)")
    ap.add_argument("--noop-reps", type=int, default=3, help="no-op repetitions per round")
    ap.add_argument(
        "--parallel-hosts",
        default="10,30",
        help="host counts for the parallel runs, comma-separated (0: none)",
    )
    ap.add_argument(
        "--no-wait",
        action="store_true",
        help="also run each parallel case with `pyinfra --no-wait`, on hosts of its own",
    )
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument(
        "--dh", action="store_true", help="measure DH rotation CPU (once the DH task landed)"
    )
    ap.add_argument("--dh-runs", type=int, default=3)
    ap.add_argument(
        "--dh-4096",
        action="store_true",
        help="also generated 4096-bit DH, once, in the background on its own host (~7 min)",
    )
    ap.add_argument("--dh-4096-timeout", type=float, default=1800)
    ap.add_argument(
        "--dh-uncommitted",
        action="store_true",
        help="measure the DH rotation from the working tree even if it is not committed",
    )
    ap.add_argument(
        "--ansible",
        action="store_true",
        help="also the same deploy as an Ansible playbook (bench/ansible/), on hosts of its own "
        "with python3 (bench/requirements-ansible.txt, installed into bench/.venv-ansible)",
    )
    ap.add_argument("--output", default=str(RESULTS))
    ap.add_argument(
        "--rev",
        help="bench this git revision (exported with git archive to a temporary "
        "directory) instead of the working tree, which others may be editing",
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("needs root (systemd-nspawn test hosts)")
    if args.rev:
        return reexec_at(args.rev)
    suites = [s for s in args.suites.split(",") if s]
    args.sizes = [int(n) for n in args.parallel_hosts.split(",") if n.strip() and int(n) > 0]
    names = (
        [f"{PREFIX}{k}{s[0]}" for s in suites for k in [*FLOORS.values(), "d", "n"]]
        + [n for names in parallel_sets(args).values() for n in names]
        + (
            [f"{PREFIX}h{s[0]}" for s in suites] + [f"{PREFIX}h4"]
            if args.dh or args.dh_4096
            else []
        )
    )
    # Each host's root is a tmpfs: too many fill the memory (checked once: later rounds replace
    # the hosts of the round before, same names).
    n_hosts = len(names) - (len(suites) + 1 if args.dh or args.dh_4096 else 0)
    if args.runs and n_hosts * HOST_MEMORY > mem_available() * 0.8:
        ap.error(
            f"{n_hosts} hosts need about {n_hosts * HOST_MEMORY >> 20} MiB of memory, "
            f"{mem_available() >> 20} MiB available: fewer --parallel-hosts, or no --no-wait"
        )
    # One bench at a time: each one stops its hosts (same names) when it ends.
    # Held (open, flocked) until the process exits: no `with` block.
    lock = open(  # noqa: SIM115
        "/run/mailtls-bench.lock" if PREFIX == "b" else f"/run/mailtls-bench-{PREFIX}.lock", "w"
    )
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        ap.error("another bench/bench.py is running (its hosts have the same names)")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    rounds = []
    dh: dict = {"status": "not measured (run with --dh)"}
    dh_why = dh_available(args.dh_uncommitted)
    bg: dict = {}
    try:
        if (args.dh or args.dh_4096) and not dh_why and args.dh_4096:
            bg["host"] = th.up([f"{PREFIX}h4:{suites[-1]}"], log=lambda m: log(m))[0]
            dh_prepare(bg["host"])
            dh_start_background(bg["host"], 4096)
            log("started the 4096-bit DH generation in the background on bh4")
        for r in range(args.runs):
            rounds.append(one_round(r, args, suites))
        if dh_why:
            dh = {"status": dh_why}
        elif args.dh or args.dh_4096:
            dh = run_dh(args, suites, bg)
    finally:
        log("stopping bench hosts")
        th.down(names)
    summary = summarise(rounds, suites)
    result = {
        "command": "bench/bench.py " + " ".join(sys.argv[1:]),
        "started": started_at,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
        },
        "pyinfra": subprocess.run(
            [PYINFRA, "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "tree": (
            f"git revision {os.environ['MAILTLS_BENCH_REV']} (clean export)"
            if os.environ.get("MAILTLS_BENCH_REV")
            else "working tree of "
            + subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
            ).stdout.strip()
        ),
        "targets": TARGETS,
        **({"ansible": ansible_version()} if args.ansible else {}),
        **summary,
        "dh": dh,
        "raw": [{k: v for k, v in rd["samples"].items()} for rd in rounds],
    }
    Path(args.output).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(table(summary, suites, dh))
    ld = summary["load"]
    print(
        f"\nload average during the runs: min {ld['min']:.2f}, median {ld['median']:.2f}, "
        f"max {ld['max']:.2f} on {os.cpu_count()} CPUs; floor equals deploy: "
        f"{all(summary['floor_matches_deploy'].values())}; results: {args.output}"
    )
    if "ansible_matches_deploy" in summary:
        print(f"playbook equals deploy: {all(summary['ansible_matches_deploy'].values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
