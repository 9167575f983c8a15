"""Commands that converge the server: apply, plan, add-app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleet import layout
from fleet.commands.common import (
    JsonOpt,
    app,
    err,
    local_host,
    read_input,
    require_root,
    run_converge,
)
from fleet.errors import ConfigError
from fleet.lock import run_lock
from fleet.store import desired_state, with_app


@app.command()
def apply(
    file: Annotated[Path | None, typer.Argument(
        help="TOML file with \\[server], \\[emperor] and \\[apps.NAME] tables to merge into "
             "/etc/fleet before converging.", show_default=False)] = None,
    prune: Annotated[bool, typer.Option(help="Remove stored apps the file does not name "
                                             "(their data is kept).")] = False,
    check: Annotated[bool, typer.Option("--check", help="Only show what would change "
                                                        "(same as `fleet plan`).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Converge the server to the desired state: packages, users, code, venvs, vassals, nginx.

    Example: fleet apply fleet.toml
    """
    raise typer.Exit(do_apply(file, prune=prune, check=check, json_out=json_out))


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


def do_apply(file: Path | None, *, prune: bool, check: bool, json_out: bool) -> int:
    require_root()
    text = read_input(file) if file is not None else None
    host = local_host()
    with run_lock(layout.LOCK_FILE, wait=600, on_wait=lambda m: err.print(m)):
        desired = desired_state(host, str(file) if file else None, text, prune=prune)
        return run_converge(desired, json_out=json_out, check=check)


def parse_env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError("--env", pair, "expected KEY=VALUE")
        env[key] = value
    return env


@app.command("add-app")
def add_app(
    name: Annotated[str, typer.Argument(help="App name: lowercase letters, digits, dashes.")],
    repo: Annotated[str, typer.Option(help="Git URL or local path of the app's repo.")],
    domain: Annotated[list[str], typer.Option(help="Domain the app answers (repeatable).")],
    ref: Annotated[str | None, typer.Option(help="Branch, tag or commit.")] = None,
    path: Annotated[str, typer.Option(help="App directory inside the repo.")] = ".",
    module: Annotated[str, typer.Option(help="uWSGI module spec.")] = "wsgi:app",
    env: Annotated[list[str] | None, typer.Option(
        help="Environment variable KEY=VALUE (repeatable).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Add (or replace) one app in /etc/fleet/apps and converge just that app.

    Example: fleet add-app blog --repo https://git.example.com/blog.git --domain blog.example.com
    """
    require_root()
    raw: dict[str, object] = {"repo": repo, "domains": list(domain), "path": path,
                              "module": module}
    if ref:
        raw["ref"] = ref
    if env:
        raw["env"] = parse_env_pairs(env)
    host = local_host()
    with run_lock(layout.LOCK_FILE, wait=600, on_wait=lambda m: err.print(m)):
        desired = with_app(desired_state(host, None, None), name, raw, f"add-app {name}")
        code = run_converge(desired, json_out=json_out, check=False, only={name})
    raise typer.Exit(code)


