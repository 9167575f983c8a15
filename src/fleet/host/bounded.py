"""Reads from sockets an app controls: an overall deadline and a byte cap on every answer.

A per-read timeout is not enough: an app that sends one byte a second never trips it, and a
health gate or `fleet status` waiting on it would hold /run/fleet.host.lock forever. Every failure
here is an AnswerError (an OSError, so each caller's existing `except OSError` names it as
that app's failure) whose text says what was wrong: too slow, too large, unreadable.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from fleet.errors import AnswerError, AnswerTooLarge, AnswerTooSlow

STATS_CAP = 4 * 1024 * 1024  # a stats document of a few hundred workers is tens of KiB
REPLY_CAP = 1024 * 1024  # a health answer: headers plus the first part of the body


def read_all(sock: socket.socket, seconds: float, cap: int) -> bytes:
    """Read until the peer closes, within `seconds` in all and at most `cap` bytes."""
    deadline = time.monotonic() + seconds
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AnswerTooSlow(seconds)
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(65536, cap + 1 - size))
        except TimeoutError:
            raise AnswerTooSlow(seconds) from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > cap:
            raise AnswerTooLarge(cap)
        chunks.append(chunk)


def parse_json(data: bytes, what: str = "stats answer") -> Any:
    """json.loads that names a malformed or too deeply nested document instead of raising
    RecursionError (which no caller expects) or a bare ValueError."""
    try:
        return json.loads(data.decode(errors="replace"))
    except RecursionError:
        raise AnswerError(f"{what} unreadable (nested too deeply)") from None
    except ValueError as exc:
        raise AnswerError(f"{what} unreadable (not JSON: {exc})") from None


@contextlib.contextmanager
def deadline(sock: socket.socket, seconds: float) -> Iterator[threading.Event]:
    """Shut the connection down when `seconds` run out, whatever is blocked reading it (the
    headers of http.client, a TLS record): the reader then fails at once. The event says
    whether the deadline fired. Shut down through a duplicate descriptor so an SSL socket's
    own state is not touched from another thread."""
    fired = threading.Event()
    raw = socket.socket(fileno=os.dup(sock.fileno()))

    def expire() -> None:
        fired.set()
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()
        raw.close()
