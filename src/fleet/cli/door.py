"""Commands that change one app's door controls or environment and converge just that app:
maintenance, auth, env. Each writes /etc/fleet/apps/NAME.toml (and, for auth, the app's
htpasswd file) under the run lock, then converges the app as `fleet add-app` does: nginx is
tested and reloaded gracefully when its file changed, the vassal reloads when its environment
changed, and the app is health-checked through nginx.

Secrets (passwords, env values) are read from stdin or a hidden prompt, never from argv, and
never printed."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.table import Table

from fleet.cli.common import (
    JsonOpt,
    app,
    configured_app,
    local_host,
    locked_state,
    read_input,
    require_root,
)
from fleet.cli.converging import run_converge
from fleet.cli.output import out, print_json
from fleet.config.envfile import load_env_file, parse_env_file
from fleet.config.htpasswd import USER_RE, load_users, users_text
from fleet.config.limits import env_line_problem
from fleet.config.parse import ENV_NAME_RE
from fleet.config.store import Desired, desired_state, with_app
from fleet.errors import EXIT_OK, ConfigError, UnknownApp
from fleet.host import layout
from fleet.host.actions import MASK, Action
from fleet.host.files import plan_dir, plan_file
from fleet.host.machine import Host

AppName = Annotated[str, typer.Argument(help="The app's name.", show_default=False)]


def known_app(desired: Desired, name: str) -> dict[str, Any]:
    """The app's stored table (a copy), or exit 2 naming the apps there are."""
    if name not in desired.apps_raw:
        raise UnknownApp(name, [a.name for a in desired.config.apps])
    configured_app(desired.config, name)
    return dict(desired.apps_raw[name])


def change_app(name: str, change: Callable[[Host, Desired, dict[str, Any]], list[Action]],
               *, json_out: bool, source: str) -> int:
    """Under the lock: load the stored state, let `change` edit the app's table (and return
    files to write first), validate everything, write, and converge just that app."""
    require_root()
    host = local_host()
    with locked_state(host) as desired:
        raw = known_app(desired, name)
        first = change(host, desired, raw)
        desired = with_app(desired, name, raw, source)  # bad input: exit 2, nothing written
        return run_converge(desired, json_out=json_out, check=False, only={name}, first=first)


def read_secret(what: str, stdin: TextIO) -> str:
    """A password or value: a hidden prompt on a terminal, else all of stdin less its final
    newline. Never argv (any local user reads /proc/PID/cmdline)."""
    value = getpass.getpass(f"{what}: ") if stdin.isatty() else stdin.read().removesuffix("\n")
    if "\n" in value or "\r" in value or "\x00" in value:
        raise ConfigError("stdin", what, "must be a single line")
    return value


# --------------------------------------------------------------------------- maintenance


