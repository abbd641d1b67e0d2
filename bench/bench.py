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
import atexit
import fcntl
import json
import os
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks import host_conf, ops  # noqa: E402
from tasks.assets import sha256  # noqa: E402
from tasks.dovecot import conf as dovecot_conf  # noqa: E402
from tasks.facts import MailHost  # noqa: E402
from tasks.host_facts import HostFacts
from tasks.mail_tls import fact_files  # noqa: E402
from tasks.postfix import apply as postfix_apply  # noqa: E402
from tasks.safety import verify as verify_conf  # noqa: E402
from tasks.scripts import script  # noqa: E402
from tasks.settings import validate  # noqa: E402
from testhosts import hosts as th  # noqa: E402
from testhosts import image  # noqa: E402

PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
RESULTS = ROOT / "bench" / "results.json"
SUITES = ("bookworm", "trixie")
SSHD_VERBOSE = (
    "echo 'LogLevel VERBOSE' > /etc/ssh/sshd_config.d/zz-mailtls-bench.conf && systemctl reload ssh"
)
# fresh converge vs the floor with the deploy's checks (floor_apply), no-op vs `ssh true`, N hosts
# vs the CPU-bound minimum of the same run.
TARGETS = {"fresh_vs_floor": 1.5, "noop_vs_ssh": 2.5, "n_hosts_vs_cpu_bound": 1.15}
# Parallel runs: "fresh10", "noop30", "fresh10nw" (pyinfra --no-wait), ...
PARALLEL_KEY = re.compile(r"^(fresh|noop)(\d+)(nw)?$")
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
    """CPU seconds used so far by every process of test host `name` (its cgroup's cpu.stat)."""
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
    names = [h.name for h in hosts or []]
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
# the floor: the deploy's writes as one shell script in one SSH session


def read_fact(host: th.Host) -> HostFacts:
    """The deploy's MailHost fact, read over plain ssh (bench hosts carry no host data)."""
    out = host.ssh(MailHost().command(files=fact_files(validate({}, host.name)))).stdout
    return MailHost().process(out.splitlines())


def _write_file(
    path: str, data: bytes, mode: str, before: str | None = None, after: str | None = None
) -> str:
    """The deploy's own write command (tasks/ops.py): inline, then renamed into place."""
    (command,) = ops._upload(data, path, mode, before, after)
    return command.get_raw_value()


# Each floor variant, with the letter of its hosts' names (after PREFIX).
FLOORS = {"floor": "f", "floor_checked": "c", "floor_apply": "a"}


def floor_script(host: th.Host, info: HostFacts, kind: str) -> str:
    """The shell script of the deploy's writes for this host, rendered by the deploy's own pure
    function (tasks.host_conf.render: same settings, same policy, same bytes) and diffed against
    the fact as tasks/ops.py does.

    kind: "floor" (writes, reloads), "floor_checked" (writes, `postfix check`, `doveconf -x -n`,
    reloads) or "floor_apply" (writes inside the deploy's safety net: mailtls-apply begin/commit,
    which checks, reloads, reads back and probes)."""
    safety_net = kind == "floor_apply"
    settings = validate({}, host.name)  # bench hosts carry no host data: the defaults
    conf = host_conf.render(settings, info)
    if conf.policy.offers_dhe:
        raise RuntimeError("the floor does not render DH files yet (default profile has no DHE)")
    if conf.dovecot is None:
        raise RuntimeError(f"{host.name}: the floor expects Dovecot (stock test hosts have it)")
    if conf.postfix is None or conf.verify is None:
        raise RuntimeError(f"{host.name}: the deploy would refuse this host: {conf.refusals}")
    apply = f"{ops.APPLY}"
    lines = ["set -e"]
    apply_script = script("mailtls-apply")
    if info.files.get(ops.APPLY) != sha256(apply_script):
        lines.append(_write_file(ops.APPLY, apply_script, "0755"))
    # What the commit verifies (read-back, negative probes): the deploy writes it in any case.
    verify = conf.verify.encode()
    if info.files.get(verify_conf.VERIFY_PATH) != sha256(verify):
        lines.append(_write_file(verify_conf.VERIFY_PATH, verify, "0644"))
    todo = conf.postfix.missing_from(info.postconf, info.services, info.master_params)
    if safety_net:
        lines.append(f"{apply} begin postfix {' '.join(ops.POSTFIX_FILES)}")
    # The least postconf can do, as the deploy does it: one run per kind of change.
    lines += postfix_apply.postconf_commands(todo)
    if safety_net:
        lines.append(f"{apply} written postfix {' '.join(ops.POSTFIX_FILES)}")
    else:  # what `written` does for main.cf: date it 2 s back, or Postfix waits for it to settle
        lines.append(f'touch -m -d "@$(($(date +%s) - 2))" {ops.POSTFIX_FILES[0]}')
    text = conf.dovecot.encode()
    begin_dovecot = f"{apply} begin dovecot {dovecot_conf.CONF_PATH}" if safety_net else None
    written_dovecot = f"{apply} written dovecot {dovecot_conf.CONF_PATH}" if safety_net else None
    lines.append(_write_file(dovecot_conf.CONF_PATH, text, "0644", begin_dovecot, written_dovecot))
    if safety_net:
        lines.append(f"{apply} commit postfix dovecot")
    else:
        if kind == "floor_checked":
            lines += ["postfix check", "doveconf -x -n >/dev/null"]
        lines += ["postfix reload >/dev/null 2>&1", "doveadm reload"]
    return "\n".join(lines) + "\n"


