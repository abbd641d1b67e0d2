"""One measurement on test hosts: a timed run (wall, CPU on the controller and the hosts), a
pyinfra run and its results table, `ssh true`, the deploy's fact and write command over plain
ssh, remote commands counted from sshd's log; the bench's host-name prefix, its log, medians."""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tasks import ops
from tasks.facts import MailHost
from tasks.host_facts import HostFacts
from tasks.mail_tls import fact_files
from tasks.settings import validate
from testhosts import hosts as th

ROOT = Path(__file__).resolve().parent.parent
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
# First letters of the bench's host names ("b": bfb, bp10n1, ...). Another prefix lets a bench
# run beside the one that uses "b" (its own hosts, its own lock): MAILTLS_BENCH_PREFIX=ba.
PREFIX = os.environ.get("MAILTLS_BENCH_PREFIX", "b")
if not re.fullmatch(r"[a-z][a-z0-9]{0,8}", PREFIX):
    sys.exit(f"MAILTLS_BENCH_PREFIX={PREFIX!r}: 1-9 lowercase letters or digits, a letter first")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# ---------------------------------------------------------------------------------------------
# timing helpers


class Sample(dict):
    """One timed run: wall seconds, controller CPU of the child, time window for sshd logs."""


def container_cpu(name: str) -> float | None:
    """CPU seconds used so far by every process of the test host whose resources are `name`
    (Host.owned; its cgroup's cpu.stat)."""
    for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        try:
            text = Path(f"{root}/testhosts/{name}/cpu.stat").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    return None


def timed(
    argv: list[str],
    env: dict | None = None,
    input: str | None = None,
    timeout: float = 900,
    hosts: list | None = None,
) -> tuple[Sample, subprocess.CompletedProcess]:
    """Run argv; wall time, controller CPU of the child, and CPU used on `hosts` meanwhile."""
    names = [h.owned for h in hosts or []]  # the cgroup is named as the host's resources
    cpu0 = [container_cpu(n) for n in names]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t_wall0 = time.time()
    t0 = time.perf_counter()
    res = subprocess.run(
        argv, env=env, cwd=ROOT, input=input, capture_output=True, text=True, timeout=timeout
    )
    wall = time.perf_counter() - t0
    t_wall1 = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    sample = Sample(wall=wall, local_cpu=cpu, t0=t_wall0, t1=t_wall1, load=loadavg())
    cpu1 = [container_cpu(n) for n in names]
    if names and None not in cpu0 + cpu1:
        # all hosts together
        sample["host_cpu"] = sum(
            b - a for a, b in zip(cpu0, cpu1, strict=True) if a is not None and b is not None
        )
    return sample, res


def pyinfra_env(hosts: list[th.Host]) -> dict:
    env = dict(os.environ, MAILTLS_TESTHOSTS=",".join(h.name for h in hosts))
    env.pop("MAILTLS_HOSTS", None)
    env.pop("MAILTLS_HOSTS_FILE", None)
    return env


def results_table(stderr: str) -> dict:
    """Grand total of pyinfra's results table: {'success': n, 'error': n, 'no_change': n}."""
    for line in stderr.splitlines():
        if line.strip().startswith("Grand total"):
            cols = re.split(r"\s{2,}", line.strip())
            nums = [0 if c == "-" else int(c) for c in cols[-4:]]
            return {"hosts": nums[0], "success": nums[1], "error": nums[2], "no_change": nums[3]}
    raise RuntimeError("no results table in pyinfra output:\n" + stderr[-3000:])


def run_pyinfra(
    hosts: list[th.Host], label: str, expect_noop: bool, extra: tuple[str, ...] = ()
) -> Sample:
    sample, res = timed(
        [PYINFRA, "-y", *extra, "inventory.py", "deploy.py"], env=pyinfra_env(hosts), hosts=hosts
    )
    if res.returncode != 0:
        raise RuntimeError(f"{label}: pyinfra failed ({res.returncode}):\n{res.stderr[-6000:]}")
    total = results_table(res.stderr)
    no_changes = res.stderr.count("] No changes")
    sample.update(
        label=label, hosts=[h.name for h in hosts], changes=total["success"], errors=total["error"]
    )
    if expect_noop:
        # zero changes in the results table, and every operation of every host said so
        sample["zero_changes"] = total["success"] == 0 and total["error"] == 0 and no_changes > 0
        if not sample["zero_changes"]:
            raise RuntimeError(
                f"{label}: the no-op re-run changed something:\n{res.stderr[-6000:]}"
            )
    return sample


# ---------------------------------------------------------------------------------------------
# the deploy's own fact and write command, over plain ssh


def read_fact(host: th.Host) -> HostFacts:
    """The deploy's MailHost fact, read over plain ssh (bench hosts carry no host data)."""
    out = host.ssh(MailHost().command(files=fact_files(validate({}, host.name)))).stdout
    return MailHost().process(out.splitlines())


def write_file(
    path: str, data: bytes, mode: str, before: str | None = None, after: str | None = None
) -> str:
    """The deploy's own write command (tasks/ops.py): inline, then renamed into place."""
    (command,) = ops._upload(data, path, mode, before, after)
    return command.get_raw_value()


def ssh_true(host: th.Host) -> Sample:
    sample, res = timed(host.ssh_argv("true"), hosts=[host])
    if res.returncode != 0:
        raise RuntimeError(f"ssh {host.name} true failed: {res.stderr}")
    sample.update(label="ssh_true", hosts=[host.name])
    return sample


# ---------------------------------------------------------------------------------------------
# remote-command counting from sshd's own log on each host


def sshd_events(host: th.Host) -> list[tuple[float, str]]:
    out = host.ssh("journalctl -t sshd -t sshd-session -o json --no-pager", timeout=60).stdout
    events = []
    for line in out.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        msg = rec.get("MESSAGE") or ""
        if isinstance(msg, list):  # journald gives non-UTF-8 messages as byte lists
            msg = bytes(msg).decode(errors="replace")
        if msg.startswith("Starting session: command"):
            kind = "exec"
        elif msg.startswith("Starting session: subsystem"):
            kind = "sftp"
        elif msg.startswith("Accepted publickey"):
            kind = "connect"
        else:
            continue
        events.append((int(rec["__REALTIME_TIMESTAMP"]) / 1e6, kind))
    return events


def attach_counts(samples: list[Sample], events: dict[str, list[tuple[float, str]]]) -> None:
    for s in samples:
        per_host = []
        for name in s["hosts"]:
            c = {"connect": 0, "exec": 0, "sftp": 0}
            for ts, kind in events.get(name, []):
                if s["t0"] <= ts <= s["t1"]:
                    c[kind] += 1
            per_host.append(c)
        s["connects"] = sum(c["connect"] for c in per_host)
        s["execs"] = sum(c["exec"] for c in per_host)
        s["sftp"] = sum(c["sftp"] for c in per_host)
        s["remote_commands"] = s["execs"] + s["sftp"]
        s["remote_commands_per_host"] = s["remote_commands"] / max(1, len(per_host))


def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None
