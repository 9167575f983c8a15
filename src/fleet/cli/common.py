"""What every typer command shares: the app, its global options, the --json option; and, from
fleet.cli.basics, the root check, the host, the run lock and the operator's file."""

from __future__ import annotations

from typing import Annotated

import typer

from fleet.cli.basics import (  # noqa: F401 - re-exported: the commands import them from here
    LOCK_WAIT,
    OPTIONS,
    Options,
    configured_app,
    local_host,
    locked_state,
    read_input,
    require_root,
)
from fleet.errors import EXIT_OK
from fleet.version import version_line

app = typer.Typer(
    name="fleet",
    help="Turn a bare Debian server into a host for many Flask apps behind nginx and the "
         "uWSGI Emperor. Run as root on the server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object, nothing else.")]


def version_callback(value: bool) -> None:
    if value:
        print(version_line())
        raise typer.Exit(EXIT_OK)


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                          help="Show every command fleet runs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q",
                                        help="Show only failures and the summary.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[bool | None, typer.Option(
        "--version", callback=version_callback, is_eager=True,
        help="Print the version and build id.")] = None,
) -> None:
    OPTIONS.verbose, OPTIONS.quiet, OPTIONS.debug = verbose, quiet, debug