@app.command()
def maintenance(
    name: AppName,
    state: Annotated[str, typer.Argument(help="on or off.", show_default=False)],
    message: Annotated[str | None, typer.Option(
        help="Text of the maintenance page (stored as maintenance_message).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Switch an app's maintenance page on or off: visitors get 503 with Retry-After, fleet's
    health checks and ACME challenges still reach the app. A graceful nginx reload.

    Example: fleet maintenance shop on --message "Back at 14:00 UTC."
    """
    if state not in ("on", "off"):
        raise ConfigError("maintenance", state, "expected on or off")

    def change(_host: Host, _desired: Desired, raw: dict[str, Any]) -> list[Action]:
        raw["maintenance"] = state == "on"
        if message is not None:
            raw["maintenance_message"] = message
        return []

    raise typer.Exit(change_app(name, change, json_out=json_out,
                                source=f"maintenance {name}"))


# --------------------------------------------------------------------------- auth


def hash_password(host: Host, password: str) -> str:
    """SHA-512 crypt ($6$), which nginx verifies through the system's crypt(3). openssl reads
    the password on stdin: it never reaches an argv or a file."""
    result = host.run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n")
    hashed = result.stdout.strip()
    if not hashed.startswith("$6$"):
        raise ConfigError("openssl passwd", "-6", "did not return a SHA-512 crypt hash")
    return hashed


def auth_path(raw: dict[str, Any], name: str) -> str:
    auth = raw.get("auth")
    if isinstance(auth, dict) and isinstance(auth.get("users"), str):
        return auth["users"]
    return f"{layout.AUTH_DIR}/{name}.htpasswd"


@app.command()
def auth(
    name: AppName,
    action: Annotated[str, typer.Argument(help="add, remove or list.", show_default=False)],
    user: Annotated[str | None, typer.Argument(help="User name (add, remove).",
                                               show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Basic auth users of an app. `add` reads the password from a hidden prompt or stdin
    (never the command line), hashes it (SHA-512 crypt) into the app's htpasswd file, sets
    `auth` when it was off, and converges the app; `remove` takes a user out.

    Example: fleet auth shop add alice   (asks for the password; or pipe it on stdin)
    """
    if action not in ("add", "remove", "list"):
        raise ConfigError("auth", action, "expected add, remove or list")
    if action != "list" and (user is None or not USER_RE.fullmatch(user)):
        raise ConfigError("auth", user or "USER", "a user name is letters, digits and . _ @ - "
                                                  "(at most 64)")
    if action == "list":
        raise typer.Exit(list_users(name, json_out))
    password = read_secret(f"password for {user}", sys.stdin) if action == "add" else ""
    if action == "add" and not password:
        raise ConfigError("stdin", f"password for {user}", "is empty")

    def change(host: Host, desired: Desired, raw: dict[str, Any]) -> list[Action]:
        path = auth_path(raw, name)
        current = desired.config.app(name)
        assert current is not None
        users = dict(load_users(host, current)) if current.auth else {}
        if action == "remove":
            if user not in users:
                raise ConfigError(path, str(user), "no such user")
            del users[user]
        else:
            users[str(user)] = hash_password(host, password)
        raw["auth"] = {"users": path}
        actions: list[Action] = []
        if path.startswith(layout.AUTH_DIR + "/"):
            actions += plan_dir(host, layout.ETC, 0o700) + plan_dir(host, layout.AUTH_DIR, 0o700)
        return actions + plan_file(host, path, users_text(tuple(sorted(users.items()))), 0o600,
                                   secret=True, why="basic auth users")

    raise typer.Exit(change_app(name, change, json_out=json_out, source=f"auth {name}"))


def list_users(name: str, json_out: bool) -> int:
    require_root()
    desired = desired_state(local_host(), None, None)
    known_app(desired, name)
    current = desired.config.app(name)
    assert current is not None
    users = [u for u, _ in load_users(local_host(), current)]
    if json_out:
        print_json({"app": name, "auth": current.auth is not None, "users": users})
    else:
        out.print("\n".join(users) if users else
                                       f"{name}: no basic auth users")
    return EXIT_OK


# --------------------------------------------------------------------------- env


def checked_pair(source: str, key: str, value: str) -> tuple[str, str]:
    if not ENV_NAME_RE.fullmatch(key):
        raise ConfigError(source, key, "is not a valid environment variable name")
    problem = env_line_problem(key, value)
    if problem:
        raise ConfigError(source, key, problem)
    return key, value


@app.command()
def env(
    name: AppName,
    action: Annotated[str | None, typer.Argument(help="set, unset or import (none: list).",
                                                 show_default=False)] = None,
    arg: Annotated[str | None, typer.Argument(help="KEY (set, unset) or FILE (import).",
                                              show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """An app's environment: list the keys (values masked), `set KEY` (the value from stdin or a
    hidden prompt, never the command line), `unset KEY`, or `import FILE` (KEY=VALUE lines).
    Each change reloads the app gracefully and health-checks it.

    Example: fleet env shop set API_TOKEN   (asks for the value; or pipe it on stdin)
    """
    if action is None:
        raise typer.Exit(list_env(name, json_out))
    if action not in ("set", "unset", "import") or arg is None:
        raise ConfigError("env", action, "expected set KEY, unset KEY or import FILE")
    pairs: dict[str, str] = {}
    if action == "set":
        key = checked_pair("env", arg, "")[0]
        pairs = dict([checked_pair("stdin", key, read_secret(key, sys.stdin))])
    elif action == "import":
        pairs = dict(parse_env_file(arg, read_input(Path(arg))))
    else:
        checked_pair("env", arg, "")

    def change(_host: Host, _desired: Desired, raw: dict[str, Any]) -> list[Action]:
        table = dict(raw.get("env") or {})
        if action == "unset":
            if arg not in table:
                raise ConfigError(f"{layout.APPS_DIR}/{name}.toml", f"env.{arg}",
                                  "is not set (env_file keys are changed in that file)")
            del table[arg]
        table.update(pairs)
        raw["env"] = table
        return []

    raise typer.Exit(change_app(name, change, json_out=json_out, source=f"env {name}"))


def list_env(name: str, json_out: bool) -> int:
    require_root()
    host = local_host()
    desired = desired_state(host, None, None)
    known_app(desired, name)
    current = desired.config.app(name)
    assert current is not None
    rows = [(key, "env_file") for key, _ in load_env_file(host, current)
            if key not in dict(current.env)]
    rows += [(key, "env") for key, _ in current.env]
    rows.sort()
    if json_out:
        print_json({"app": name, "env": {key: {"value": MASK, "from": source}
                                         for key, source in rows}})
        return EXIT_OK
    table = Table("key", "value", "from", box=None)
    for key, source in rows:
        table.add_row(key, MASK, source)
    out.print(table if rows else f"{name}: no environment variables")
    return EXIT_OK
