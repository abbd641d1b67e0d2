"""The project's pyinfra operations. Each compares against the MailHost fact (one round trip for
the whole host), yields commands only for what differs, and says host.noop() otherwise.

Every change to a daemon's config goes `mailtls-apply begin` (mark pending, back up) ->
change -> `commit` (check, reload, probe, roll back on failure; one commit for all daemons at
the end of the run): see files/mailtls-apply.
"""

from __future__ import annotations

import base64
import io
import shlex
from collections.abc import Mapping
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, FunctionCommand, QuoteString, StringCommand, operation
from pyinfra.api.hiddenvalue import HiddenValue

from tasks.assets import sha256
from tasks.facts import CronNameLines
from tasks.scripts import CONTRACT

APPLY = CONTRACT["APPLY"]
POSTFIX_FILES = ("/etc/postfix/main.cf", "/etc/postfix/master.cf")
DAEMONS = ("postfix", "dovecot")
# Files up to this size travel inside the command (base64): one round trip instead of three
# (mkdir, SFTP upload, rename). Linux caps one argument (the `sh -c` script) at 128 KiB: a
# 64 KiB file is 86 KiB of base64, and put_files joins inline uploads only up to ARG_BUDGET.
INLINE_MAX = 64 * 1024
ARG_BUDGET = 100 * 1024


def apply_command(action: str, daemons: str, run: str | None) -> str:
    """`mailtls-apply ACTION DAEMONS`, with this run's id (MAILTLS_RUN) when there is one.

    >>> apply_command("commit", "postfix dovecot", "4f2a")
    'MAILTLS_RUN=4f2a /usr/local/sbin/mailtls-apply commit postfix dovecot'
    """
    return f"{f'MAILTLS_RUN={shlex.quote(run)} ' if run else ''}{APPLY} {action} {daemons}"


def _upload(
    data: bytes,
    dest: str,
    mode: str,
    before: str | None = None,
    after: str | None = None,
    pending: tuple[str, ...] = (),
    run: str | None = None,
) -> list:
    """Write next to `dest`, then rename: the file is whole or absent, never half-written. A
    symlink at `dest` stays one: its target gets the data.

    `before`/`after`: commands to run first/last, in the same round trip. `pending`: daemons
    that read the file: the rename is `mailtls-apply install`'s, which backs the file up, marks
    their reload pending and notes what it writes in the same locked step.
    """
    q_dest = shlex.quote(dest)
    first = [before] if before else []
    first.append(f"mkdir -p {shlex.quote(str(Path(dest).parent))}")
    # The link's target, resolved on the host: `t` names the file written, "$t.mailtls-new" its temp.
    first.append(f"t=$(readlink -m -- {q_dest})")
    rename = (
        apply_command("install", ",".join(pending), run) + f' {q_dest} "$t.mailtls-new"'
        if pending
        else 'mv -f "$t.mailtls-new" "$t"'
    )
    install = f'chmod {mode} "$t.mailtls-new" && {rename}' + (f" && {after}" if after else "")
    if len(data) <= INLINE_MAX:
        # Hidden: -vv output shows the command with a placeholder, not the file's bytes.
        blob = HiddenValue(shlex.quote(base64.b64encode(data).decode()), f"<{len(data)} bytes>")
        return [
            StringCommand(
                " && ".join(first),
                "&& printf %s",
                blob,
                f'| base64 -d > "$t.mailtls-new" && {install}',
            )
        ]
    # Not "$t.mailtls-new" itself: for a plain file (t = dest) the mv would be onto itself.
    tmp = f"{dest}.mailtls-upload"
    return [
        StringCommand(" && ".join(first)),
        FileUploadCommand(io.BytesIO(data), tmp),
        StringCommand(
            f't=$(readlink -m -- {q_dest}) && mv -f {shlex.quote(tmp)} "$t.mailtls-new" && {install}'
        ),
    ]


@operation()
def put_bytes(
    data: bytes,
    dest: str,
    mode: str = "0644",
    current_sha256: str | None = None,
    current_mode: str | None = None,
    pending: tuple[str, ...] = (),
    run: str | None = None,
):
    """Put `data` at `dest` with `mode` unless its checksum (from the MailHost fact) already
    matches; a file with the right bytes but another mode only gets a chmod (as files.put does).

    + current_sha256/current_mode: the MailHost fact's ``files`` and ``modes`` for `dest`
      (None: absent, or the mode was not read and is not compared)
    + pending: daemons (postfix/dovecot) that read this file: for each, mailtls-apply backs it
      up and marks a reload pending as it renames the file into place (their config may not
      change when only this file does)
    + run: this run's id, recorded with the pending mark (commit() says what became of it)

    **Example:**

    .. code:: python

        put_bytes(name="Dovecot TLS", data=text.encode(), dest="/etc/dovecot/conf.d/99-mailtls.conf",
                  current_sha256=info.files.get(path), current_mode=info.modes.get(path),
                  pending=("dovecot",))
    """
    commands = _put_commands(data, dest, mode, current_sha256, current_mode, pending, run)
    if not commands:
        host.noop(f"{dest} is up to date")
        return
    yield from commands


def _put_commands(
    data: bytes,
    dest: str,
    mode: str,
    current_sha256: str | None,
    current_mode: str | None,
    pending: tuple[str, ...] = (),
    run: str | None = None,
) -> list:
    """What put_bytes runs: nothing when bytes and mode match, a chmod when only the mode differs
    (same bytes: nothing for a daemon to reload; chmod acts on a symlink's target, as the upload
    writes it), else the upload, renamed into place by mailtls-apply install for `pending`."""
    if current_sha256 == sha256(data):
        if current_mode is None or int(current_mode, 8) == int(mode, 8):
            return []
        return [StringCommand("chmod", mode, "--", QuoteString(dest))]
    return _upload(data, dest, mode, pending=pending, run=run)


