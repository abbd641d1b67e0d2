"""Which mail servers to deploy to, without editing code.

In order of precedence:
  MAILTLS_HOSTS="mx1.example.org,root@mx2.example.org:2222"   comma-separated SSH targets
  MAILTLS_HOSTS_FILE=hosts.txt    one host per line: `HOST [key=value ...]` (# comments);
                                  the key=values become that host's data (e.g. mailtls_tls_profile=modern)
  neither: the local demo test hosts `bookworm` and `trixie` started by
  `python -m testhosts up` (whichever run); MAILTLS_TESTHOSTS="name1,name2" names others.
Group-wide settings go in group_data/all.py; `--data key=value` on the command line beats both.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pyinfra.api.exceptions import PyinfraError  # noqa: E402

from tasks import nodelay  # noqa: E402
from tasks.inventory_source import InventoryError, hosts_from_env  # noqa: E402
from testhosts.hosts import running  # noqa: E402  the embedded default: local test hosts

try:
    hosts = hosts_from_env(os.environ, default=running)
except InventoryError as exc:  # one line, no traceback
    raise PyinfraError(f"invalid inventory: {exc}") from None

# TCP_NODELAY from the SSH handshake on (tasks/nodelay.py); a host's own setting wins.
mail_servers = [
    (name, {"ssh_paramiko_connect_kwargs": nodelay.CONNECT_KWARGS, **data}) for name, data in hosts
]
