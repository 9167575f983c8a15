"""What every command shares that needs no command line parser: the global options, the root
check, the host (with -v's command lines), the run lock and the operator's file.

Apart from common.py (the typer app) so that `fleet apply` and `fleet plan`, which
fleet.cli.fast runs without typer, and common's typer commands share one copy.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from fleet.cli.output import err, style
from fleet.config.limits import TOML_MAX_BYTES
from fleet.config.settings import AppConfig, Config
from fleet.config.store import Desired, desired_state
from fleet.errors import ConfigError, NotRoot, UnknownApp
from fleet.host import layout
from fleet.host.lock import run_lock
from fleet.host.machine import Host, LocalHost
from fleet.masking import mask_urls


class Options:
    verbose = False
    quiet = False
    debug = False


OPTIONS = Options()


def require_root() -> None:
    """Called first by every command that reads /etc/fleet or changes the server."""
    if os.geteuid() != 0:
        # Global options are flags only: the first word is the command.
        words = [word for word in sys.argv[1:] if not word.startswith("-")]
        command = f"fleet {words[0]}" if words else "fleet"
        raise NotRoot(f"{command} must run as root: fleet's state under /etc/fleet and "
                      "/srv/fleet is root-only (try sudo)")


def configured_app(config: Config, name: str) -> AppConfig:
    """The stored app a command names; any other name is bad input, refused in one line."""
    found = config.app(name)
    if found is None:
        raise UnknownApp(name, [a.name for a in config.apps])
    return found


def local_host() -> LocalHost:
    def show(argv: Sequence[str]) -> None:
        from rich.text import Text  # only with -v

        # Env values never reach argv; credentials inside URLs (git remotes) would.
        err.print(Text(f"$ {mask_urls(shlex.join(list(argv)))}", style=style("aside")),
                  highlight=False, soft_wrap=True)

    return LocalHost(show if OPTIONS.verbose else None)


LOCK_WAIT = 600.0  # seconds a command waits for another fleet run (a deploy) to finish


@contextmanager
def locked_state(host: Host, source: str | None = None, text: str | None = None, *,
                 prune: bool = False) -> Iterator[Desired]:
    """Hold fleet's run lock, then load the stored state (merged with an operator's file, if
    any): read under the lock, the state cannot change between reading and acting on it.
    Waiting for another run says so on stderr."""
    def waiting(message: str) -> None:
        from fleet.converge.refs import drop_prefetched

        err.print(message)
        drop_prefetched()  # that run may move the remotes' refs on: ask them afresh

    with run_lock(layout.LOCK_FILE, wait=LOCK_WAIT, on_wait=waiting):
        yield desired_state(host, source, text, prune=prune)


def read_input(file: Path) -> str:
    """The operator's file, read only up to the size limit (parse_toml names the excess)."""
    try:
        with file.open(encoding="utf-8") as handle:
            return handle.read(TOML_MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(str(file), "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(file), "", f"cannot read: {exc}") from None
