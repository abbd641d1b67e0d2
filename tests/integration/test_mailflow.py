"""Mail flow under change: while the deploy switches profiles back and forth, the DH parameters
are rotated and both daemons reload, a load generator on the controller sends mail over SMTP with
STARTTLS to a local mailbox on the test host. Every message must arrive exactly once."""

from __future__ import annotations

import smtplib
import ssl
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from conftest import run_pyinfra
from tasks.dh import plan as dh

MIN_MESSAGES = 500
MAX_MESSAGES = 2500  # bound on the load, whatever happens (never reached in ~250 s)
MAX_SECONDS = 600
THREADS = 4
PAUSE = 0.8  # per thread between messages: ~4.5 messages/s per host
ATTEMPTS = 30  # per message, for temporary failures (4xx, connection refused, reset)
PROFILES = (
    ["tls_profile=intermediate"],
    ["tls_profile=modern"],
    ["tls_profile=legacy-dhe", "dh_source=generated", "dh_bits=2048"],
)
# Two profile cycles; the rotation runs while legacy-dhe (generated parameters) is in place.
ROTATIONS_PER_CYCLE = (3, 2)
ROTATIONS = sum(ROTATIONS_PER_CYCLE)
ROTATE = dh.ROTATE_BIN
FORWARD_SECRET_TLS12 = ("ECDHE-", "DHE-")


@dataclass
class Load:
    """A bounded SMTP load generator: THREADS senders, one connection + STARTTLS per message."""

    address: str
    rcpt: str
    tag: str
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_id: int = 0
    sent: int = 0
    failed: list = field(default_factory=list)
    retries: Counter = field(default_factory=Counter)
    sessions: Counter = field(default_factory=Counter)
    not_forward_secret: list = field(default_factory=list)

    def _claim(self) -> int | None:
        with self.lock:
            if self.next_id >= MAX_MESSAGES or (
                self.stop.is_set() and self.next_id >= MIN_MESSAGES
            ):
                return None
            self.next_id += 1
            return self.next_id

    def _send_one(self, n: int, ctx: ssl.SSLContext) -> None:
        msg = (
            f"From: load@controller.mailtls.test\r\nTo: {self.rcpt}\r\n"
            f"Subject: mailflow {self.tag} {n:05d}\r\nMessage-ID: <{self.tag}.{n}@controller.mailtls.test>\r\n"
            f"\r\nmessage {n} of the mail flow test\r\n"
        )
        with smtplib.SMTP(self.address, 25, timeout=30) as smtp:
            smtp.ehlo("controller.mailtls.test")
            smtp.starttls(context=ctx)  # SMTPNotSupportedError if STARTTLS is not offered
            assert isinstance(smtp.sock, ssl.SSLSocket)
            version, cipher = smtp.sock.version(), (smtp.sock.cipher() or ("none",))[0]
            smtp.ehlo("controller.mailtls.test")
            smtp.sendmail("load@controller.mailtls.test", [self.rcpt], msg)
        with self.lock:
            self.sessions[version] += 1
            self.sessions[cipher] += 1
            if version != "TLSv1.3" and not cipher.startswith(FORWARD_SECRET_TLS12):
                self.not_forward_secret.append((n, version, cipher))

    def worker(self, tls12_only: bool = False) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        if tls12_only:  # an older sender: its suite must be forward secret too
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        while (n := self._claim()) is not None:
            for attempt in range(ATTEMPTS):
                try:
                    self._send_one(n, ctx)
                    with self.lock:
                        self.sent += 1
                    break
                except smtplib.SMTPResponseException as exc:
                    if not 400 <= exc.smtp_code < 500:  # a permanent refusal: lost mail
                        with self.lock:
                            self.failed.append((n, f"{exc.smtp_code} {exc.smtp_error!r}"))
                        break
                    reason = f"{exc.smtp_code}"
                except smtplib.SMTPRecipientsRefused as exc:
                    codes = {code for code, _ in exc.recipients.values()}
                    if any(not 400 <= c < 500 for c in codes):
                        with self.lock:
                            self.failed.append((n, repr(exc.recipients)))
                        break
                    reason = f"{min(codes)}"
                except smtplib.SMTPNotSupportedError:
                    reason = "no STARTTLS"  # never acceptable: a real sender would go plaintext
                except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
                    reason = type(exc).__name__
                with self.lock:
                    self.retries[reason] += 1
                time.sleep(0.2 * (attempt + 1))
            else:
                with self.lock:
                    self.failed.append((n, f"gave up after {ATTEMPTS} attempts"))
            time.sleep(PAUSE)


