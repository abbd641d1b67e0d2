"""The controller's SSH key for the test hosts (testhosts/hosts.py: _ensure_key), made once
even when every xdist worker's first host asks for it at the same moment (a fresh machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_concurrent_first_uses_make_one_key_and_all_succeed(tmp_path):
    env = dict(os.environ, MAILTLS_CACHE_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    code = "from testhosts import hosts; hosts._ensure_key()"
    runs = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(6)]
    assert [p.wait(timeout=60) for p in runs] == [0] * 6
    key, pub = tmp_path / "id_ed25519", tmp_path / "id_ed25519.pub"
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert derived == pub.read_text().split()[1]  # the public half is the private key's
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "id_ed25519",
        "id_ed25519.pub",
        "key.lock",
    ]