def ssh_true(host: th.Host) -> Sample:
    sample, res = timed(host.ssh_argv("true"), hosts=[host])
    if res.returncode != 0:
        raise RuntimeError(f"ssh {host.name} true failed: {res.stderr}")
    sample.update(label="ssh_true", hosts=[host.name])
    return sample


def run_floor(host: th.Host, script: str, label: str) -> Sample:
    sample, res = timed(host.ssh_argv("sh -s"), input=script, hosts=[host])
    if res.returncode != 0:
        raise RuntimeError(f"{label}: floor script failed:\n{res.stdout}\n{res.stderr}")
    sample.update(label=label, hosts=[host.name])
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


# ---------------------------------------------------------------------------------------------
# DH rotation (once the DH task has landed)

DH_PATHS = ("tasks/dh.py", "files/mailtls-dh-rotate")
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
    cmds = [_write_file(ROTATE_BIN, data, "0755")]
    for bits in (3072, 4096):
        cmds.append(
            _write_file(
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


# ---------------------------------------------------------------------------------------------
# the Ansible row (--ansible): the same deploy as an Ansible playbook (bench/ansible/), fed the
# deploy's own rendered config, on hosts of its own that carry Debian's python3 for it

ANSIBLE_DIR = ROOT / "bench" / "ansible"
ANSIBLE_REQUIREMENTS = ROOT / "bench" / "requirements-ansible.txt"
# Where bench/requirements-ansible.txt is installed (made on first use); not the project's venv.
ANSIBLE_VENV = Path(os.environ.get("MAILTLS_ANSIBLE_VENV") or ROOT / "bench" / ".venv-ansible")
# Debian's python3 for the Ansible row's hosts, per cached test image (see python_debs).
PYTHON_DEBS = image.CACHE_DIR / "ansible-python3"
ANSIBLE_TARGET = 0.25  # pyinfra's fresh converge <= 0.25 x Ansible's
CGROUP_V2 = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
_RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE
)


def ensure_ansible() -> Path:
    """ansible-playbook of ANSIBLE_VENV, installing bench/requirements-ansible.txt there first if
    it is not (PyPI, once); the project's own venv is left as it is."""
    playbook = ANSIBLE_VENV / "bin" / "ansible-playbook"
    if not playbook.exists():
        log(f"installing {ANSIBLE_REQUIREMENTS.name} into {ANSIBLE_VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        subprocess.run(
            [str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q", "-r", str(ANSIBLE_REQUIREMENTS)],
            check=True,
        )
    return playbook


def python_debs(suite: str) -> list[Path]:
    """The .debs of Debian's `python3` (no recommends) missing from the suite's cached test image.

    Ansible runs its modules with Python on the host; the test images have none (pyinfra needs
    none) and the hosts have no route out. So, once per image: unpack it in a scratch directory
    on the controller and let its own apt (its sources, keyring and dpkg status) download what
    `python3` needs, in a chroot that has the controller's network. The .debs are kept beside
    the image (~6 MB); every Ansible-row host installs them from there (install_python). The
    images every test uses stay as they are.
    """
    img = image.build(suite, log=log)
    cache = PYTHON_DEBS / img.name.removesuffix(".tar.zst")
    PYTHON_DEBS.mkdir(parents=True, exist_ok=True)
    with open(PYTHON_DEBS / f"{suite}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cache / "complete").exists():
            log(f"downloading python3 for the {suite} image's Ansible hosts (once)")
            scratch = Path(tempfile.mkdtemp(prefix=f"{suite}-", dir=PYTHON_DEBS))
            try:
                root = scratch / "root"
                root.mkdir()
                subprocess.run(
                    ["tar", "--numeric-owner", "-I", "zstd", "-C", str(root), "-xf", str(img)],
                    check=True,
                )
                (root / "etc" / "resolv.conf").write_bytes(Path("/etc/resolv.conf").read_bytes())
                subprocess.run(
                    [
                        "chroot",
                        str(root),
                        "/bin/sh",
                        "-c",
                        "apt-get -qq update && apt-get install -qq -y --download-only "
                        "--no-install-recommends python3 >/dev/null",
                    ],
                    check=True,
                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
                )
                shutil.rmtree(cache, ignore_errors=True)
                cache.mkdir()
                for deb in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
                    shutil.copy2(deb, cache / deb.name)
                (cache / "complete").touch()
            finally:
                subprocess.run(["rm", "-rf", "--one-file-system", str(scratch)], check=False)
    return sorted(cache.glob("*.deb"))


def install_python(host: th.Host, debs: list[Path]) -> None:
    """Install the .debs on a running host (untimed: before the round's runs)."""
    inbox = host.root / "root" / "mailtls-python3"
    inbox.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        shutil.copy2(deb, inbox / deb.name)
    # python3 pre-depends on python3-minimal, which pre-depends on python3.X-minimal: in that order.
    script = (
        "set -e; cd /root/mailtls-python3; export DEBIAN_FRONTEND=noninteractive\n"
        "dpkg -i $(ls *.deb | grep -v '^python3\\(-minimal\\)\\{0,1\\}_')\n"
        "dpkg -i python3-minimal_*.deb\n"
        "dpkg -i python3_*.deb\n"
        "cd / && rm -rf /root/mailtls-python3 && python3 -c 'import json'\n"
    )
    host.ssh("sh -s >/dev/null", input=script, timeout=300)


def ansible_inputs(host: th.Host, info: HostFacts, workdir: Path) -> Path:
    """The playbook's inputs for one host, from the deploy's own pure renderer (same settings,
    same bytes as the floor and the deploy): an inventory of that host, its host_vars, its
    files. Returns the inventory."""
    conf = host_conf.render(validate({}, host.name), info)
    if conf.postfix is None or conf.verify is None or conf.dovecot is None:
        raise RuntimeError(f"{host.name}: the deploy would refuse this host: {conf.refusals}")
    if conf.policy.offers_dhe:
        raise RuntimeError("the playbook does not write DH files (default profile has no DHE)")
    pf = conf.postfix
    inventory = workdir / host.name / "inventory.ini"
    files = inventory.parent / "files" / host.name
    files.mkdir(parents=True)
    (files / "verify.conf").write_text(conf.verify)
    (files / "99-mailtls.conf").write_text(conf.dovecot)
    (inventory.parent / "host_vars").mkdir()

    def line(k: str, v: str) -> str:  # as `postconf -n` / `postconf -P` print it
        return f"{k} = {v}" if v else f"{k} ="

    host_vars = {
        "mailtls_main": [line(k, v) for k, v in pf.main.items()],
        "mailtls_remove": list(pf.remove),
        "mailtls_services": {k: f"{k}={v}" for k, v in pf.services.items()},
        "mailtls_params": [line(k, v) for k, v in pf.params.items()],
        "mailtls_unset": list(pf.unset),
    }
    (inventory.parent / "host_vars" / f"{host.name}.json").write_text(json.dumps(host_vars))
    d = host.pyinfra_data()
    inventory.write_text(
        f"{host.name} ansible_host={d['ssh_hostname']} ansible_user={d['ssh_user']} "
        f"ansible_ssh_private_key_file={d['ssh_key']} "
        "ansible_ssh_common_args='-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no'\n"
    )
    return inventory


def _cgroup_usage(cg: Path) -> float:
    for line in (cg / "cpu.stat").read_text().splitlines():
        if line.startswith("usage_usec "):
            return int(line.split()[1]) / 1e6
    raise RuntimeError(f"no usage_usec in {cg}/cpu.stat")


def run_ansible(host: th.Host, inventory: Path, label: str, expect_noop: bool) -> Sample:
    """ansible-playbook on one host, as a new run (its own ControlMaster connection, like
    pyinfra's new connection per run). Controller CPU: every process of the run, the ControlMaster
    ssh that outlives ansible-playbook included (a cgroup of its own; rusage misses that one)."""
    playbook = ensure_ansible()
    base = next((Path(p) for p in CGROUP_V2 if Path(p, "cgroup.procs").exists()), None)
    if base is None:
        raise RuntimeError("no cgroup v2 hierarchy for the Ansible run's controller CPU")
    cg = base / f"mailtls-bench-{PREFIX}-ansible"
    if not cg.exists():
        cg.mkdir()
        atexit.register(lambda: cg.rmdir() if not (cg / "cgroup.procs").read_text() else None)
    run_dir = Path(tempfile.mkdtemp(prefix="ansible-", dir=inventory.parent))
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        ANSIBLE_HOME=str(run_dir),
        ANSIBLE_LOCAL_TEMP=str(run_dir / "tmp"),
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(run_dir / "cp"),
        ANSIBLE_NOCOLOR="1",
    )
    cpu0 = _cgroup_usage(cg)
    argv = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cg)]
    argv += [str(playbook), "-i", str(inventory), str(ANSIBLE_DIR / "mailtls.yml")]
    try:
        sample, res = timed(argv, env=env, hosts=[host])
        sample["local_cpu_rusage"] = sample["local_cpu"]
        sample["local_cpu"] = _cgroup_usage(cg) - cpu0
    finally:
        for sock in (run_dir / "cp").glob("*"):  # this run's ControlMaster: ours to end
            subprocess.run(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True
            )
        deadline = time.monotonic() + 10
        while (cg / "cgroup.procs").read_text().split() and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(run_dir, ignore_errors=True)
    recap = {m[0]: tuple(map(int, m[1:])) for m in _RECAP.findall(res.stdout)}
    if res.returncode != 0 or host.name not in recap:
        raise RuntimeError(
            f"{label}: ansible-playbook failed ({res.returncode}):\n{res.stdout[-6000:]}{res.stderr[-3000:]}"
        )
    ok, changed, unreachable, failed = recap[host.name]
    sample.update(label=label, hosts=[host.name], changes=changed, errors=failed + unreachable)
    if expect_noop:
        sample["zero_changes"] = changed == 0 and failed == 0 and unreachable == 0
        if not sample["zero_changes"]:
            raise RuntimeError(
                f"{label}: the Ansible re-run changed something:\n{res.stdout[-6000:]}"
            )
    return sample


