"""`fleet run`: a one-off command in an app's environment, as its workers and jobs run."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from fleet.cli.common import app, configured_app, local_host
from fleet.cli.inspect import stored_config
from fleet.config.envfile import app_environment
from fleet.errors import FleetError
from fleet.host.layout import AppPaths
from fleet.server import units
from fleet.server.emperor import ini_value
from fleet.server.history import History
from fleet.server.release import app_dir


@app.command(context_settings={"allow_interspersed_args": False,
                               "ignore_unknown_options": True})
def run(
    name: Annotated[str, typer.Argument(help="The app whose environment to run in.")],
    command: Annotated[list[str], typer.Argument(
        help="The command and its arguments (put `--` before it when it has options).",
        show_default=False)],
) -> None:
    """Run a one-off command as the app's user, in its live release with its venv and env.

    Interactive when stdin is a terminal (a new pty); otherwise stdin and stdout are piped.
    The exit code is the command's. Like the app's workers, it runs in a systemd unit: the
    system read-only, the app's data (persist) writable, a private /tmp.

    Example: fleet run shop -- flask db upgrade (or: fleet run shop -- flask shell)
    """
    if command[:1] == ["--"]:  # click keeps it when options are not parsed after NAME
        command = command[1:]
    if not command:
        raise typer.BadParameter("give the command to run after the app's name")
    config = stored_config()
    target = configured_app(config, name)
    host = local_host()
    paths = AppPaths(name)
    link = host.state(paths.current)
    if link is None or link.kind != "link":
        raise FleetError(f"{name} has no live release yet (fleet apply deploys it)")
    release = link.target.rsplit("/", 1)[-1]
    record = History.load(host, name).releases.get(release)
    venv = record.venv if record and record.venv else ini_value(
        (host.read(paths.vassal(release)) or b"").decode(errors="replace"), "virtualenv")
    if not venv:
        raise FleetError(f"cannot tell which virtualenv release {release} of {name} uses")
    env = dict(app_environment(host, target))
    process = units.setup(target, release, app_dir(paths.release(release), target), venv,
                          units.env_text(tuple(env.items())))
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    # systemd-run would look a bare name up on its own PATH, not the venv's: a shell with the
    # unit's environment does, then becomes the command.
    argv = ["/bin/sh", "-c", 'exec "$0" "$@"', *command]
    code = host.run_attached(argv, properties=units.run_properties(process), env=env, tty=tty)
    raise typer.Exit(code)
