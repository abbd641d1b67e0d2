"""Dovecot's TLS settings, applied: our conf.d file (tasks/dovecot/conf.py renders it), put in
place through mailtls-apply with a reload pending for Dovecot."""

from __future__ import annotations

from tasks import ops
from tasks.dovecot.conf import CONF_PATH
from tasks.host_facts import HostFacts


def apply_dovecot(text: str, info: HostFacts, run: str | None = None) -> bool:
    """Put our Dovecot file in place unless it is already `text`; True when it changes in this
    run (Dovecot then needs the commit).

    **Example:**

    .. code:: python

        changed = apply_dovecot(conf.dovecot, info, run)
    """
    op = ops.put_bytes(
        name=f"Dovecot TLS settings ({CONF_PATH})",
        data=text.encode(),
        dest=CONF_PATH,
        current_sha256=info.files.get(CONF_PATH),
        current_mode=info.modes.get(CONF_PATH),
        pending=("dovecot",),
        run=run,
    )
    return op.will_change
