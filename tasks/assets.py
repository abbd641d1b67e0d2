"""What the deploy pushes from the checkout (the files/ folder), and checksums as the MailHost
fact reports them (sha256sum's hex), to compare the two without a round trip. Pure.

    >>> sha256(b"")[:12]
    'e3b0c44298fc'
    >>> (FILES / "dh" / "ffdhe3072.pem").is_file()
    True
"""

from __future__ import annotations

import hashlib
from pathlib import Path

FILES = Path(__file__).resolve().parent.parent / "files"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