def ansible_prepare(suites: list[str], by: dict[str, th.Host]) -> dict[str, tuple[th.Host, Path]]:
    """Per suite: the round's Ansible-row host, python3 installed, and its playbook inputs
    rendered from its stock MailHost fact (untimed, as the floor's script is)."""
    ensure_ansible()
    workdir = Path(tempfile.mkdtemp(prefix="mailtls-bench-ansible-"))
    atexit.register(shutil.rmtree, workdir, True)
    out = {}
    for s in suites:
        h = by[f"{PREFIX}n{s[0]}"]
        install_python(h, python_debs(s))
        out[s] = (h, ansible_inputs(h, read_fact(h), workdir))
    return out


def ansible_summary(w: dict, rounds: list[dict], suites: list[str]) -> dict:
    """Ratios against the playbook (pyinfra / Ansible, target <= ANSIBLE_TARGET for the fresh
    converge) and whether the deploy found nothing to do after it, in every round."""
    ratios = {}
    for s in suites:
        if w.get(f"ansible_fresh/{s}"):
            ratios[f"fresh1_vs_ansible_fresh/{s}"] = ratio(
                w.get(f"fresh1/{s}"), w[f"ansible_fresh/{s}"]
            )
            ratios[f"noop1_vs_ansible_noop/{s}"] = ratio(
                w.get(f"noop1/{s}"), w.get(f"ansible_noop/{s}")
            )
            # What any tool doing this work needs at least: the floor scripts (one ssh).
            for floor in FLOORS:
                ratios[f"{floor}_vs_ansible_fresh/{s}"] = ratio(
                    w.get(f"{floor}/{s}"), w[f"ansible_fresh/{s}"]
                )
    matches: dict[str, bool] = {}
    for rd in rounds:
        for k, ok in rd.get("ansible_matches_deploy", {}).items():
            matches[k] = matches.get(k, True) and ok
    return (
        {
            "ansible_ratios": ratios,
            "ansible_matches_deploy": matches,
            "ansible_target": ANSIBLE_TARGET,
        }
        if matches
        else {}
    )


