"""Commands that converge the server: apply, plan, add-app."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated, TextIO

import typer

from fleet.cli.common import (
    JsonOpt,
    app,
    local_host,
    locked_state,
    read_input,
    require_root,
)
from fleet.cli.converging import do_apply, run_converge
from fleet.config.envfile import parse_env_file
from fleet.config.settings import APP_DEFAULTS
from fleet.config.store import with_app
from fleet.errors import ConfigError


@app.command()
def apply(
    file: Annotated[Path | None, typer.Argument(
        help="TOML file with \\[server], \\[emperor] and \\[apps.NAME] tables to merge into "
             "/etc/fleet before converging.", show_default=False)] = None,
    prune: Annotated[bool, typer.Option(help="Remove stored apps the file does not name "
                                             "(their data is kept).")] = False,
    check: Annotated[bool, typer.Option("--check", help="Only show what would change "
                                                        "(same as `fleet plan`).")] = False,
    hold_changes: Annotated[bool, typer.Option(
        "--hold-changes", help="Plan first and apply only if nothing would change; otherwise "
                               "change nothing and show the plan, marked held (what `fleet "
                               "push` asks each host).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Converge the server to the desired state: packages, users, code, venvs, vassals, nginx.

    Example: fleet apply fleet.toml
    """
    if check and hold_changes:
        raise ConfigError("--hold-changes", "--check", "give one of them: --check only plans")
    raise typer.Exit(do_apply(file, prune=prune, check=check, json_out=json_out,
                              hold=hold_changes))


@app.command()
def plan(
    file: Annotated[Path | None, typer.Argument(
        help="TOML file to merge, as for apply.", show_default=False)] = None,
    prune: Annotated[bool, typer.Option(help="As for apply.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show everything apply would do, with file diffs, changing nothing.

    Example: fleet plan fleet.toml
    """
    raise typer.Exit(do_apply(file, prune=prune, check=True, json_out=json_out))


ENV_ON_ARGV = ("a value on the command line is readable by every local user (/proc): "
               "give --env KEY and the value on stdin, or --env-file FILE")


def env_names(names: list[str]) -> list[str]:
    """--env takes a name only: KEY=VALUE is refused naming the key, never the value."""
    for name in names:
        key, sep, _value = name.partition("=")
        if sep:
            raise ConfigError("--env", key or "=", ENV_ON_ARGV)
        if not key:
            raise ConfigError("--env", "''", "expected a variable name")
    return names


def read_env_values(names: list[str], stdin: TextIO) -> dict[str, str]:
    """The values of --env names: a hidden prompt on a terminal; otherwise one line of stdin
    per name, in order (a single name takes all of stdin, less its final newline)."""
    if not names:
        return {}
    if stdin.isatty():
        return {name: getpass.getpass(f"{name}: ") for name in names}
    if len(names) == 1:
        return {names[0]: stdin.read().removesuffix("\n")}
    lines = stdin.read().split("\n")
    if len(lines) < len(names):
        raise ConfigError("--env", names[len(lines)],
                          f"stdin has {len(lines)} lines for {len(names)} --env names")
    return dict(zip(names, lines, strict=False))


def read_env_sources(names: list[str], env_file: Path | None,
                     stdin: TextIO = sys.stdin) -> dict[str, str]:
    """The app's env table: --env-file's pairs, then the --env values read from stdin."""
    env: dict[str, str] = {}
    if env_file is not None:
        env.update(parse_env_file(str(env_file), read_input(env_file)))
    env.update(read_env_values(env_names(names), stdin))
    return env


@app.command("add-app")
def add_app(
    name: Annotated[str, typer.Argument(help="App name: lowercase letters, digits, dashes.")],
    repo: Annotated[str, typer.Option(help="Git URL or local path of the app's repo.")],
    domain: Annotated[list[str], typer.Option(help="Domain the app answers (repeatable).")],
    ref: Annotated[str | None, typer.Option(help="Branch, tag or commit.")] = None,
    path: Annotated[str, typer.Option(help="App directory inside the repo.")] = APP_DEFAULTS.path,
    module: Annotated[str, typer.Option(help="uWSGI module spec.")] = APP_DEFAULTS.module,
    env: Annotated[list[str] | None, typer.Option(
        help="Environment variable NAME (repeatable); its value is read from stdin (one line "
             "per name) or a hidden prompt, never from the command line.")] = None,
    env_file: Annotated[Path | None, typer.Option(
        "--env-file", help="File of KEY=VALUE lines for the app's env table.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Add (or replace) one app in /etc/fleet/apps and converge just that app.

    Example: fleet add-app blog --repo https://git.example.com/blog.git --domain blog.example.com
    """
    values = read_env_sources(list(env or []), env_file)  # bad input: exit 2 first
    require_root()
    raw: dict[str, object] = {"repo": repo, "domains": list(domain), "path": path,
                              "module": module}
    if ref:
        raw["ref"] = ref
    if values:
        raw["env"] = values
    host = local_host()
    with locked_state(host) as stored:
        desired = with_app(stored, name, raw, f"add-app {name}")
        code = run_converge(desired, json_out=json_out, check=False, only={name})
    raise typer.Exit(code)


