"""The DH rotation's cost on the host (--dh, --dh-4096): CPU seconds of mailtls-dh-rotate for
each generated size, and of the check of the fixed RFC 7919 groups."""

from __future__ import annotations

import re
import shlex
import subprocess
import time

from bench.measure import PREFIX, ROOT, loadavg, log, med, write_file
from tasks.scripts import script
from testhosts import hosts as th

DH_PATHS = ("tasks/dh/plan.py", "files/mailtls-dh-rotate")
DH_FILE = "/etc/ssl/mailtls/dh.pem"
ROTATE_BIN = "/usr/local/sbin/mailtls-dh-rotate"


def dh_available(allow_uncommitted: bool = False) -> str | None:
    """None when the DH rotation is in the benched tree (committed, in a git checkout), else why not."""
    missing = [p for p in DH_PATHS if not (ROOT / p).exists()]
    if missing:
        return f"not available yet: {', '.join(missing)} not in the tree"
    if (ROOT / ".git").exists() and not allow_uncommitted:
        res = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "--error-unmatch", *DH_PATHS],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            return (
                f"not available yet: {', '.join(DH_PATHS)} not committed (work in progress; "
                "--dh-uncommitted measures the working tree anyway)"
            )
    return None


def _times_cpu(text: str) -> float:
    """CPU seconds of the children from bash `times` output (line 2: children user sys)."""

    def secs(t: str) -> float:
        match = re.match(r"(\d+)m([\d.]+)s", t)
        if match is None:
            raise ValueError(f"not a `times` figure: {t!r}")
        m, s = match.groups()
        return int(m) * 60 + float(s)

    child = text.strip().splitlines()[-1].split()
    return secs(child[0]) + secs(child[1])


def dh_prepare(host: th.Host) -> None:
    """Install the rotation script (as the DH task would) and the shipped RFC 7919 groups."""
    data = script("mailtls-dh-rotate")
    cmds = [write_file(ROTATE_BIN, data, "0755")]
    for bits in (3072, 4096):
        cmds.append(
            write_file(
                f"/root/ffdhe{bits}.pem",
                (ROOT / "files" / "dh" / f"ffdhe{bits}.pem").read_bytes(),
                "0644",
            )
        )
    host.ssh("sh -s", input="set -e\n" + "\n".join(cmds) + "\n")


def dh_command(source: str, bits: int) -> str:
    if source == "generated":  # what cron and the deploy's background unit run, with explicit -f/-b
        return f"{ROTATE_BIN} -f {DH_FILE} -b {bits}"
    # RFC 7919 groups are fixed: nothing rotates; the only host work is checking a group
    return f"{ROTATE_BIN} --check /root/{source}.pem {bits}"


def measure_dh(host: th.Host, source: str, bits: int) -> dict:
    """CPU seconds (user+sys of the command and all its children) on the host, via bash `times`."""
    cmd = dh_command(source, bits)
    t0 = time.perf_counter()
    res = host.ssh(f"bash -c {shlex.quote(cmd + ' >/dev/null; times')}", timeout=3600)
    return {
        "source": source,
        "bits": bits,
        "cpu": _times_cpu(res.stdout),
        "wall": time.perf_counter() - t0,
        "command": cmd,
        "load": loadavg(),
    }


def dh_start_background(host: th.Host, bits: int) -> None:
    """Start one slow generation on the host, detached; dh_collect_background() reads its CPU."""
    cmd = dh_command("generated", bits)
    script = (
        f"rm -f /root/bench-dh.times; {cmd} >/dev/null 2>&1; times > /root/bench-dh.times.tmp; "
        "mv /root/bench-dh.times.tmp /root/bench-dh.times"
    )
    host.ssh(f"systemd-run --unit=mailtls-bench-dh --collect --quiet bash -c {shlex.quote(script)}")


def dh_collect_background(host: th.Host, timeout: float) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = host.ssh("cat /root/bench-dh.times 2>/dev/null", check=False)
        if res.stdout.strip():
            return {"cpu": _times_cpu(res.stdout)}
        time.sleep(5)
    return None


def run_dh(args, suites: list[str], bg: dict) -> dict:
    """2048/3072 generated and the fixed groups' check, --dh-runs times each, on one host per suite."""
    names = [f"{PREFIX}h{s[0]}:{s}" for s in suites]
    started = th.up(names, log=lambda m: log(m))
    cases = []
    try:
        for h in started:
            dh_prepare(h)
            for source, bits in (
                ("ffdhe3072", 3072),
                ("ffdhe4096", 4096),
                ("generated", 2048),
                ("generated", 3072),
            ):
                runs = [measure_dh(h, source, bits) for _ in range(args.dh_runs)]
                cases.append(
                    {
                        "suite": h.suite,
                        "source": source,
                        "bits": bits,
                        "n": len(runs),
                        "what": "rotation"
                        if source == "generated"
                        else "fixed group: nothing rotates; this is the check of the group",
                        "cpu_median": med([x["cpu"] for x in runs]),
                        "cpu_min": min(x["cpu"] for x in runs),
                        "cpu_max": max(x["cpu"] for x in runs),
                        "wall_median": med([x["wall"] for x in runs]),
                        "runs": runs,
                    }
                )
                log(f"  dh {source} {bits} [{h.suite}] {cases[-1]['cpu_median']:.2f} s CPU")
    finally:
        th.down([n.split(":")[0] for n in names])
    if bg.get("host"):
        log("waiting for the background 4096-bit generation")
        got = dh_collect_background(bg["host"], timeout=args.dh_4096_timeout)
        cases.append(
            {
                "suite": bg["host"].suite,
                "source": "generated",
                "bits": 4096,
                "n": 1,
                "what": "rotation (once, in the background, nice 19, during the other runs)",
                "cpu_median": got["cpu"] if got else None,
                "note": None if got else f"not finished after {args.dh_4096_timeout:.0f} s",
            }
        )
    return {
        "cases": cases,
        "tree": "committed" if not dh_available() else "working tree (uncommitted)",
    }
