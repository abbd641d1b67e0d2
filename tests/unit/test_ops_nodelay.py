"""The inline upload's shell command, run for real in a local sh; TCP_NODELAY on real sockets;
the controller's quick exit."""

import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyinfra.api import FileUploadCommand, StringCommand

from tasks import nodelay, ops
from tasks.assets import sha256
from tasks.postfix import apply as postfix_apply

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "data", [b"", b"x = 1\n", bytes(range(256)) * 64, b"'quotes' \"and\" $HOME `x`\n"]
)
def test_inline_upload_writes_exact_bytes_and_mode(tmp_path, data):
    dest = tmp_path / "sub dir" / "file.conf"
    commands = ops._upload(data, str(dest), "0640", before=f"touch {tmp_path}/before-ran")
    assert len(commands) == 1 and isinstance(commands[0], StringCommand)
    assert f"<{len(data)} bytes>" in str(commands[0])  # what -vv prints: not the bytes
    subprocess.run(["sh", "-c", commands[0].get_raw_value()], check=True)
    assert dest.read_bytes() == data
    assert oct(dest.stat().st_mode & 0o777) == "0o640"
    assert (tmp_path / "before-ran").exists()
    assert not list(dest.parent.glob("*.mailtls-new"))


def test_upload_through_a_symlink_keeps_the_link(tmp_path):
    target = tmp_path / "real" / "file.conf"
    target.parent.mkdir()
    target.write_bytes(b"old\n")
    dest = tmp_path / "file.conf"
    dest.symlink_to(target)
    cmd = ops._upload(b"new\n", str(dest), "0644", after=f"touch {tmp_path}/after-ran")[0]
    subprocess.run(["sh", "-c", cmd.get_raw_value()], check=True)
    assert dest.is_symlink() and target.read_bytes() == b"new\n"
    assert (tmp_path / "after-ran").exists()


def test_failing_before_command_leaves_dest_alone(tmp_path):
    dest = tmp_path / "file.conf"
    dest.write_bytes(b"old\n")
    cmd = ops._upload(b"new\n", str(dest), "0644", before="false")[0]
    assert subprocess.run(["sh", "-c", cmd.get_raw_value()]).returncode != 0
    assert dest.read_bytes() == b"old\n"


