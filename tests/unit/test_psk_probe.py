"""The psk_ke probe against OpenSSL's own s_server on loopback: it must tell a server that resumes
TLS 1.3 without (EC)DHE (-allow_no_dhe_kex) from one that does not (OpenSSL's default)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from tasks.audit.psk_probe import probe_psk_modes

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("psk")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            d / "k.pem",
            "-out",
            d / "c.pem",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ],
        check=True,
        capture_output=True,
    )
    return d / "c.pem", d / "k.pem"


def s_server(pair, *options):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            "openssl",
            "s_server",
            "-accept",
            f"127.0.0.1:{port}",
            "-tls1_3",
            "-quiet",
            "-cert",
            pair[0],
            "-key",
            pair[1],
            *options,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, port


@pytest.mark.parametrize(
    "options,psk_ke", [((), "full handshake"), (("-allow_no_dhe_kex",), "resumed without (EC)DHE")]
)
def test_probe_tells_psk_ke_resumption_apart(pair, options, psk_ke):
    proc, port = s_server(pair, *options)
    try:
        result = probe_psk_modes("127.0.0.1", port)
    finally:
        proc.kill()
        proc.wait()
    # the control resumes: the probe's PSK and binder are right, so a full handshake means a refusal
    assert result == {"ticket": True, "psk_dhe_ke": "resumed", "psk_ke": psk_ke}
