"""A TCP server on loopback that runs a behaviour for each connection, each in a thread of its
own: the hostile and fake mail servers of the audit probes' unit tests."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


class Loopback:
    """Runs `behave(conn)` for each connection to 127.0.0.1:`port`; `timeout`, when set, bounds
    each of the server's reads (a server left behind by a failing probe must not live on).
    `stop` is set by close(), for behaviours that wait or loop."""

    def __init__(self, behave: Callable[[socket.socket], None], timeout: float | None = None):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.stop = threading.Event()
        self.behave, self.timeout = behave, timeout
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.server.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        if self.timeout is not None:
            conn.settimeout(self.timeout)
        with conn, contextlib.suppress(OSError):
            self.behave(conn)

    def close(self) -> None:
        self.stop.set()
        self.server.close()
