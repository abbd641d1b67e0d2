"""mailtls inside someone else's pyinfra project, written pyinfra's way: an inventory.py of
(host, data) tuples, group_data/all.py and group_data/GROUP.py beside it holding other deploys'
host data (postfix_relayhost, dovecot_mail_location, tls_*), our defaults from
@deploy(data_defaults=...), and the user's own deploy file calling mail_tls() among its tasks.
Run with pyinfra's real CLI."""

from __future__ import annotations

import re
import subprocess
import textwrap

from probes import STOCK_TLS_PORTS as PORTS

from conftest import PYINFRA, ROOT


def handshake(address: str, port: int, *args: str) -> str | None:
    """The negotiated protocol of a handshake on `port`, None if there was none."""
    starttls = ["-starttls", s] if (s := PORTS.get(port)) else []
    res = subprocess.run(
        ["openssl", "s_client", "-connect", f"{address}:{port}", *starttls, *args],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"^New, (TLSv1\.[0-3]), Cipher is (?!\(NONE\))", res.stdout, re.M)
    return m.group(1) if m else None


def project(tmp_path, host, host_data: str = "") -> None:
    """Another project's tree: its inventory, its group data, its own deploy."""
    ssh = {k: v for k, v in host.pyinfra_data().items() if k != "ssh_hostname"}
    (tmp_path / "inventory.py").write_text(
        textwrap.dedent(f"""\
        mail_servers = [
            ({host.address!r}, {{**{ssh!r}, "mailtls_tls_profile": "modern"{host_data}}}),
        ]
        """)
    )
    (tmp_path / "group_data").mkdir()
    # Other deploys' data in all.py, with our old names and namespaced ones mixed as a real
    # project's would be during a migration.
    (tmp_path / "group_data" / "all.py").write_text(
        textwrap.dedent("""\
        postfix_relayhost = "[smtp.example.org]:587"
        postfix_mynetworks = ["127.0.0.0/8"]
        dovecot_mail_location = "maildir:~/Maildir"
        dovecot_protocols = ["imap", "lmtp"]
        tls_something_else = {"verify": "peer"}
        dh_group = None
        mailtls_tls_profile = "intermediate"   # the host's own data overrides it (modern)
        tls_pq_hybrid = True                   # our old name: still works
        """)
    )
    (tmp_path / "group_data" / "mail_servers.py").write_text(
        textwrap.dedent("""\
        mailtls_postfix_submissions = False    # no 465 for this group
        dovecot_ssl = "required"
        """)
    )
    (tmp_path / "site.py").write_text(
        textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {str(ROOT)!r})

        from pyinfra import host
        from pyinfra.operations import files

        from tasks.mail_tls import mail_tls

        # Another deploy's task, using its own data.
        files.put(name="Relay host of another deploy", src=__import__("io").StringIO(
            host.data.postfix_relayhost + "\\n"), dest="/root/relayhost")
        mail_tls()
        """)
    )


def pyinfra(tmp_path, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYINFRA, "-y", *args], cwd=cwd or tmp_path, capture_output=True, text=True, timeout=600
    )


def test_deploys_beside_other_deploys_host_data(fresh_host, tmp_path):
    host = fresh_host("trixie")
    project(tmp_path, host)
    res = pyinfra(tmp_path, "inventory.py", "site.py")
    assert res.returncode == 0, res.stderr[-4000:]
    assert "is not a mailtls setting" not in res.stderr, res.stderr[-3000:]
    assert host.ssh("cat /root/relayhost").stdout == "[smtp.example.org]:587\n"
    # our settings from host data (modern), group_data/GROUP.py (no 465) and all.py (old name)
    assert handshake(host.address, 587, "-tls1_3") == "TLSv1.3"
    assert handshake(host.address, 587, "-tls1_2") is None  # modern: TLS 1.3 only where mandatory
    assert handshake(host.address, 993, "-tls1_2") is None
    assert handshake(host.address, 25, "-tls1_2") == "TLSv1.2"  # port 25 keeps the floor
    assert handshake(host.address, 465) is None
    assert "submissions" not in host.ssh("postconf -M").stdout
    # the other deploys' data is theirs: nothing of it reached the daemons' config
    assert host.ssh("postconf -h relayhost").stdout.strip() == ""

    # The project's own deploy.py, same inventory and group data: nothing left to change.
    again = pyinfra(tmp_path, str(tmp_path / "inventory.py"), "deploy.py", cwd=ROOT)
    assert again.returncode == 0, again.stderr[-4000:]
    grand = next(line for line in again.stderr.splitlines() if "Grand total" in line).split()
    assert grand[3] == "-", again.stderr[-3000:]


def test_a_typo_in_our_namespace_stops_the_users_deploy(fresh_host, tmp_path):
    host = fresh_host("bookworm")
    project(tmp_path, host, host_data=', "mailtls_tls_profil": "legacy-dhe"')
    before = host.ssh("sha256sum /etc/postfix/main.cf /etc/postfix/master.cf").stdout
    res = pyinfra(tmp_path, "inventory.py", "site.py")
    assert res.returncode != 0
    assert (
        "unknown setting 'mailtls_tls_profil' (did you mean mailtls_tls_profile?)" in res.stderr
    ), res.stderr[-3000:]
    assert host.ssh("sha256sum /etc/postfix/main.cf /etc/postfix/master.cf").stdout == before
    # the project's deploy.py refuses it before any operation, on every host
    res = pyinfra(tmp_path, str(tmp_path / "inventory.py"), "deploy.py", cwd=ROOT)
    assert (
        res.returncode != 0
        and "invalid settings:" in res.stderr
        and "Starting operation" not in res.stderr
    )
