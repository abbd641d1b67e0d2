"""No garbage collection while the controller exits (a tenth of a no-op run: bench/README.md).

When `pyinfra` returns, CPython's finalization runs full collections over every object the
run left behind (pyinfra, paramiko, gevent, click, Jinja2), only to free memory the operating
system takes back anyway.

`gc.freeze()` at exit moves them out of the collector's reach. It runs after pyinfra has
disconnected every host and printed its results; objects are still freed by reference counting
as the modules are torn down, files are still flushed, and atexit handlers registered before
this one (logging's flush) run after it. Only cyclic garbage is left unfreed, to the OS.
"""

from __future__ import annotations

import atexit
import gc

_installed = False


def install() -> None:
    """Freeze the collector when the process exits (once per process)."""
    global _installed
    if not _installed:
        atexit.register(gc.freeze)
        _installed = True
