"""`openssl s_server` (the controller's OpenSSL) on a free loopback port, for tests of the audit's
scanners and probes against a real TLS server whose configuration the test chooses."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa
from selfsigned import self_signed


@contextlib.contextmanager
def s_server(tmp_path: Path, *args: str) -> Iterator[int]:
    """Run `openssl s_server ARGS` with an RSA-2048 certificate for mx.test (implicit TLS, as on
    465), yield its port, kill it after."""
    now = datetime.now(UTC)
    cert, key = self_signed(
        rsa.generate_private_key(65537, 2048), "mx.test", now - timedelta(1), now + timedelta(1)
    )
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(tmp_path / "c.pem"),
         "-key", str(tmp_path / "k.pem"), "-quiet", *args],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError("s_server did not start")
        yield port
    finally:
        server.kill()
        server.wait()