def ansible_version() -> dict:
    """What ran the Ansible row: ansible-core's version, the playbook's settings."""
    out = subprocess.run(
        [str(ensure_ansible()), "--version"], capture_output=True, text=True
    ).stdout
    return {
        "version": out.splitlines()[0] if out else None,
        "playbook": "bench/ansible/mailtls.yml",
        "config": (ANSIBLE_DIR / "ansible.cfg").read_text(),
        "hosts_python": "Debian's python3 (no recommends), installed per round, untimed",
    }


def ansible_matches_deploy(host: th.Host) -> bool:
    """After the playbook, the real deploy finds nothing to do: both did the same."""
    _, res = timed([PYINFRA, "-y", "inventory.py", "deploy.py"], env=pyinfra_env([host]))
    return res.returncode == 0 and results_table(res.stderr)["success"] == 0


# ---------------------------------------------------------------------------------------------
# the run


def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def rotate(items: list, n: int) -> list:
    n %= max(1, len(items))
    return items[n:] + items[:n]


HOST_MEMORY = 300 << 20  # a booted stock host: ~245 MiB of tmpfs root plus its processes


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


def summarise(rounds: list[dict], suites: list[str]) -> dict:
    keys = sorted({k for rd in rounds for k in rd["samples"]})
    fig: dict[str, dict] = {}
    for k in keys:
        samples = [x for rd in rounds for x in rd["samples"].get(k, [])]
        entry = {
            "n": len(samples),
            "wall_median": med([x["wall"] for x in samples]),
            "wall_min": min(x["wall"] for x in samples),
            "wall_max": max(x["wall"] for x in samples),
            "local_cpu_median": med([x["local_cpu"] for x in samples]),
            "host_cpu_median": med([x.get("host_cpu") for x in samples]),
            "walls": [round(x["wall"], 3) for x in samples],
        }
        if any("remote_commands" in x for x in samples):
            for f in ("remote_commands", "execs", "sftp", "connects", "remote_commands_per_host"):
                entry[f + "_median"] = med([x.get(f) for x in samples])
        if any("changes" in x for x in samples):
            entry["changes_median"] = med([x["changes"] for x in samples])
        if PARALLEL_KEY.match(k):
            # The hosts and the controller share this machine's cores: the run cannot be shorter
            # than all the CPU it used spread over every core.
            totals = [
                x["host_cpu"] + x["local_cpu"] for x in samples if x.get("host_cpu") is not None
            ]
            entry["cpu_total_median"] = med(totals)
            entry["cpu_bound_median"] = med([t / (os.cpu_count() or 1) for t in totals])
        fig[k] = entry
    w = {k: v["wall_median"] for k, v in fig.items()}
    ratios = {}
    for s in suites:
        for kind in FLOORS:
            ratios[f"fresh1_vs_{kind}/{s}"] = ratio(w.get(f"fresh1/{s}"), w.get(f"{kind}/{s}"))
        for kind in ("floor_checked", "floor_apply"):
            ratios[f"{kind}_vs_floor/{s}"] = ratio(w.get(f"{kind}/{s}"), w.get(f"floor/{s}"))
        ratios[f"noop1_vs_ssh_true/{s}"] = ratio(w.get(f"noop1/{s}"), w.get(f"ssh_true/{s}"))
        ratios[f"pyinfra_version_share_of_noop1/{s}"] = ratio(
            w.get("pyinfra_version"), w.get(f"noop1/{s}")
        )
    for k in fig:
        m = PARALLEL_KEY.match(k)
        if not m:
            continue
        # against the slower suite's 1-host figure
        one = max((w.get(f"{m.group(1)}1/{s}") or 0) for s in suites) or None
        bound = fig[k].get("cpu_bound_median")
        # A tighter bound: pyinfra's start-up (imports, no host yet) runs on one core alone, and
        # the controller is one process: max(controller CPU, start-up + the rest / cores).
        start = fig.get("pyinfra_version", {}).get("local_cpu_median")
        total, ctl = fig[k].get("cpu_total_median"), fig[k].get("local_cpu_median")
        if start is not None and total is not None and ctl is not None:
            cores = os.cpu_count() or 1
            fig[k]["cpu_bound_serial_median"] = max(ctl, start + (total - start) / cores)
            ratios[f"{k}_vs_cpu_bound_serial"] = ratio(w.get(k), fig[k]["cpu_bound_serial_median"])
        ratios[f"{k}_vs_1"] = ratio(w.get(k), one)
        ratios[f"{k}_cpu_bound_vs_1"] = ratio(bound, one)
        ratios[f"{k}_vs_cpu_bound"] = ratio(w.get(k), bound)
    loads = [x["load"] for rd in rounds for v in rd["samples"].values() for x in v] or [loadavg()]
    matches: dict[str, bool] = {}
    for rd in rounds:
        for k, ok in rd["floor_matches_deploy"].items():
            matches[k] = matches.get(k, True) and ok
    return {
        "figures": fig,
        "ratios": ratios,
        "floor_matches_deploy": matches,
        **ansible_summary(w, rounds, suites),
        "load": {"min": min(loads), "median": med(loads), "max": max(loads)},
    }


