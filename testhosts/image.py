"""Root filesystem images for the test hosts, built once with debootstrap and cached.

An image is a zstd tarball of a customised minbase Debian, stored outside the
checkout under CACHE_DIR and keyed by suite and by a hash of the recipe below,
so changing the recipe rebuilds it and a fresh machine builds it on first use.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

CACHE_DIR = Path(os.environ.get("MAILTLS_CACHE_DIR", "/var/cache/mailtls-testhosts"))

SUITES = {"bookworm": "12", "trixie": "13", "forky": "14"}
# What `testhosts build` (and so setup.sh) builds with no suite named: forky (Debian 14,
# testing) is built on demand, by `testhosts build forky` or the first host or test that needs it.
DEFAULT_SUITES = ("bookworm", "trixie")


@dataclass(frozen=True)
class Quirks:
    """How a suite's build differs from the plain recipe. Part of that suite's recipe hash only
    when it differs, so the suites without quirks keep their cache keys."""

    # debootstrap script used where /usr/share/debootstrap/scripts/SUITE does not exist (the
    # controller's debootstrap is older than the suite: Debian 12's has no forky script).
    script_fallback: str = ""
    # /proc mounted inside the root while CUSTOMISE runs: forky's postinsts (postfix's, run by
    # dpkg-reconfigure) call systemd-tmpfiles, which fails without it.
    mount_proc: bool = False


QUIRKS = {"forky": Quirks(script_fallback="sid", mount_proc=True)}
DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")

# What a host runs. No apt inside a host later (no route out): add here what tests need,
# including what a shaping variant (testhosts/variants.py) switches on. rsyslog is installed
# but masked: Debian 12/13 log to the journal only; the `rsyslog` variant unmasks it.
PACKAGES = [
    "openssh-server",
    "postfix",
    "dovecot-imapd",
    "dovecot-pop3d",
    "cron",
    "rsyslog",
    "ca-certificates",
    "openssl",
    "ssl-cert",
    "procps",
    "iproute2",
    "systemd-sysv",
    "dbus",
]

# Units that only make noise (or fail) in a container.
MASKED_UNITS = [
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "getty@tty1.service",
    "systemd-pstore.service",
]

# What `managesieve` (testhosts/variants.py) installs from VARIANT_DEBS: ManageSieve on 4190.
VARIANT_PACKAGES = ["dovecot-sieve", "dovecot-managesieved"]
VARIANT_DEBS = "/var/cache/mailtls-debs"

# A test mailbox user; the password is for tests only (these hosts never leave this machine).
TEST_USER = "mailtest"
TEST_PASSWORD = "mailtest-pw"

# Run inside the new root (chroot, own UTS namespace). The postfix postinst applies debconf
# answers only when main.cf is absent, and bakes the build machine's name into myhostname
# and the snakeoil certificate: undo both so each host's own FQDN is used.
CUSTOMISE = f"""
set -eu
export DEBIAN_FRONTEND=noninteractive
hostname build.mailtls.test
# Packages a variant installs (no mirror once booted: the hosts' network is the controller's
# only), downloaded with the lists debootstrap left, installed on none of the stock hosts.
mkdir -p {VARIANT_DEBS}
(cd {VARIANT_DEBS} && apt-get download -q {" ".join(VARIANT_PACKAGES)})
debconf-set-selections <<'SEL'
postfix postfix/main_mailer_type select Internet Site
postfix postfix/mailname string mailtls.test
postfix postfix/destinations string $myhostname, localhost.localdomain, localhost
SEL
echo mailtls.test > /etc/mailname
rm -f /etc/postfix/main.cf
dpkg-reconfigure -f noninteractive postfix
postconf -X myhostname
make-ssl-cert generate-default-snakeoil --force-overwrite
useradd -m -s /bin/bash {TEST_USER}
echo '{TEST_USER}:{TEST_PASSWORD}' | chpasswd
: > /etc/machine-id
mkdir -p /var/lib/dbus && ln -sf /etc/machine-id /var/lib/dbus/machine-id
: > /etc/resolv.conf
for u in {" ".join(MASKED_UNITS)}; do ln -sf /dev/null /etc/systemd/system/$u; done
rm -f /etc/systemd/system/syslog.service /etc/systemd/system/multi-user.target.wants/rsyslog.service
ln -sf /dev/null /etc/systemd/system/rsyslog.service
rm -f /var/log/mail.* /var/log/syslog /var/log/messages
rm -f /var/cache/apt/archives/*.deb /var/lib/apt/lists/*_* /etc/ssh/ssh_host_*
ssh-keygen -A -q
install -d -m 0700 /root/.ssh
"""

RECIPE_VERSION = "2"


def recipe_hash(suite: str) -> str:
    parts = [RECIPE_VERSION, suite, ",".join(PACKAGES), CUSTOMISE]
    quirks = QUIRKS.get(suite)
    if quirks and quirks != Quirks():
        parts.append(repr(quirks))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def image_path(suite: str) -> Path:
    return CACHE_DIR / f"{suite}-{recipe_hash(suite)}.tar.zst"


def debootstrap_script(suite: str) -> list[str]:
    """debootstrap's optional 4th argument: the fallback script of a suite this debootstrap
    has none for, else nothing (its own script)."""
    fallback = QUIRKS.get(suite, Quirks()).script_fallback
    if not fallback or (DEBOOTSTRAP_SCRIPTS / suite).exists():
        return []
    return [str(DEBOOTSTRAP_SCRIPTS / fallback)]


@contextlib.contextmanager
def _proc_mounted(root: Path, wanted: bool):
    """/proc mounted at ROOT/proc for the duration (when `wanted`), unmounted after, also when
    the body fails. A /proc that cannot be unmounted raises: the caller must then not delete
    the tree (shutil.rmtree would walk into the mounted /proc)."""
    if not wanted:
        yield
        return
    proc = root / "proc"
    proc.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    try:
        yield
    finally:
        if subprocess.run(["umount", str(proc)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(proc)], check=True)


def debian_mirror() -> str:
    """The Debian mirror the controller's own apt uses (MAILTLS_MIRROR overrides)."""
    if os.environ.get("MAILTLS_MIRROR"):
        return os.environ["MAILTLS_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file() or not path.name.endswith((".list", ".sources")):
            continue
        text = path.read_text(errors="replace")
        for url in re.findall(r"(?:^deb\s+(?:\[[^]]*\]\s+)?|^URIs:\s*)(\S+)", text, re.M):
            if url.rstrip("/").endswith("/debian"):
                return url
    raise RuntimeError("no Debian mirror in the controller's apt sources; set MAILTLS_MIRROR")


@contextlib.contextmanager
def _lock(name: str):
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def build(suite: str, log=print) -> Path:
    """Return the cached image for `suite`, building it first if the recipe changed."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; expected one of {sorted(SUITES)}")
    target = image_path(suite)
    with _lock(suite):
        if target.exists():
            os.utime(target)  # in use: see _prune
            return target
        log(f"building {suite} image (debootstrap, about a minute)...")
        work = Path(tempfile.mkdtemp(prefix=f"{suite}-", dir=CACHE_DIR))
        root = work / "root"
        try:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    suite,
                    str(root),
                    debian_mirror(),
                    *debootstrap_script(suite),
                ],
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            # The controller's resolver for CUSTOMISE's downloads (it empties the file later).
            resolv = root / "etc" / "resolv.conf"
            resolv.unlink(missing_ok=True)
            shutil.copyfile("/etc/resolv.conf", resolv)
            with _proc_mounted(root, QUIRKS.get(suite, Quirks()).mount_proc):
                subprocess.run(
                    ["unshare", "--uts", "chroot", str(root), "/bin/sh", "-c", CUSTOMISE],
                    check=True,
                    env=env,
                    stdout=subprocess.DEVNULL,
                )
            partial = work / "image.tar.zst"
            subprocess.run(
                [
                    "tar",
                    "--numeric-owner",
                    "--xattrs",
                    "--xattrs-include=*",
                    "-C",
                    str(root),
                    "-I",
                    "zstd -T0 -3",
                    "-cf",
                    str(partial),
                    ".",
                ],
                check=True,
            )
            os.replace(partial, target)
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or b"").decode(errors="replace")[-2000:]
            raise RuntimeError(f"building the {suite} image failed: {exc}\n{detail}") from exc
        finally:
            if os.path.ismount(root / "proc"):  # never walk into a mounted /proc
                raise RuntimeError(f"{root}/proc is still mounted: left {work} in place")
            shutil.rmtree(work, ignore_errors=True)
        _prune(suite, keep=target)
        log(f"built {target} ({target.stat().st_size // 2**20} MiB)")
        return target


STALE_AFTER = 2 * 86400


def _prune(suite: str, keep: Path) -> None:
    """Drop the suite's images of other recipes unused for two days. Not at once: checkouts of
    different revisions on one machine (branches, CI beside a session) would rebuild in turn."""
    for old in CACHE_DIR.glob(f"{suite}-*.tar.zst"):
        with contextlib.suppress(OSError):
            if old != keep and old.stat().st_mtime < time.time() - STALE_AFTER:
                old.unlink()


def build_all(suites, log=print) -> dict[str, Path]:
    """Build the images of several suites in parallel (debootstrap is mostly network-bound)."""
    suites = sorted(set(suites))
    with ThreadPoolExecutor(max_workers=len(suites) or 1) as pool:
        return dict(zip(suites, pool.map(lambda s: build(s, log), suites), strict=True))
