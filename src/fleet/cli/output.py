"""Where the command line writes, and in which colours.

Results go to stdout (`out`: rich text, or one JSON document through print_json); progress,
the commands -v shows and error lines go to stderr (`err`), so `fleet status --json | jq`
reads only the result. One map gives each state word its colour, whichever command shows it:
a "failed" looks the same in status, check, a converge's steps and push's recap.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, TextIO, cast

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """A rich Console made at its first use: a run that prints only JSON (`apply --json`)
    never imports rich. Every attribute is the real console's."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def real(self) -> Console:
        """The console itself: what rich's own objects (a Live display) must be given, since
        they use it as a context manager, which no attribute lookup forwards."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)


def real_console(console: Console) -> Console:
    """`out` or `err` as the rich Console itself (any other console as it is)."""
    return console.real() if isinstance(console, LazyConsole) else console


# Neither console binds a stream: rich looks up sys.stdout / sys.stderr at each print, so
# test capture and redirection work; highlight=False keeps numbers and paths uncoloured.
out = cast("Console", LazyConsole(highlight=False))
err = cast("Console", LazyConsole(stderr=True, highlight=False))

STATUS_STYLE = {
    # fine: a step, host or health check that passed, a vassal that runs
    "ok": "green", "passed": "green", "running": "green",
    # changed (a step, a host) or out of rotation on purpose (a drained app server)
    "changed": "yellow", "drained": "yellow",
    # waiting: a planned step, an on-demand vassal asleep
    "would change": "cyan", "sleeping": "cyan",
    "undecided": "magenta",  # a planned step whose actions wait on the steps before it
    # failed: a step, a host, a health check, a run (its "stopped:" line)
    "failed": "bold red", "unreachable": "bold red",
    # down, or the reason something failed
    "throttled": "red", "failing": "red", "error": "red",
    "skipped": "dim",
    "aside": "dim",  # not a state: what -v shows, a running step's elapsed seconds
}
OTHER_STYLE = "yellow"  # a state not listed: starting, stopped, unknown, not deployed...


def style(state: str) -> str:
    """The colour a state word is shown in."""
    return STATUS_STYLE.get(state, OTHER_STYLE)


def print_json(data: object, stream: TextIO | None = None) -> None:
    """The whole result as one JSON document on stdout: what --json promises, nothing else."""
    target = stream or sys.stdout
    target.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    target.flush()
