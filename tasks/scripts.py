"""The root scripts in files/ as the deploy installs them, and the contract they share with it.

In the repository, files/mailtls-apply, mailtls-dh-rotate and mailtls-cert-watch source their
library from beside themselves (`. "$(dirname "$0")/mailtls-common.sh"`), which keeps each one
readable and lets shellcheck and the unit tests run them in place. On a host each is installed
as ONE file with the library inlined in place of that line (`script()`): uploaded next to its
path and renamed into place whole, as every file the deploy writes. A DH rotation started by
cron, or the certificate watcher's timer, running while a deploy replaces them, then runs an
old script or a new one, never a new script with an old library or the reverse; and root never
sources a second file that someone could swap.

The paths and formats the shell shares with Python are written once, in the contract block of
files/mailtls-common.sh, and read from there (`CONTRACT`): the shell needs them as plain
assignments anyway, and a generated shell file would be a second copy to keep in step. The
Python modules keep their own constant names (ops.APPLY, verify.VERIFY_PATH, certs.COPIES...),
taken from it.
"""

from __future__ import annotations

import re

from tasks.assets import FILES

LIBRARY = "mailtls-common.sh"

_BEGIN, _END = "# ---- contract: begin ----", "# ---- contract: end ----"
_ASSIGN = re.compile(r"([A-Z][A-Z0-9_]*)=(.*)")
_PLAIN = re.compile(r"(?:[A-Za-z0-9_./:%+,-]|\$[A-Z][A-Z0-9_]*|\$\{[A-Z][A-Z0-9_]*\})*")
_REF = re.compile(r"\$(?:([A-Z][A-Z0-9_]*)|\{([A-Z][A-Z0-9_]*)\})")
# A source line of the library, exactly as the scripts write it, with the directive above it.
_SOURCE = re.compile(
    r"^# shellcheck source=SCRIPTDIR/([\w.-]+)\n\. \"\$\(dirname \"\$0\"\)/\1\"\n", re.MULTILINE
)


def parse_contract(text: str) -> dict[str, str]:
    """The `NAME=value` lines between the contract markers of a shell file, expanded as the shell
    would: a value is unquoted (earlier names as $NAME or ${NAME}) or in single quotes. Anything
    else in the block raises ValueError, so the block stays something both sides read alike.

    >>> parse_contract(f"x=1\\n{_BEGIN}\\n# where\\nSTATE=/var/lib/x\\nLOCK=$STATE/lock\\n"
    ...                f"FMT='a=%s\\\\n'\\n{_END}\\n")
    {'STATE': '/var/lib/x', 'LOCK': '/var/lib/x/lock', 'FMT': 'a=%s\\\\n'}
    """
    lines = text.splitlines()
    block = lines[lines.index(_BEGIN) + 1 : lines.index(_END)]
    out: dict[str, str] = {}
    for line in block:
        if not line.strip() or line.startswith("#"):
            continue
        m = _ASSIGN.fullmatch(line)
        if not m:
            raise ValueError(f"not a NAME=value line: {line!r}")
        name, value = m.groups()
        if len(value) >= 2 and value[0] == value[-1] == "'" and "'" not in value[1:-1]:
            out[name] = value[1:-1]
            continue
        if not _PLAIN.fullmatch(value):
            raise ValueError(f"{name}: quote it in single quotes, or use only plain characters")

        def expand(ref: re.Match[str], name: str = name) -> str:
            ref_name = ref.group(1) or ref.group(2)
            if ref_name not in out:
                raise ValueError(f"{name}: ${ref_name} is not defined above it")
            return out[ref_name]

        out[name] = _REF.sub(expand, value)
    return out


def inline(text: str, read: dict[str, str]) -> str:
    """`text` with each library source line (and its shellcheck directive) replaced by the
    library's text, from `read` {name: text}.

    >>> inline('#!/bin/sh\\n# shellcheck source=SCRIPTDIR/lib.sh\\n. "$(dirname "$0")/lib.sh"\\nf\\n',
    ...        {"lib.sh": "f() { :; }\\n"})
    '#!/bin/sh\\n# ---- lib.sh, inlined by the deploy (tasks/scripts.py) ----\\nf() { :; }\\n# ---- end of lib.sh ----\\nf\\n'
    """

    def library(m: re.Match[str]) -> str:
        name = m.group(1)
        body = read[name]
        return (
            f"# ---- {name}, inlined by the deploy (tasks/scripts.py) ----\n"
            f"{body}{'' if body.endswith(chr(10)) else chr(10)}# ---- end of {name} ----\n"
        )

    return _SOURCE.sub(library, text)


def script(name: str) -> bytes:
    """files/NAME as it is installed: one self-contained file, its library inlined (no source
    line left). Example: `put_bytes(data=script("mailtls-apply"), dest=ops.APPLY, ...)`."""
    text = (FILES / name).read_text()
    text = inline(text, {lib: (FILES / lib).read_text() for lib in _SOURCE.findall(text)})
    if re.search(r"^\s*\.\s", text, re.MULTILINE):
        raise ValueError(f"{name}: a source line the deploy cannot inline")
    return text.encode()


CONTRACT: dict[str, str] = parse_contract((FILES / LIBRARY).read_text())
