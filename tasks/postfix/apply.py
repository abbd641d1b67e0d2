"""Postfix's TLS settings, applied: the postconf runs that bring main.cf and master.cf to the
plan (tasks/postfix/conf.py), on private copies that mailtls-apply installs whole."""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from pyinfra import host
from pyinfra.api import operation

from tasks.host_facts import HostFacts
from tasks.ops import POSTFIX_FILES, apply_command
from tasks.postfix.conf import PostfixConf
from tasks.scripts import CONTRACT


def postconf_commands(todo: PostfixConf, config_dir: str | None = None) -> list[str]:
    """The postconf runs that apply `todo` (a PostfixConf.missing_from() result): one per kind;
    on the main.cf and master.cf in `config_dir` (a shell word) when given, else Postfix's own.

    main.cf takes one run: settings already there are edited in place, new ones appended.
    Postfix 3.10 (Debian 13) appends them sorted by name (qsort in postconf_edit.c); 3.7 in the
    order of its hash table, whose seed is random unless NORANDOMIZE is set (util/hash_fnv.c).
    With it, hosts that get the same settings get the same main.cf bytes on either. -X, -M and
    -P keep their arguments' order.

        >>> todo = PostfixConf(main={"smtpd_tls_loglevel": "1", "tls_preempt_cipherlist": "no"},
        ...                    remove=("smtpd_tls_eecdh_grade",), services={}, params={})
        >>> postconf_commands(todo)
        ['NORANDOMIZE=1 postconf -e smtpd_tls_loglevel=1 tls_preempt_cipherlist=no', 'postconf -X smtpd_tls_eecdh_grade']
    """
    postconf = f"postconf -c {config_dir}" if config_dir else "postconf"
    commands = []
    if todo.main:
        commands.append(
            f"NORANDOMIZE=1 {postconf} -e "
            + " ".join(shlex.quote(f"{k}={v}") for k, v in todo.main.items())
        )
    if todo.remove:
        commands.append(f"{postconf} -X " + " ".join(todo.remove))
    if todo.services:
        commands.append(
            f"{postconf} -M "
            + " ".join(shlex.quote(f"{s}={line}") for s, line in todo.services.items())
        )
    if todo.params:
        commands.append(
            f"{postconf} -P " + " ".join(shlex.quote(f"{k}={v}") for k, v in todo.params.items())
        )
    if todo.unset:  # TLS-policy -o overrides that would beat main.cf's policy
        commands.append(f"{postconf} -PX " + " ".join(shlex.quote(k) for k in todo.unset))
    return commands


# Where postconf edits copies of main.cf and master.cf before mailtls-apply installs them:
# root-only, beside mailtls-apply's other state.
STAGE_DIR = CONTRACT["STAGE"]


def postfix_edit(todo: PostfixConf, run: str | None = None) -> str:
    """One shell command that applies `todo`: postconf edits copies in a private directory
    (`postconf -c`), and `mailtls-apply install` puts the files that changed in place, whole,
    through a symlink if main.cf or master.cf is one, in one locked step with their backup and
    pending mark. Killed at any point, each file holds its old or its new bytes. The copies get
    the originals' owner and mode (postconf would write 0644).

        >>> todo = PostfixConf(main={"smtpd_tls_loglevel": "1"}, remove=(), services={}, params={})
        >>> postfix_edit(todo, "r1").split(" && ")[5]
        'NORANDOMIZE=1 postconf -c "$s" -e smtpd_tls_loglevel=1'
    """
    files = " ".join(POSTFIX_FILES)
    return " ".join(
        [
            f"mkdir -p -m 0700 {STAGE_DIR} &&",
            # what a killed run left (nothing of it was installed): gone after an hour
            f"find {STAGE_DIR} -mindepth 1 -maxdepth 1 -mmin +60 -exec rm -rf {{}} + &&",
            f"s=$(mktemp -d {STAGE_DIR}/postfix.XXXXXX) &&",
            """trap 'rm -rf "$s"' EXIT &&""",
            f'cp -L {files} "$s"/ &&',
            " && ".join(postconf_commands(todo, '"$s"')),
            f'&& set -- && for f in {files}; do n="$s/${{f##*/}}";',
            'chown --reference="$f" "$n" && chmod --reference="$f" "$n" || exit 1;',
            'cmp -s "$f" "$n" || set -- "$@" "$f" "$n"; done &&',
            f'{{ [ $# -eq 0 ] || {apply_command("install", "postfix", run)} "$@"; }}',
        ]
    )


@operation()
def postfix_settings(
    conf: PostfixConf,
    postconf: Mapping[str, str],
    services: Mapping[str, str],
    master_params: Mapping[str, str],
    run: str | None = None,
):
    """Bring main.cf and master.cf to `conf` with one batch of postconf commands (postfix_edit).

    + postconf/services/master_params: `postconf -n`, `-M` and `-P` from the MailHost fact
    + run: this run's id, recorded with the pending mark (commit() says what became of it)

    **Example:**

    .. code:: python

        postfix_settings(conf=host_conf.render(settings, info).postfix, postconf=info.postconf,
                         services=info.services, master_params=info.master_params)
    """
    todo = conf.missing_from(postconf, services, master_params)
    if not todo:
        host.noop("Postfix TLS settings are in place")
        return
    yield postfix_edit(todo, run)


def apply_postfix(conf: PostfixConf, info: HostFacts, run: str | None = None) -> bool:
    """Bring main.cf and master.cf to the plan; True when they change in this run (Postfix then
    needs the commit).

    **Example:**

    .. code:: python

        changed = apply_postfix(conf.postfix, info, run)
    """
    op = postfix_settings(
        name="Postfix TLS settings (main.cf, master.cf)",
        conf=conf,
        postconf=info.postconf,
        services=info.services,
        master_params=info.master_params,
        run=run,
    )
    return op.will_change
