"""Make every TLS session of Postfix and Dovecot forward-secret.

    pyinfra -y inventory.py deploy.py                     # hosts from inventory.py
    pyinfra -y mx1.example.org deploy.py --data mailtls_tls_profile=modern

Settings (host data, `mailtls_*`) and their defaults: tasks/settings.py, also listed in the README.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pyinfra import host, logger, state  # noqa: E402
from pyinfra.api.exceptions import PyinfraError  # noqa: E402

from tasks import quick_exit  # noqa: E402
from tasks.mail_tls import mail_tls  # noqa: E402
from tasks.settings import SettingsError, inventory_settings, notes  # noqa: E402

# Every host's settings are checked before any operation or fact runs on any host: one bad
# value stops the whole run with a one-line error, and no host is changed. pyinfra has logged in
# by then (nothing more): 3.10 has no hook between loading the inventory with --data merged and
# connecting (config.py runs before the inventory exists; State.init() drops callback handlers
# registered earlier). Unreachable hosts are in state.inventory too: they are checked as well.
try:
    settings = inventory_settings(state.inventory)[host.name]
except SettingsError as exc:
    raise PyinfraError(f"invalid settings: {exc}") from None

quick_exit.install()  # the process's exit: no garbage collection (tasks/quick_exit.py)
for note in notes(host.data.dict()):
    logger.warning(f"{host.name}: {note}")
mail_tls(settings=settings)
