"""Keys from the operator's terminal while `fleet top` draws: cbreak mode (one key at a time,
no echo, Ctrl-C still interrupts) for as long as the view runs, and the terminal's settings
put back however it ends (q, Ctrl-C, an error)."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import tty
from collections.abc import Iterator
from typing import TextIO


class Keys:
    """Keys typed while the view runs; on a stdin that is no terminal, none ever arrive."""

    def __init__(self, stream: TextIO) -> None:
        self.fd = stream.fileno() if stream.isatty() else None

    def wait(self, seconds: float) -> str | None:
        """The next key typed within `seconds`, or None when none was (the refresh tick)."""
        if self.fd is None:
            select.select([], [], [], seconds)
            return None
        ready, _, _ = select.select([self.fd], [], [], seconds)
        if not ready:
            return None
        data = os.read(self.fd, 32)
        if not data:  # the terminal went away (ssh closed): stop as if q was typed
            return "q"
        return data.decode(errors="replace")[:1]


@contextlib.contextmanager
def cbreak(stream: TextIO = sys.stdin) -> Iterator[Keys]:
    """Keys in cbreak mode; the saved settings are restored on the way out, whatever ends it."""
    if not stream.isatty():
        yield Keys(stream)
        return
    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield Keys(stream)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
