"""STARTTLS command injection (CVE-2011-0411 and its family: Postfix before 2.8.1, Exim,
Cyrus, Dovecot's and others' siblings), probed as testssl.sh does.

The attack: a man in the middle cannot read the TLS session, but it can append plaintext to
the client's STARTTLS command in the same TCP segment. A server that reads its input through a
buffer and does not empty that buffer when it switches to TLS then runs the appended command as
if the client had sent it inside TLS: with the client's credentials still to come, e.g. a
`MAIL FROM`/`RCPT TO` of the attacker's or an IMAP command whose answer the client mistakes for
its own. RFC 3207 4.2 (SMTP) and RFC 2595 3.1 (IMAP, POP3) say that what follows STARTTLS
before the handshake must be discarded.

The probe plays the man in the middle against itself: after the plaintext dialogue it sends
STARTTLS and a harmless command in one write (PIPELINED), does the TLS handshake and waits a
little (WAIT) without sending anything. A correct server sends nothing: it is waiting for the
client's first command. A vulnerable one answers the injected command, unsolicited, as the
first data of the TLS session.

    >>> PIPELINED["smtp"]
    b'STARTTLS\\r\\nRSET\\r\\n'
    >>> answers_injected("smtp", "250 2.0.0 Ok"), answers_injected("pop3", "+OK")
    (True, True)
    >>> answers_injected("imap", "b OK NOOP completed"), answers_injected("imap", "* BYE")
    (True, False)

The verdict, probe_starttls_injection()'s (value, note):
  True   the injected command was answered inside TLS: vulnerable.
  False  nothing unsolicited within WAIT after the handshake; or the server refused (or closed
         on) the pipelined STARTTLS, or failed the handshake after it (Dovecot takes the
         injected bytes for the start of the handshake), while a STARTTLS on its own, on a
         second connection, is accepted (and gets TLS): nothing injected ran.
  None   could not tell: no connection, STARTTLS refused outright, no handshake, a dialogue
         too slow for the deadline, or unsolicited data that answers nothing we sent.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time

from tasks.audit import wire
from tasks.audit.wire import MAX_LINE, deadline, read_lines_until

# STARTTLS and, in the same write, the injected command: one that changes nothing (RSET before
# any transaction, NOOP) and that a server answers with a reply we can recognise.
PIPELINED = {
    "smtp": b"STARTTLS\r\nRSET\r\n",
    "imap": b"a STARTTLS\r\nb NOOP\r\n",
    "pop3": b"STLS\r\nNOOP\r\n",
}

# How long to wait after the handshake for the answer to the injected command: a vulnerable
# server answers at once (the command is already in its buffer), as testssl.sh assumes too.
WAIT = 1.5


def answers_injected(service: str, line: str) -> bool:
    """Whether `line`, the first line read inside TLS, answers the injected command: any SMTP
    reply (a 3-digit code), IMAP's tagged answer to `b`, or POP3's +OK / -ERR."""
    if service == "smtp":
        return line[:3].isdigit() and line[3:4] in (" ", "-", "")
    if service == "imap":
        return line.startswith("b ")
    return line.startswith(("+OK", "-ERR"))


def _pipelined_starttls(sock: socket.socket, service: str) -> str | None:
    """wire.starttls(), but with the injected command sent in the STARTTLS write. None when the
    server accepted STARTTLS; else its refusing reply, or why there is none (it closed). The
    dialogue before STARTTLS raises its OSError (ConnectionError, TimeoutError)."""
    if service == "smtp":
        # The final line of the greeting, whatever its code: a 554 greeting is a refusal too.
        greeting = read_lines_until(sock, lambda line: line[3:4] == " ")
        if not greeting.startswith("220"):
            raise ConnectionError(f"SMTP greeting {greeting[:80]!r}")
        sock.sendall(b"EHLO audit.mailtls.invalid\r\n")
        read_lines_until(sock, lambda line: line[3:4] == " ")
        final, ok_prefix = (lambda line: line[3:4] == " "), "220"
    elif service == "imap":
        read_lines_until(sock, lambda line: line.startswith("* "))
        final, ok_prefix = (lambda line: line.startswith("a ")), "a OK"
    else:
        read_lines_until(sock, lambda line: True)
        final, ok_prefix = (lambda line: True), "+OK"
    sock.sendall(PIPELINED[service])
    try:
        reply = read_lines_until(sock, final)
    except OSError as exc:  # closed on the pipelined write: a refusal without words
        return f"no reply ({type(exc).__name__}: {exc})"
    return None if reply.startswith(ok_prefix) else reply


def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the certificate is judged elsewhere (sslyze)
    return ctx


def _plain_starttls_accepted(
    ip: str, port: int, service: str, timeout: float, server_name: str | None = None
) -> bool:
    """Whether a STARTTLS on its own (wire.starttls(), on a new connection) is accepted and, with
    `server_name`, followed by a TLS handshake: it tells a server that refuses pipelining (or
    takes the injected bytes for TLS and fails) from one that refuses STARTTLS or TLS."""
    try:
        with (
            socket.create_connection((ip, port), timeout=timeout) as sock,
            deadline(sock, 2 * timeout),
        ):
            wire.starttls(sock, service)
            if server_name is not None:
                _client_context().wrap_socket(sock, server_hostname=server_name or None).close()
    except (OSError, ValueError):  # ConnectionError (refused, closed), ssl.SSLError included
        return False
    return True


def _first_line(tls: ssl.SSLSocket, wait: float) -> bytes:
    """What the server sends within `wait` seconds, up to its first line ending or MAX_LINE
    bytes; b"" when nothing (a TLS 1.3 server's tickets are not data: OpenSSL takes them)."""
    data = b""
    end = time.monotonic() + wait
    while b"\n" not in data and len(data) < MAX_LINE:
        left = end - time.monotonic()
        if left <= 0:
            break
        tls.settimeout(left)
        try:
            chunk = tls.recv(MAX_LINE - len(data))
        except TimeoutError:
            break
        if not chunk:  # closed: what came before is all there is
            break
        data += chunk
    return data


def probe_starttls_injection(
    ip: str, port: int, service: str, server_name: str | None = None, timeout: float = 5
) -> tuple[bool | None, str]:
    """Whether `service` (smtp, imap, pop3) on `ip`:`port` runs a command injected after
    STARTTLS (see the module docstring for the verdict). `server_name`: the SNI to send;
    `timeout` bounds each read, 2 x timeout + WAIT the whole dialogue."""
    if service not in PIPELINED:
        raise ValueError(f"no STARTTLS dialogue for {service!r}")
    try:
        sock = socket.create_connection((ip, port), timeout=timeout)
    except OSError as exc:
        return None, f"no connection ({type(exc).__name__}: {exc})"
    # wrap_socket() detaches `sock`: a deadline on it would not reach the handshake or what
    # follows. A duplicate descriptor of the same connection does: shutdown() acts on the
    # connection, not the descriptor. (CPython also bounds each ssl call, a whole handshake
    # included, by the socket timeout; the deadline bounds them all together.)
    guard = sock.dup()
    budget = 2 * timeout + WAIT
    start = time.monotonic()
    with guard, sock, deadline(guard, budget):
        try:
            refused = _pipelined_starttls(sock, service)
        except OSError as exc:
            return None, f"no {service} dialogue up to STARTTLS ({type(exc).__name__}: {exc})"
        if refused is not None:
            # Refused, or closed on: is it the pipelining or STARTTLS itself it refuses?
            if _plain_starttls_accepted(ip, port, service, timeout):
                return False, f"pipelined STARTTLS refused ({refused[:80]!r}), plain one accepted"
            return None, f"{service} STARTTLS refused ({refused[:80]!r})"
        try:
            tls = _client_context().wrap_socket(sock, server_hostname=server_name)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            # Dovecot does this: it reads the injected command as the start of the handshake,
            # which fails, so nothing runs. Not vulnerable, if STARTTLS alone gets TLS.
            why = f"{type(exc).__name__}: {exc}"
            if _plain_starttls_accepted(ip, port, service, timeout, server_name or ""):
                return False, f"no TLS after pipelined STARTTLS ({why}); after a plain one, TLS"
            return None, f"no TLS handshake after STARTTLS ({why})"
        with tls:
            # The deadline must not end the wait early: a shut-down socket reads as "nothing
            # unsolicited", which would be a False verdict the server never earned.
            if time.monotonic() - start > budget - WAIT:
                return None, "the dialogue and handshake took too long to wait for an answer"
            try:
                data = _first_line(tls, WAIT)
            except ssl.SSLError as exc:
                return None, f"TLS error after the handshake ({exc.reason or exc})"
            except OSError as exc:  # a reset, say: nothing was answered before it
                data = b""
                closed = f" (then {type(exc).__name__})"
            else:
                closed = ""
            with contextlib.suppress(OSError):
                tls.sendall(b"b LOGOUT\r\n" if service == "imap" else b"QUIT\r\n")
    if not data:
        return False, f"nothing unsolicited within {WAIT} s of the handshake{closed}"
    line = data.split(b"\n", 1)[0].decode(errors="replace").rstrip("\r")
    if answers_injected(service, line):
        return True, f"injected command answered inside TLS: {line[:80]!r}"
    return None, f"unsolicited data inside TLS that answers nothing sent: {line[:80]!r}"