def _rotate(host) -> float:
    """Run the documented rotation command once, waiting out a generation that holds the lock."""
    started = time.monotonic()
    deadline = started + 300
    while True:
        res = host.ssh(ROTATE, check=False, timeout=300)
        if res.returncode == 0:
            return time.monotonic() - started
        assert res.returncode == 75 and time.monotonic() < deadline, (res.returncode, res.stderr)
        time.sleep(1)  # another rotation (the deploy's background generation) is running


def _reloads(host) -> int:
    """Reloads of Postfix and Dovecot so far, from the journal."""
    return int(
        host.ssh(
            "journalctl -q --no-pager -o cat | "
            "grep -cE 'reloading configuration|^reload -- version'; true"
        ).stdout
    )


def test_no_mail_is_lost_while_deploys_and_dh_rotations_reload_the_daemons(fresh_host):
    """Both releases at once (one pyinfra run deploys both, rotations run side by side), so the
    test costs the time of one: each host gets its own load generator and its own figures."""
    hosts = [fresh_host(suite) for suite in ("bookworm", "trixie")]
    run_pyinfra(hosts)
    loads = {h.name: Load(h.address, f"mailtest@{h.fqdn}", uuid.uuid4().hex[:12]) for h in hosts}
    reloads_before = {h.name: _reloads(h) for h in hosts}
    threads = [
        threading.Thread(target=load.worker, args=(i % 2 == 1,), daemon=True)
        for load in loads.values()
        for i in range(THREADS)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()

    deploys = 0
    dh_sums: dict[str, set[str]] = {h.name: set() for h in hosts}
    rotation_times: dict[str, list[float]] = {h.name: [] for h in hosts}

    def rotate(host) -> None:
        rotation_times[host.name].append(_rotate(host))
        dh_sums[host.name].add(host.ssh("sha256sum < /etc/ssl/mailtls/dh.pem").stdout.split()[0])

    try:
        with ThreadPoolExecutor(len(hosts)) as pool:
            for rotations in ROTATIONS_PER_CYCLE:
                for profile in PROFILES:
                    run_pyinfra(hosts, "deploy.py", *[a for kv in profile for a in ("--data", kv)])
                    deploys += 1
                # legacy-dhe with generated parameters is in place: the rotation script is there
                for _ in range(rotations):
                    list(pool.map(rotate, hosts))
        run_pyinfra(hosts)  # and back to the default
        deploys += 1
    finally:
        for load in loads.values():
            load.stop.set()
        for t in threads:
            t.join(timeout=MAX_SECONDS)
    duration = time.monotonic() - started

    report, problems = [], []
    for host in hosts:
        load = loads[host.name]
        # Delivered: wait for the queue to drain, then count unique subjects and all copies.
        pattern = f"^Subject: mailflow {load.tag} "
        deadline = time.monotonic() + 180
        while True:
            queue = host.ssh("postqueue -p | tail -n 1").stdout.strip()
            unique = int(host.ssh(f"grep '{pattern}' /var/mail/mailtest | sort -u | wc -l").stdout)
            if (unique >= load.sent and "empty" in queue) or time.monotonic() > deadline:
                break
            time.sleep(1)
        copies = int(host.ssh(f"grep -c '{pattern}' /var/mail/mailtest; true").stdout)
        reloads = _reloads(host) - reloads_before[host.name]
        retries = sum(load.retries.values())
        times = rotation_times[host.name]
        figures = (
            f"{host.suite}: sent={load.sent} delivered={unique} copies={copies} "
            f"failed={len(load.failed)} retries={retries} {dict(load.retries)} "
            f"sessions={dict(load.sessions)} deploys={deploys} rotations={len(times)} "
            f"({', '.join(f'{t:.0f}s' for t in times)}) distinct_dh={len(dh_sums[host.name])} "
            f"daemon_reloads={reloads} duration={duration:.0f}s queue={queue!r}"
        )
        report.append(figures)
        checks = {
            "no message refused or given up": not load.failed,
            f"at least {MIN_MESSAGES} sent": load.sent >= MIN_MESSAGES,
            "every message delivered": unique == load.sent,
            "a second copy only from a retried send": copies - unique <= retries,
            "STARTTLS always offered": "no STARTTLS" not in load.retries,
            "every session forward secret": not load.not_forward_secret,
            "TLS 1.2 and 1.3 senders both served": load.sessions["TLSv1.2"]
            and load.sessions["TLSv1.3"],
            f"{ROTATIONS} rotations, each new parameters": len(times)
            == ROTATIONS
            == len(dh_sums[host.name]),
            "the daemons reloaded": reloads >= 2 * ROTATIONS,
        }
        problems += [
            f"{host.suite}: {what}: {figures} {load.failed[:5]} {load.not_forward_secret[:5]}"
            for what, ok in checks.items()
            if not ok
        ]
    print("\n".join(report))
    assert not problems, "\n".join(problems)
