"""The safety net, installed: mailtls-apply (check, reload, verify, roll back) and what its
commit verifies after each reload (verify.conf, rendered by tasks/safety/verify.py), in one
round trip; and the commit itself (tasks/ops.py: commit)."""

from __future__ import annotations

from tasks import ops
from tasks.host_facts import HostFacts
from tasks.safety.verify import VERIFY_PATH
from tasks.scripts import script


def install_safety_net(verify: str, info: HostFacts) -> None:
    """mailtls-apply and verify.conf as this checkout has them (each only if it differs).

    **Example:**

    .. code:: python

        install_safety_net(conf.verify, info)
    """
    files, modes = info.files, info.modes
    ops.put_files(
        name=f"mailtls-apply (check, reload, verify, roll back), {VERIFY_PATH}",
        files=(
            (
                script("mailtls-apply"),
                ops.APPLY,
                "0755",
                files.get(ops.APPLY),
                modes.get(ops.APPLY),
            ),
            (verify.encode(), VERIFY_PATH, "0644", files.get(VERIFY_PATH), modes.get(VERIFY_PATH)),
        ),
    )