def _joined(commands: list[StringCommand]) -> StringCommand:
    return StringCommand(
        *[part for i, c in enumerate(commands) for part in ((["&&"] if i else []) + list(c.bits))]
    )


@operation()
def put_files(files: tuple[tuple[bytes, str, str, str | None, str | None], ...]):
    """Several `put_bytes` in one round trip: (data, dest, mode, current_sha256, current_mode)
    each; only what differs is written (or chmod-ed), each file whole or absent (as put_bytes).

    **Example:**

    .. code:: python

        put_files(name="Tools", files=((script, "/usr/local/sbin/x", "0755",
                                        info.files.get(path), info.modes.get(path)),))
    """
    per_file = [_put_commands(*f) for f in files]
    if not any(per_file):
        host.noop(f"{', '.join(f[1] for f in files)} up to date")
        return
    # One command each (inline uploads, chmods) joined, up to ARG_BUDGET of text per command;
    # SFTP uploads on their own.
    batch: list[StringCommand] = []
    size = 0
    for c in [c[0] for c in per_file if len(c) == 1]:
        n = len(c.get_raw_value())
        if batch and size + n > ARG_BUDGET:
            yield _joined(batch)
            batch, size = [], 0
        batch.append(c)
        size += n
    if batch:
        yield _joined(batch)
    for commands in per_file:
        if len(commands) > 1:
            yield from commands


@operation()
def absent(paths: list[str], files: Mapping[str, str]):
    """
    Remove files that the fact saw on the host (``files``: path -> sha256); no-op otherwise.

    **Example:**

    .. code:: python

        absent(name="Remove rotation files", paths=[dh.ROTATE_CONF], files=info.files)
    """
    there = [p for p in paths if p in files]
    if not there:
        host.noop(f"{', '.join(paths)} absent")
        return
    yield StringCommand("rm", "-f", *(QuoteString(p) for p in there))


@operation(is_idempotent=False)
def start_generation(unit: str, command: str):
    """
    Start `command` (the DH rotation script) as the transient systemd unit `unit`; return at once.

    The unit is collected when it ends, also on failure, so its file under
    /run/systemd/transient/ tells a later deploy whether it still runs. Only call when
    dh.plan() says so: starting is a change by nature.

    **Example:**

    .. code:: python

        start_generation(name="Generate DH parameters in the background",
                         unit=dh.ROTATE_UNIT, command=dh.ROTATE_BIN)
    """
    yield StringCommand(
        "systemctl",
        "is-active",
        "--quiet",
        QuoteString(unit),
        "||",
        "systemd-run",
        "--no-block",
        "--collect",
        "--quiet",
        QuoteString(f"--unit={unit}"),
        QuoteString("--description=mailtls: generate DH parameters"),
        QuoteString(command),
    )


@operation()
def cron_name_absent(cron_name: str, user: str | None = None):
    """
    Remove the ``# pyinfra-name=`` line of a cron job that crontab.crontab(present=False) removes.

    crontab.crontab deletes only the lines that match the job's command, so the name comment
    stays behind and would name whatever job is added after it (which a later run would then
    rewrite or delete). Call it after crontab.crontab(present=False, cron_name=...).

    **Example:**

    .. code:: python

        crontab.crontab(command="/usr/local/sbin/job", cron_name="job", present=False)
        cron_name_absent(cron_name="job")
    """
    comment = f"# pyinfra-name={cron_name}"
    if not host.get_fact(CronNameLines, cron_name=cron_name, user=user):
        host.noop(f"no cron job named {cron_name}")
        return
    user_args = ["-u", QuoteString(user)] if user else []
    # The listing first, on its own: in a pipeline a failing `crontab -l` goes unseen and
    # `crontab -` installs what grep leaves of nothing, an empty crontab. A crontab of only the
    # name line still becomes an empty one.
    yield StringCommand(
        "t=$(crontab",
        *user_args,
        "-l)",
        "&&",
        "printf",
        "'%s\\n'",
        '"$t"',
        "|",
        "grep",
        "-vxF",
        QuoteString(comment),
        "|",
        "crontab",
        *user_args,
        "-",
    )


@operation()
def commit(daemons: tuple[str, ...], run: str | None = None):
    """Check, reload and probe each of `daemons` (those whose config changed or with a reload
    still pending), all at once; roll back and fail any daemon that rejects its new config.
    With `run` (the id this run's changes were installed with), a change another commit rolled
    back meanwhile fails too.

    **Example:**

    .. code:: python

        commit(daemons=("postfix",) if op.will_change or "postfix" in info.pending else ())
    """
    if not daemons:
        host.noop("nothing to reload")
        return
    unknown = set(daemons) - set(DAEMONS)
    if unknown:
        raise ValueError(f"unknown daemons: {sorted(unknown)}")
    yield apply_command("commit", " ".join(daemons), run)


def _report(state, host, message: str) -> bool:
    host.log_styled(message, fg="red", log_func=logger.error)
    return False


@operation(is_idempotent=False)
def fail(message: str):
    """Fail the current host with `message` (one line per cause, no traceback), before anything
    on it is changed; other hosts carry on.

    For what only the host can tell (Postfix missing, an unsupported version, a setting outside
    our files that overrides the policy): the run goes on for the other hosts and exits non-zero.
    Call it instead of the changes, then return.

    **Example:**

    .. code:: python

        fail(name="Postfix installed", message=f"{host.name}: Postfix is not installed")
    """
    yield FunctionCommand(_report, (message,), {})
