"""The Ansible row (--ansible): the same deploy as an Ansible playbook (bench/ansible/), fed the
deploy's own rendered config, on hosts of its own that carry Debian's python3 for it."""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.floor import FLOORS
from bench.measure import (
    PREFIX,
    PYINFRA,
    ROOT,
    Sample,
    log,
    pyinfra_env,
    ratio,
    read_fact,
    results_table,
    timed,
)
from tasks import host_conf
from tasks.host_facts import HostFacts
from tasks.settings import validate
from testhosts import hosts as th
from testhosts import image

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
    the image; every Ansible-row host installs them from there (install_python). The
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
