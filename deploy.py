"""Make every TLS session of Postfix and Dovecot forward-secret. Run: pyinfra -y inventory.py deploy.py"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pyinfra import host, logger  # noqa: E402

from tasks.facts import MailHost  # noqa: E402

info = host.get_fact(MailHost)
caps = info["caps"]
logger.info(f"{host.name}: Postfix {caps.postfix}, Dovecot {caps.dovecot}, OpenSSL {caps.openssl}")
