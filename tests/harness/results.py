"""What a test server answers: a command's result, an HTTP response, and the errors for
neither."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ._util import HarnessError


@dataclass(frozen=True)
class Completed:
    """Result of a command run inside the server."""

    returncode: int
    stdout: str
    stderr: str
    argv: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class HttpResponse:
    """An HTTP answer; header names are lower-cased for easy lookup."""

    status: int
    headers: dict[str, str]
    body: str


class CommandFailed(HarnessError):
    """``run(..., check=True)`` saw a non-zero exit status."""

    def __init__(self, result: Completed) -> None:
        self.result = result
        super().__init__(
            f"command failed with exit status {result.returncode}: {shlex.join(result.argv)}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
        )


class NoResponse(ConnectionError):
    """No HTTP response at all: refused, reset, closed early (nginx's 444) or timed out.

    ``reason`` is one of "refused", "closed", "reset", "timeout".
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"no HTTP response ({reason}): {detail}")
