"""The MailHost fact on paths a non-root user may control (the admin's certificate sources, in
an ACME client's directory): every read bounded in size and time, so a huge file there never
stalls a deploy."""

from __future__ import annotations

import os
import subprocess
import threading
import time

from conftest import PYINFRA, ROOT
from tasks.facts import MailHost

ACME = "/srv/acme"
STOP_AFTER = 120


def test_a_huge_certificate_source_stalls_neither_the_fact_nor_the_deploy(fresh_host):
    host = fresh_host("bookworm")
    host.ssh(
        f"mkdir -p {ACME} && cd {ACME} && openssl req -x509 -newkey ec -pkeyopt "
        f"ec_paramgen_curve:P-256 -nodes -keyout key.pem -out cert.pem -days 30 "
        f"-subj /CN={host.fqdn} 2>/dev/null && truncate -s 10G huge.pem"
    )
    huge, key = f"{ACME}/huge.pem", f"{ACME}/key.pem"

    # The fact as the deploy runs it: prompt, the small file read, the huge one not.
    started = time.monotonic()
    out = host.ssh("sh -s", input=MailHost().command(files=(huge, key)), timeout=600).stdout
    took = time.monotonic() - started
    info = MailHost().process(out.splitlines())
    assert took < 10, f"the fact took {took:.0f} s"
    assert huge not in info.files and huge not in info.modes, info.files
    assert key in info.files and info.oversize == {huge}

    # The deploy with it as the certificate: its facts are read at once, and the pair is never
    # reported as deployed. (The certificate watcher, asked about it, refuses it: how long it
    # takes to is the watcher's own bound; the run is stopped after STOP_AFTER seconds.)
    env = dict(os.environ, MAILTLS_TESTHOSTS=host.name)
    env.pop("MAILTLS_HOSTS", None)
    env.pop("MAILTLS_HOSTS_FILE", None)
    argv = [PYINFRA, "-y", "inventory.py", "deploy.py"]
    argv += ["--data", f"postfix_cert_file={huge}", "--data", f"postfix_key_file={key}"]
    started = time.monotonic()
    run = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(
        target=lambda: lines.extend((time.monotonic() - started, line) for line in run.stdout or ())
    )
    reader.start()
    try:
        rc = run.wait(timeout=STOP_AFTER)
    except subprocess.TimeoutExpired:
        run.kill()
        rc = None
        run.wait()
    reader.join(timeout=30)
    out = "".join(line for _, line in lines)
    began = [t for t, line in lines if "Beginning operation run" in line]
    assert began and began[0] < 20, out[-3000:]  # facts read: the fact did not stall
    assert rc != 0, out[-3000:]  # failed (or still busy with the pair when stopped): not deployed
    if rc is not None:
        assert huge in out, out[-3000:]
