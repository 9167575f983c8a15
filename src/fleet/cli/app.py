"""The command line: each command parses, calls one function, and renders its result.

Commands live in the other fleet.cli modules; this module holds the app, global options and
the entry point that turns errors into one line and an exit code.
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer

from fleet.cli.common import OPTIONS, app
from fleet.cli.output import err
from fleet.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, FleetError
from fleet.version import version_line


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



def main() -> None:
    """Entry point: user errors are one line on stderr with exit 2 (input) or 1 (failure)."""
    try:
        code = app(standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        err.print("fleet: aborted")
        code = EXIT_FAILED
    except FleetError as exc:
        if OPTIONS.debug or "--debug" in sys.argv:
            traceback.print_exc()
        err.print(f"fleet: {exc}", markup=False, soft_wrap=True)
        code = exc.exit_code
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # not a usage error: a bug, show it all
            raise
        # Usage errors (unknown option, missing argument): one line, like every input error.
        err.print(f"fleet: {exc.format_message()} (see fleet --help)", markup=False,
                  soft_wrap=True)
        code = EXIT_INVALID
    sys.exit(code if isinstance(code, int) else EXIT_OK)




# Register the commands (importing a module adds its commands to `app`).
from fleet.cli import (  # noqa: E402, F401
    converge,
    deploy,
    door,
    init,
    inspect,
    push,
    remove,
    rotation,
    run,
)

if __name__ == "__main__":  # pragma: no cover
    main()
