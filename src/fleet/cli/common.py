"""What every command shares: the typer app, global options, root check, output helpers."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from fleet.cli.output import err, out, print_json, style
from fleet.cli.report import SilentReporter, TextReporter, print_summary, summary_json
from fleet.config.envfile import check_env_files
from fleet.config.htpasswd import check_auth_files
from fleet.config.limits import TOML_MAX_BYTES
from fleet.config.settings import AppConfig, Config
from fleet.config.store import Desired, desired_state, plan_store
from fleet.converge.apply import Outcome, converge
from fleet.errors import EXIT_FAILED, EXIT_OK, ConfigError, NotRoot, UnknownApp
from fleet.host import layout
from fleet.host.actions import Action
from fleet.host.lock import run_lock
from fleet.host.machine import Host, LocalHost
from fleet.host.session import Session
from fleet.masking import mask_urls
from fleet.server.certs import check_tls_files
from fleet.server.ports import check_ports
from fleet.server.users import check_identities

app = typer.Typer(
    name="fleet",
    help="Turn a bare Debian server into a host for many Flask apps behind nginx and the "
         "uWSGI Emperor. Run as root on the server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object, nothing else.")]


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
    with run_lock(layout.LOCK_FILE, wait=LOCK_WAIT, on_wait=lambda m: err.print(m)):
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


def reporter(json_out: bool, show_diffs: bool = False) -> TextReporter | SilentReporter:
    if json_out:
        return SilentReporter()
    return TextReporter(verbose=OPTIONS.verbose, quiet=OPTIONS.quiet, show_diffs=show_diffs)


def run_converge(desired: Desired, *, json_out: bool, check: bool, only: set[str] | None = None,
                 extra: dict[str, object] | None = None,
                 pre_actions: Sequence[Action] = (), first: Sequence[Action] = ()) -> int:
    """Check, then converge (or plan) the stored state and print the result. `pre_actions`
    join the "fleet config" step; `first` are files a command already validated (an htpasswd
    file, an env file) that the checks below must see, so they are written before them."""
    host = local_host()
    session = Session(host, reporter(json_out, show_diffs=check), check=check)
    session.act(first)
    check_env_files(host, desired.config)  # a bad secrets file: exit 2 before any change
    check_auth_files(host, desired.config)  # a bad htpasswd file: likewise
    check_ports(host, desired.config)  # a TCP address already taken: exit 2, likewise
    check_tls_files(host, desired.config)  # so does a missing or mismatched cert/key
    check_identities(host, desired.config)  # an app user fleet did not create: likewise
    outcome = Outcome()
    try:
        with session.step("fleet config") as step:
            session.apply(step, [*plan_store(host, desired), *pre_actions])
        outcome = converge(desired.config, session, only=only)
    except Exception as exc:  # a step failed in a way the session could not attribute
        if not session.steps or session.steps[-1].error is None:
            raise
        outcome.aborted = str(exc)
    notes = {"kept": desired.kept, "pruned": desired.pruned}
    if json_out:
        print_json(summary_json(session, outcome, {**notes, **(extra or {})}))
    else:
        if desired.kept:
            out.print(f"kept apps not named in the file: {', '.join(desired.kept)} "
                      "(--prune removes them)")
        print_summary(out, session, outcome, plan=check)
    failed = session.counts()["failed"] > 0 or outcome.aborted is not None
    return EXIT_FAILED if failed else EXIT_OK