def test_large_files_go_by_sftp(tmp_path):
    data = b"x" * (ops.INLINE_MAX + 1)
    dest = tmp_path / "x"
    dest.write_bytes(b"old\n")
    commands = ops._upload(data, str(dest), "0644")
    assert [type(c) for c in commands] == [StringCommand, FileUploadCommand, StringCommand]
    # what SFTP would do, then the rename into place (it once moved the upload onto itself)
    Path(commands[1].dest).write_bytes(commands[1].src.getvalue())
    for c in (commands[0], commands[2]):
        res = subprocess.run(["sh", "-c", c.get_raw_value()], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    assert dest.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_inline_uploads_share_a_command_within_the_argument_budget():
    big = ops.INLINE_MAX - 10  # ~86 KiB of base64 each: two would pass Linux's 128 KiB
    files = tuple((bytes([i]) * big, f"/etc/f{i}", "0644", None, None) for i in range(3))
    commands = list(ops.put_files._inner(files=files))  # the operation's generator
    assert len(commands) == 3
    assert all(len(c.get_raw_value()) < 128 * 1024 for c in commands)
    small = tuple((b"s", f"/etc/s{i}", "0644", None, None) for i in range(3))
    assert len(list(ops.put_files._inner(files=small))) == 1


def _tcp_pair():
    server = socket.create_server(("127.0.0.1", 0))
    return server, socket.create_connection(server.getsockname())


def test_nodelay_on_an_open_ssh_connection():
    server, client = _tcp_pair()
    with server, client:
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        transport = SimpleNamespace(sock=client)
        ssh_client = SimpleNamespace(get_transport=lambda: transport)
        assert (
            nodelay.for_host(SimpleNamespace(connector=SimpleNamespace(client=ssh_client))) is True
        )
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_nodelay_leaves_other_connections_alone():
    assert nodelay.for_host(SimpleNamespace()) is False  # e.g. @local: no SSH client
    assert nodelay.for_host(SimpleNamespace(connector=SimpleNamespace(client=None))) is False
    a, b = socket.socketpair()
    with a, b:
        assert nodelay.set_nodelay(a) is False
    assert nodelay.set_nodelay(None) is False


def test_transport_factory_sets_nodelay_before_the_handshake():
    server, client = _tcp_pair()
    with server, client:
        transport = nodelay.transport_factory(client)
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert transport.sock is client


def test_commit_is_one_command_for_every_daemon_due():
    assert list(ops.commit._inner(daemons=("postfix", "dovecot"))) == [
        f"{ops.APPLY} commit postfix dovecot"
    ]
    assert list(ops.commit._inner(daemons=("postfix",), run="ab12")) == [
        f"MAILTLS_RUN=ab12 {ops.APPLY} commit postfix"
    ]
    with pytest.raises(ValueError, match="unknown daemons"):
        list(ops.commit._inner(daemons=("postfix", "nginx")))


def test_postfix_settings_batches_what_postconf_keeps_in_order():
    from tasks.postfix.conf import PostfixConf

    conf = PostfixConf(
        main={
            "smtpd_tls_security_level": "may",
            "smtpd_tls_loglevel": "1",
            "tls_preempt_cipherlist": "no",
            "smtpd_tls_protocols": ">=TLSv1.2",
        },
        remove=("smtpd_tls_eecdh_grade",),
        services={
            "submission/inet": "submission inet n - y - - smtpd",
            "submissions/inet": "submissions inet n - y - - smtpd",
        },
        params={
            "submission/inet/syslog_name": "postfix/submission",
            "submissions/inet/syslog_name": "postfix/submissions",
        },
    )
    current = {
        "smtpd_tls_security_level": "none",
        "smtpd_tls_loglevel": "0",
        "smtpd_tls_eecdh_grade": "strong",
    }
    (command,) = postfix_apply.postfix_settings._inner(
        conf=conf, postconf=current, services={}, master_params={}, run="r1"
    )
    parts = command.split(" && ")
    # postconf edits copies in a private stage; mailtls-apply installs what changed, last
    assert parts[0] == f"mkdir -p -m 0700 {postfix_apply.STAGE_DIR}"
    assert parts[4] == f'cp -L {" ".join(ops.POSTFIX_FILES)} "$s"/'
    assert parts[5:9] == [
        # edited in place or appended, one run; appended in an order fixed on every host
        'NORANDOMIZE=1 postconf -c "$s" -e smtpd_tls_security_level=may smtpd_tls_loglevel=1 '
        "tls_preempt_cipherlist=no 'smtpd_tls_protocols=>=TLSv1.2'",
        'postconf -c "$s" -X smtpd_tls_eecdh_grade',
        "postconf -c \"$s\" -M 'submission/inet=submission inet n - y - - smtpd' "
        "'submissions/inet=submissions inet n - y - - smtpd'",
        'postconf -c "$s" -P submission/inet/syslog_name=postfix/submission '
        "submissions/inet/syslog_name=postfix/submissions",
    ]
    assert parts[-1] == f'{{ [ $# -eq 0 ] || MAILTLS_RUN=r1 {ops.APPLY} install postfix "$@"; }}'


def test_postfix_conf_missing_from_a_converged_host_is_empty():
    from tasks.postfix.conf import PostfixConf

    conf = PostfixConf(
        main={"a": "1"},
        remove=("old",),
        services={"s/inet": "s inet n - y - - smtpd"},
        params={"s/inet/x": "1"},
    )
    assert not conf.missing_from(
        {"a": "1"}, {"s/inet": "s inet n - y - - smtpd"}, {"s/inet/x": "1"}
    )
    todo = conf.missing_from({"a": "2", "old": "y"}, {}, {})
    assert todo == conf


def _put_bytes(monkeypatch, **kw) -> tuple[list, list[str]]:
    """put_bytes' commands, and what it told host.noop(), outside a pyinfra run."""
    said: list[str] = []
    monkeypatch.setattr(ops, "host", SimpleNamespace(noop=said.append))
    return list(ops.put_bytes._inner(**kw)), said


def test_put_bytes_repairs_a_mode_the_fact_read(tmp_path, monkeypatch):
    """mailtls-apply that lost its 0755 (same bytes) gets a chmod, as pyinfra's files.put does;
    the mode comes from the MailHost fact's own stat, run here on a real file."""
    from tasks.facts import MailHost

    data = b"#!/bin/sh\nexit 0\n"
    dest = tmp_path / "sub dir" / "mailtls-apply"
    dest.parent.mkdir()
    dest.write_bytes(data)
    dest.chmod(0o644)
    fact = MailHost()
    out = subprocess.run(
        ["sh", "-c", fact.command(files=(str(dest),))], capture_output=True, text=True
    )
    info = fact.process(out.stdout.splitlines())
    assert info.files[str(dest)] == sha256(data) and info.modes[str(dest)] == "644"

    commands, said = _put_bytes(
        monkeypatch,
        data=data,
        dest=str(dest),
        mode="0755",
        current_sha256=info.files[str(dest)],
        current_mode=info.modes[str(dest)],
    )
    assert len(commands) == 1 and not said
    subprocess.run(["sh", "-c", commands[0].get_raw_value()], check=True)
    assert dest.stat().st_mode & 0o777 == 0o755 and dest.read_bytes() == data


@pytest.mark.parametrize("current_mode", ["755", None])  # None: mode not read, not compared
def test_put_bytes_same_bytes_and_mode_is_a_noop(monkeypatch, current_mode):
    data = b"x\n"
    commands, said = _put_bytes(
        monkeypatch,
        data=data,
        dest="/usr/local/sbin/x",
        mode="0755",
        current_sha256=sha256(data),
        current_mode=current_mode,
    )
    assert commands == [] and said == ["/usr/local/sbin/x is up to date"]


def test_put_bytes_other_bytes_upload_whatever_the_mode(monkeypatch):
    commands, _ = _put_bytes(
        monkeypatch,
        data=b"new\n",
        dest="/etc/x",
        mode="0644",
        current_sha256=sha256(b"old\n"),
        current_mode="644",
    )
    assert (
        "chmod 0644" in commands[0].get_raw_value() and "base64 -d" in commands[0].get_raw_value()
    )


def test_quick_exit_freezes_the_collector_once_at_exit():
    """The hook runs when the process exits (a handler registered before it runs after it, and
    sees the frozen objects), once however often it is installed (once per host)."""
    code = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0, flush=True))\n"
        "n = atexit._ncallbacks()\n"
        "from tasks import quick_exit\n"
        "quick_exit.install(); quick_exit.install()\n"
        "print('hooks', atexit._ncallbacks() - n, 'frozen now', gc.get_freeze_count() > 0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.split("\n")[:2] == ["hooks 1 frozen now False", "frozen True"]
