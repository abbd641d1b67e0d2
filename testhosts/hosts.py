"""Start, stop and list test hosts: systemd-nspawn containers in their own network namespaces.

Everything a host owns is named after it and its registry (state file, tmpfs root, netns,
cgroups, and the veth pair, made inside the netns) so that `down NAME` can clear a host that is
whole, half-made or left over from a crashed run without ever killing anything by process name,
nor anything another registry (MAILTLS_STATE_DIR of another checkout or tool) started: those
share ROOTS_DIR, the netns list and the cgroup folders, and may use the same host names.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from testhosts import image, variants

STATE_DIR = Path(os.environ.get("MAILTLS_STATE_DIR", "/run/mailtls-testhosts"))
# In the name of everything this registry's hosts own: what carries it is this registry's,
# whether or not a state file still says so. Host names have no "-", so TAG-NAME splits back.
TAG = hashlib.sha256(str(STATE_DIR.resolve()).encode()).hexdigest()[:8]
ROOTS_DIR = Path("/var/lib/mailtls-testhosts")
KEY = image.CACHE_DIR / "id_ed25519"
DOMAIN = "mailtls.test"
# Debian's snakeoil pair (ssl-cert), under a host's root: what a stock Postfix and Dovecot serve.
SNAKEOIL = ("etc/ssl/certs/ssl-cert-snakeoil.pem", "etc/ssl/private/ssl-cert-snakeoil.key")
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
CGROUP_ROOTS = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified")
MAX_HOSTS = 250


@dataclass
class Host:
    name: str
    suite: str
    index: int
    pid: int = 0
    variants: tuple[str, ...] = ()  # testhosts/variants.py shapes applied after boot
    # The registry's TAG, recorded before anything is made. "" in state files written before
    # tags: that host's resources have the bare name.
    tag: str = ""

    @property
    def owned(self) -> str:
        """What the host's resources are named: TAG-NAME."""
        return f"{self.tag}-{self.name}" if self.tag else self.name

    @property
    def address(self) -> str:
        return f"10.213.{self.index}.2"

    @property
    def controller_address(self) -> str:
        return f"10.213.{self.index}.1"

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{DOMAIN}"

    @property
    def netns(self) -> str:
        return f"mailtls-{self.owned}"

    @property
    def veth(self) -> str:
        return f"mtls{self.index}"

    @property
    def root(self) -> Path:
        return ROOTS_DIR / self.owned

    @property
    def cgroups(self) -> list[Path]:
        return [
            Path(root) / "testhosts" / self.owned for root in CGROUP_ROOTS if Path(root).is_dir()
        ]

    @property
    def log(self) -> Path:
        return STATE_DIR / f"{self.name}.log"

    def pyinfra_data(self) -> dict:
        """Host data for pyinfra's SSH connector (no known_hosts: hosts are re-created)."""
        return {
            "ssh_hostname": self.address,
            "ssh_user": "root",
            "ssh_key": str(KEY),
            "ssh_known_hosts_file": "/dev/null",
            "ssh_strict_host_key_checking": "off",
            "ssh_allow_agent": False,
            "ssh_look_for_keys": False,
        }

    def ssh_argv(self, *command: str) -> list[str]:
        return [
            "ssh",
            "-i",
            str(KEY),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=3",
            f"root@{self.address}",
            *command,
        ]

    def ssh(
        self, command: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run a shell command on the host as root; text output captured."""
        return subprocess.run(
            self.ssh_argv(command),
            check=check,
            timeout=timeout,
            text=True,
            capture_output=True,
            input=input,
        )


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


@contextlib.contextmanager
def _registry_lock():
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _address_lock():
    """Held by every registry from choosing a free address until its veth exists: registries
    see each other's hosts only by their links, so two `up`s of two registries at once would
    otherwise take the same 10.213.I."""
    ROOTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(ROOTS_DIR / ".address.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _state_file(name: str) -> Path:
    return STATE_DIR / f"{name}.json"


def _save(host: Host) -> None:
    """Whole or absent: a state file is how `down` finds what a host owns."""
    tmp = STATE_DIR / f".{host.name}.json.tmp"
    tmp.write_text(json.dumps(asdict(host)))
    tmp.rename(_state_file(host.name))


def _ours(name: str) -> Host:
    """Host `name` of this registry as its state file records it, else by this registry's names
    (a host whose state file is gone): never another registry's host of that name."""
    return _load(name) or Host(name=name, suite="", index=-1, tag=TAG)


def _load(name: str) -> Host | None:
    try:
        data = json.loads(_state_file(name).read_text())
        return Host(**data | {"variants": tuple(data.get("variants", ()))})
    except (FileNotFoundError, ValueError, TypeError):
        return None


def _known() -> list[Host]:
    hosts = [_load(p.stem) for p in sorted(STATE_DIR.glob("*.json"))] if STATE_DIR.exists() else []
    return sorted((h for h in hosts if h), key=lambda h: h.index)


def _ensure_key() -> None:
    """The controller's key for every test host, made once. Under a lock, and renamed into
    place public half first: on a fresh machine the xdist workers' first `up`s ask for it at
    the same moment (a second ssh-keygen on the same path fails, or replaces the key a host
    already trusts)."""
    if KEY.exists():
        return
    KEY.parent.mkdir(parents=True, exist_ok=True)
    with open(KEY.parent / "key.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        if KEY.exists():
            return
        new = KEY.with_name(f"{KEY.name}.{os.getpid()}.new")
        for leftover in (new, Path(f"{new}.pub")):
            leftover.unlink(missing_ok=True)
        _run(
            "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mailtls-testhosts", "-f", str(new)
        )
        os.replace(f"{new}.pub", KEY.with_suffix(".pub"))
        os.replace(new, KEY)


def _is_our_nspawn(pid: int, host: Host) -> bool:
    """True when pid is the nspawn of `host`: its name and root, which carries this registry's
    tag (guards against PID reuse, and against another registry's host of the same name)."""
    if pid <= 0:
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        bool(argv)
        and argv[0].endswith(b"systemd-nspawn")
        and host.name.encode() in argv
        and str(host.root).encode() in argv
    )


def _kill_cgroup_tree(path: Path) -> None:
    """SIGKILL every process left in a host's cgroups, then remove them deepest first."""
    if not path.is_dir():
        return
    for _ in range(50):
        pids = {int(p) for f in path.rglob("cgroup.procs") for p in f.read_text().split()}
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def _stop(host: Host) -> None:
    """Tear down everything `host` owns (its recorded PID, the resources named after it and its
    registry); safe on half-made or absent hosts."""
    pid = host.pid
    if _is_our_nspawn(pid, host):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # nspawn halts the container in order
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _is_our_nspawn(pid, host):
            time.sleep(0.1)
        if _is_our_nspawn(pid, host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for cg in host.cgroups:
        _kill_cgroup_tree(cg)
    if pid > 0:  # reap our own child if it was one
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
    if host.tag:  # the veth pair was made with its eth0 in the netns: what is in there is ours
        _run("ip", "-n", host.netns, "link", "del", "eth0", check=False)
    _run("ip", "netns", "del", host.netns, check=False)
    if not host.tag and host.index >= 0:  # made before tags: the veth was made outside the netns
        _run("ip", "link", "del", host.veth, check=False)
    root = host.root
    while os.path.ismount(root):
        if _run("umount", str(root), check=False).returncode != 0:
            _run("umount", "-l", str(root), check=False)
    with contextlib.suppress(OSError):
        root.rmdir()
    _state_file(host.name).unlink(missing_ok=True)


def _sweep_dead() -> None:
    """Clear hosts whose nspawn is gone (a crashed or killed run)."""
    for host in _known():
        if not _is_our_nspawn(host.pid, host):
            _stop(host)


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")


def _raise_inotify_limit(minimum: int = 1024) -> None:
    """Every booted systemd takes inotify instances from root's shared budget (default 128);
    a dozen hosts exhaust it and the next one fails to boot with "Too many open files"."""
    try:
        if int(INOTIFY_INSTANCES.read_text()) < minimum:
            INOTIFY_INSTANCES.write_text(str(minimum))
    except OSError:
        pass  # not ours to change here: hosts may still boot


def _free_index(taken: set[int]) -> int:
    links = _run("ip", "-o", "link", "show").stdout
    for i in range(MAX_HOSTS):
        if i not in taken and f"mtls{i}:" not in links and f"mtls{i}@" not in links:
            return i
    raise RuntimeError("no free test-host address")


def _write_identity(host: Host) -> None:
    etc = host.root / "etc"
    (etc / "hostname").write_text(host.fqdn + "\n")
    (etc / "hosts").write_text(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"{host.address}\t{host.fqdn} {host.name}\n"
        f"{host.controller_address}\tcontroller.{DOMAIN} controller\n"
    )
    ssh_dir = host.root / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(KEY.with_suffix(".pub").read_text())
    keys.chmod(0o600)
    _write_certificate(host)


def _write_certificate(host: Host) -> None:
    """The image's snakeoil certificate (Postfix's and Dovecot's stock one) names the machine it
    was built on: reissued here with its own key for this host's FQDN, as make-ssl-cert on the
    host would, so that the audit's name check (Postfix's myhostname) passes on a demo host."""
    cert, key = host.root / SNAKEOIL[0], host.root / SNAKEOIL[1]
    if not key.is_file():
        return
    new = cert.with_name(cert.name + ".new")
    # -days: make-ssl-cert's
    _run(
        "openssl", "req", "-new", "-x509", "-sha256", "-days", "3650", "-key", str(key),
        "-subj", f"/CN={host.fqdn}", "-addext", f"subjectAltName=DNS:{host.fqdn}",
        "-out", str(new),
    )  # fmt: skip
    new.chmod(0o644)
    os.replace(new, cert)


def _network(host: Host) -> None:
    ns, veth = host.netns, host.veth
    _run("ip", "netns", "add", ns)
    # Made with its peer in the netns, in one step: no moment where the pair exists outside it,
    # so `_stop` deletes it from inside the netns without asking whose mtlsN it is.
    _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _run("ip", "-n", ns, "addr", "add", f"{host.address}/30", "dev", "eth0")
    _run("ip", "-n", ns, "link", "set", "eth0", "up")
    _run("ip", "-n", ns, "link", "set", "lo", "up")
    _run("ip", "addr", "add", f"{host.controller_address}/30", "dev", veth)
    _run("ip", "link", "set", veth, "up")


def _boot(host: Host) -> int:
    cgroups = host.cgroups
    for cg in cgroups:
        cg.mkdir(parents=True, exist_ok=True)

    def enter_cgroups() -> None:  # runs in the child before exec: nspawn starts inside them
        os.setsid()
        for cg in cgroups:
            (cg / "cgroup.procs").write_text(str(os.getpid()))

    env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
    with open(host.log, "wb") as log:
        proc = subprocess.Popen(
            [
                "systemd-nspawn",
                "--boot",
                "--register=no",
                "--keep-unit",
                "--quiet",
                "-D",
                str(host.root),
                "-M",
                host.name,
                f"--network-namespace-path=/run/netns/{host.netns}",
                "--console=read-only",
                "--resolv-conf=off",
                "--timezone=off",
                "--link-journal=no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=enter_cgroups,
            env=env,
        )
    return proc.pid


def _wait_ready(host: Host, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not _is_our_nspawn(host.pid, host):
            raise RuntimeError(f"{host.name}: container exited; see {host.log}")
        try:
            res = host.ssh("systemctl is-system-running --wait", check=False, timeout=30)
        except subprocess.TimeoutExpired:
            continue
        last = (res.stdout + res.stderr).strip()
        if res.returncode == 0 or last in ("degraded",):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{host.name}: not ready after {timeout:.0f}s (last: {last!r})")


def up(names: list[str], suite: str | None = None, log=print) -> list[Host]:
    """Start hosts (restarting any of the same name) and return them once SSH answers.

    A name's suite is the part after ``:`` (``web1:trixie``), else `suite`, else the name
    without its trailing digits (``bookworm``, ``trixie2``). ``+VARIANT`` suffixes
    (``web1:trixie+legacy465+rsyslog``) shape the booted host (testhosts/variants.py).
    """
    plan, shapes = [], {}
    for spec in names:
        spec, shapes_of = variants.parse(spec)
        name, _, own_suite = spec.partition(":")
        shapes[name] = shapes_of
        if not NAME_RE.match(name):
            raise ValueError(f"bad host name {name!r}: lowercase letters and digits, 1-12 chars")
        s = own_suite or suite or re.sub(r"\d+$", "", name)
        if s not in image.SUITES:
            raise ValueError(
                f"host {name!r}: no suite given and {s!r} is not one of {sorted(image.SUITES)}"
            )
        plan.append((name, s))
    if len({n for n, _ in plan}) != len(plan):
        raise ValueError("duplicate host names")
    images = image.build_all({s for _, s in plan}, log=log)
    _ensure_key()
    _raise_inotify_limit()
    hosts = []
    with _registry_lock():
        _sweep_dead()
        for name, _ in plan:
            _stop(_ours(name))
        taken = {h.index for h in _known()}
        for name, s in plan:
            with _address_lock():
                host = Host(
                    name=name, suite=s, index=_free_index(taken), variants=shapes[name], tag=TAG
                )
                taken.add(host.index)
                _save(host)  # before anything is made: so `down` can clear a half-made host
                _network(host)
            host.root.mkdir(parents=True, exist_ok=True)
            _run("mount", "-t", "tmpfs", "-o", "size=1g,mode=0755", host.netns, str(host.root))
            _run(
                "tar",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
                "-I",
                "zstd",
                "-C",
                str(host.root),
                "-xf",
                str(images[s]),
            )
            _write_identity(host)
            host.pid = _boot(host)
            _save(host)
            hosts.append(host)
    try:
        for host in hosts:
            _wait_ready(host)
        with ThreadPoolExecutor(max_workers=len(hosts) or 1) as pool:
            list(pool.map(lambda h: variants.shape(h, h.variants), hosts))
    except Exception:
        down([h.name for h in hosts])
        raise
    return hosts


def down(names: list[str]) -> None:
    """Stop the named hosts of this registry; names that are not running are cleared of this
    registry's leftovers anyway."""
    with _registry_lock():
        for name in names:
            _stop(_ours(name))


def down_all() -> None:
    """Stop every host of this registry, and this registry's leftovers (named with its TAG)
    whose state file is gone. Other registries' hosts, and anything else in the shared netns
    list, ROOTS_DIR and cgroup folders, are never touched."""
    with _registry_lock():
        for host in _known():
            _stop(host)
        mine = f"{TAG}-"
        names = set()
        for ns in _run("ip", "netns", "list", check=False).stdout.split():
            if ns.startswith(f"mailtls-{mine}"):
                names.add(ns.removeprefix(f"mailtls-{mine}"))
        places = [ROOTS_DIR, *(Path(cgroot) / "testhosts" for cgroot in CGROUP_ROOTS)]
        for base in places:
            if base.is_dir():
                names.update(p.name.removeprefix(mine) for p in base.glob(f"{mine}*"))
        for name in sorted(names):
            _stop(Host(name=name, suite="", index=-1, tag=TAG))


def status() -> list[tuple[Host, bool]]:
    """Known hosts and whether each one's container is alive."""
    return [(h, _is_our_nspawn(h.pid, h)) for h in _known()]


def get(name: str) -> Host | None:
    host = _load(name)
    return host if host and _is_our_nspawn(host.pid, host) else None


DEMO_HOSTS = ("bookworm", "trixie")  # what `python -m testhosts up` starts with no names


def running(names: str | None = None) -> list[tuple[str, dict]]:
    """(name, pyinfra host data) of running test hosts, for inventory.py's default: those of
    `names` (comma-separated; each must run), else the demo hosts that run. Never every running
    host: other tests' and benchmarks' hosts are not the demo's to change. LookupError says
    what is missing."""
    wanted = {n.strip() for n in names.split(",") if n.strip()} if names else set(DEMO_HOSTS)
    found = [(h.name, h.pyinfra_data()) for h, alive in status() if alive and h.name in wanted]
    if names and len(found) != len(wanted):
        missing = wanted - {n for n, _ in found}
        raise LookupError(f"MAILTLS_TESTHOSTS: no running test host {', '.join(sorted(missing))}")
    if not found:
        raise LookupError(
            "no hosts: set MAILTLS_HOSTS or MAILTLS_HOSTS_FILE, or start local test hosts with "
            "`python -m testhosts up`"
        )
    return found