def fmt(v, unit="s") -> str:
    if v is None:
        return "-"
    return f"{v:.2f} {unit}".strip() if unit else f"{v:.2f}"


def table(summary: dict, suites: list[str], dh: dict) -> str:
    """Markdown table: median wall time, remote commands, CPU on hosts and controller, ratios."""
    f, r = summary["figures"], summary["ratios"]
    head = (
        "Figure",
        "Wall (median)",
        "Remote commands",
        "Host CPU",
        "Controller CPU",
        "Ratio",
        "Target",
    )
    rows = [head]

    def cmds(k):
        e = f.get(k, {})
        if e.get("remote_commands_median") is None:
            return ""
        text = (
            f"{e['remote_commands_median']:.0f} ({e['connects_median']:.0f} conn, "
            f"{e['sftp_median']:.0f} sftp)"
        )
        if PARALLEL_KEY.match(k):
            text += f", {e['remote_commands_per_host_median']:.0f}/host"
        return text

    def row(label, k, ratio_text="", target=""):
        e = f.get(k)
        if not e:
            return
        rows.append(
            (
                label,
                fmt(e["wall_median"]),
                cmds(k),
                fmt(e.get("host_cpu_median")),
                fmt(e.get("local_cpu_median")),
                ratio_text,
                target,
            )
        )

    row("`pyinfra --version` (start-up only)", "pyinfra_version")
    for s in suites:
        row(f"`ssh host true` [{s}]", f"ssh_true/{s}")
        row(f"floor: 1 ssh, writes + reloads [{s}]", f"floor/{s}")
        row(
            f"floor: 1 ssh, writes + `postfix check`, `doveconf -x -n` + reloads [{s}]",
            f"floor_checked/{s}",
            fmt(r.get(f"floor_checked_vs_floor/{s}"), "x floor"),
        )
        row(
            f"floor: 1 ssh, writes in mailtls-apply (checks, reloads, read-back, probes) [{s}]",
            f"floor_apply/{s}",
            fmt(r.get(f"floor_apply_vs_floor/{s}"), "x floor"),
        )
        row(
            f"fresh converge, 1 host [{s}]",
            f"fresh1/{s}",
            f"{fmt(r.get(f'fresh1_vs_floor_apply/{s}'), 'x floor_apply')}, "
            f"{fmt(r.get(f'fresh1_vs_floor_checked/{s}'), 'x floor_checked')}",
            f"<= {TARGETS['fresh_vs_floor']}x floor_apply",
        )
        row(
            f"no-op re-run, 1 host [{s}]",
            f"noop1/{s}",
            fmt(r.get(f"noop1_vs_ssh_true/{s}"), "x ssh"),
            f"<= {TARGETS['noop_vs_ssh']}x ssh",
        )
    for s in suites:  # --ansible: the same deploy as an Ansible playbook (bench/ansible/)
        a = summary.get("ansible_ratios", {})
        row(
            f"Ansible playbook: fresh converge [{s}]",
            f"ansible_fresh/{s}",
            f"pyinfra = {fmt(a.get(f'fresh1_vs_ansible_fresh/{s}'), 'x this')}",
            f"pyinfra <= {ANSIBLE_TARGET}x",
        )
        row(
            f"Ansible playbook: no-op re-run [{s}]",
            f"ansible_noop/{s}",
            f"pyinfra = {fmt(a.get(f'noop1_vs_ansible_noop/{s}'), 'x this')}",
        )
    for k in sorted(f, key=lambda k: (len(k), k)):
        m = PARALLEL_KEY.match(k)
        if not m:
            continue
        what = "fresh converge" if m.group(1) == "fresh" else "no-op re-run"
        how = ", pyinfra --no-wait" if m.group(3) else ""
        bound = f[k].get("cpu_bound_median")
        serial = f[k].get("cpu_bound_serial_median")
        row(
            f"{what}, {m.group(2)} hosts{how} (CPU-bound minimum: {fmt(bound)}; "
            f"with serial start-up: {fmt(serial)})",
            k,
            f"{fmt(r.get(f'{k}_vs_cpu_bound'), 'x CPU-bound min')} "
            f"({fmt(r.get(f'{k}_vs_cpu_bound_serial'), 'x')} the serial one), "
            f"{fmt(r.get(f'{k}_vs_1'), 'x 1 host')}",
            f"<= {TARGETS['n_hosts_vs_cpu_bound']}x CPU-bound min",
        )
    if dh.get("status"):
        rows.append(("DH rotation", dh["status"], "", "", "", "", ""))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = [
        "| " + " | ".join(str(c).ljust(widths[i]) for i, c in enumerate(row)) + " |" for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    if len(rows) == 1:  # no rounds (--runs 0)
        lines = []
    if dh.get("cases"):
        lines += [
            "",
            _md(
                [("DH case", "Host CPU (median)", "CPU range", "Wall (median)", "Runs")]
                + [
                    (
                        f"{c['source']} {c['bits']} [{c['suite']}]: "
                        + (
                            "rotation"
                            if c["source"] == "generated"
                            else "check only (fixed group, nothing rotates)"
                        ),
                        fmt(c["cpu_median"])
                        if c["cpu_median"] is not None
                        else c.get("note") or "-",
                        f"{c['cpu_min']:.1f}-{c['cpu_max']:.1f} s"
                        if c.get("cpu_min") is not None and c["n"] > 1
                        else "",
                        fmt(c.get("wall_median")),
                        str(c["n"]),
                    )
                    for c in dh["cases"]
                ]
            ),
        ]
    return "\n".join(lines)


def _md(rows: list[tuple]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(str(c).ljust(widths[i]) for i, c in enumerate(row)) + " |" for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


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


def reexec_at(rev: str) -> int:
    """Export `rev` to a temporary directory, copy this script into it, and run it there."""
    import tempfile

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
    (tree / "bench" / "bench.py").write_bytes(Path(__file__).read_bytes())
    # Byte-compile the project, as pip does for pyinfra and every other installed package: a
    # user's runs reuse the bytecode, while with PYTHONDONTWRITEBYTECODE set (as in some
    # shells here) every run would compile tasks/ and testhosts/ again (~11 ms).
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
