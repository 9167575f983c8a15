"""The command line proper: load the module of the command named, run it, map errors to exits.

Each command lives in one module of fleet.cli, and importing a module registers its commands
on the typer app. Importing all of them costs what the heaviest needs (converge's steps,
push's cluster code), so a command line that names a known command imports only that
command's module; help, completion or an unknown word import them all, so every listing and
"no such command" message sees every command. A plain `fleet apply` or `fleet plan` does
not even load typer: fleet.cli.fast parses it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from fleet import codecache
from fleet.cli import fast
from fleet.cli.audited import run_audited
from fleet.cli.basics import OPTIONS
from fleet.cli.output import err
from fleet.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, FleetError
from fleet.host import git_answers, render_cache

# Command name -> the fleet.cli module that defines it (a unit test keeps this complete).
# Listed in module order: registering all of them keeps --help in its usual order.
COMMAND_MODULES = {
    "apply": "converge", "plan": "converge", "add-app": "converge",
    "deploy": "deploy", "rollback": "deploy", "releases": "deploy",
    "maintenance": "door", "auth": "door", "env": "door",
    "init": "init",
    "status": "inspect", "check": "inspect", "logs": "inspect",
    "push": "push",
    "remove-app": "remove",
    "drain": "rotation", "undrain": "rotation",
    "run": "run",
    "backup": "backup", "backups": "backup", "restore": "backup",
    "history": "audit", "watch": "audit", "notify-deliver": "audit",
    "top": "observe", "metrics": "observe",
}  # fmt: skip


def modules_for(args: Sequence[str]) -> list[str]:
    """The modules to import for a command line (arguments after the program name).

    Global options are flags only, so the first word without a leading dash is the command.
    """
    words = [word for word in args if not word.startswith("-")]
    if words and words[0] in COMMAND_MODULES:
        return [COMMAND_MODULES[words[0]]]
    return list(dict.fromkeys(COMMAND_MODULES.values()))


def register(modules: Sequence[str]) -> None:
    """Import the command modules named (each registers its commands on `app` once)."""
    for module in modules:
        importlib.import_module(f"fleet.cli.{module}")


def run(args: Sequence[str]) -> int:
    """Run one command line; a command that changes the server also leaves its audit line
    (fleet.cli.audited). What it rendered and compiled is kept for the next run
    (host/render_cache.py, fleet/codecache.py), unless its input was bad: then nothing on the
    server is touched, those files neither."""
    code = run_audited(args, lambda: run_command(args))
    if code != EXIT_INVALID:
        render_cache.save()
        git_answers.save()
        codecache.save()
    return code


def run_command(args: Sequence[str]) -> int:
    """Run one command line; user errors are one line on stderr with exit 2 (input) or 1
    (failure), and the exit code is returned."""
    quick = fast.command(args)
    try:
        return run_fast(quick) if quick is not None else run_typer(args)
    except FleetError as exc:
        if OPTIONS.debug or "--debug" in args:
            import traceback

            traceback.print_exc()
        err.print(f"fleet: {exc}", markup=False, soft_wrap=True)
        return exc.exit_code
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # not a usage error: a bug, show it all
            raise
        # Usage errors (unknown option, missing argument): one line, like every input error.
        err.print(f"fleet: {exc.format_message()} (see fleet --help)", markup=False,
                  soft_wrap=True)
        return EXIT_INVALID


def run_typer(args: Sequence[str]) -> int:
    import typer

    from fleet.cli.common import app

    register(modules_for(args))
    try:
        code = app(args=list(args), standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        err.print("fleet: aborted")
        code = EXIT_FAILED
    return code if isinstance(code, int) else EXIT_OK


def run_fast(command: Callable[[], int]) -> int:
    try:
        return command()
    except (EOFError, KeyboardInterrupt):  # as click does around typer's commands
        sys.stderr.write("\n")
        err.print("fleet: aborted")
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(sys.argv[1:]))
