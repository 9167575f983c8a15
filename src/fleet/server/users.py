"""One system user and group per app: its processes, and nothing else, run as it.

fleet only ever runs an app as an account it created for that app (marked by the comment
"fleet app NAME"; accounts of earlier versions are recognized by their home /srv/fleet/NAME and
nologin shell). Any other account (root, www-data, nobody, postgres, another app's user) would
hand the app that account's files and sockets: it is refused before anything changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.config.settings import AppConfig, Config
from fleet.errors import ConfigError
from fleet.host import layout
from fleet.host.actions import Action, Run
from fleet.host.layout import AppPaths
from fleet.host.machine import Host

NOLOGIN = "/usr/sbin/nologin"


def fleet_comment(app_name: str) -> str:
    return f"fleet app {app_name}"


@dataclass(frozen=True)
class Account:
    """One line of `getent passwd`."""

    name: str
    uid: int
    gid: int
    comment: str
    home: str
    shell: str


@dataclass(frozen=True)
class Group:
    """One line of `getent group`."""

    name: str
    gid: int
    members: tuple[str, ...]


def parse_account(line: str) -> Account | None:
    """One `getent passwd` line (None: not one)."""
    fields = line.strip().split(":")
    if len(fields) < 7 or not fields[2].isdigit() or not fields[3].isdigit():
        return None
    return Account(fields[0], int(fields[2]), int(fields[3]), fields[4], fields[5], fields[6])


def account(host: Host, name: str) -> Account | None:
    result = host.run(["getent", "passwd", name], check=False)
    return parse_account(result.stdout) if result.ok else None


def accounts(host: Host, names: list[str]) -> dict[str, Account | None]:
    """The accounts of these names from one `getent passwd` listing, not one process per name
    (`fleet status` on many apps); a name the listing lacks is asked for on its own: an account
    source that does not enumerate (LDAP) may still know it."""
    if not names:
        return {}
    result = host.run(["getent", "passwd"], check=False)
    listed = {}
    for line in result.stdout.splitlines() if result.ok else []:
        found = parse_account(line)
        if found is not None:
            listed.setdefault(found.name, found)  # the first source wins, as getent NAME
    return {name: listed[name] if name in listed else account(host, name)
            for name in dict.fromkeys(names)}


def group(host: Host, name: str) -> Group | None:
    result = host.run(["getent", "group", name], check=False)
    fields = result.stdout.strip().split(":")
    if not result.ok or len(fields) < 4 or not fields[2].isdigit():
        return None
    return Group(fields[0], int(fields[2]), tuple(m for m in fields[3].split(",") if m))


def user_exists(host: Host, name: str) -> bool:
    return host.run(["getent", "passwd", name], check=False).ok


def is_fleet_account(found: Account, app_name: str) -> bool:
    """Created by fleet for this app: by its comment, or (earlier versions) its home+shell."""
    if found.uid == 0:
        return False
    if found.comment == fleet_comment(app_name):
        return True
    legacy = found.home == AppPaths(app_name).home and found.shell.endswith("/nologin")
    return legacy and not found.comment.startswith("fleet app ")


def identity_problem(host: Host, app: AppConfig) -> str | None:
    """Why the app may not run as its user, or None. Reads the server, changes nothing."""
    name = app.owner
    if name == "root":
        return "apps never run as root"
    found = account(host, name)
    own_group = group(host, name)
    if found is not None:
        if found.uid == 0:
            return f"account {name} has uid 0: apps never run as root"
        if not is_fleet_account(found, app.name):
            owner = found.comment.removeprefix("fleet app ") \
                if found.comment.startswith("fleet app ") else None
            return (f"account {name} belongs to app {owner}" if owner else
                    f"account {name} exists and was not created by fleet for app {app.name}")
        if own_group is None or own_group.gid != found.gid:
            return f"account {name}'s primary group is not its own group {name}"
    elif own_group is not None:
        return f"group {name} already exists: the app would join it"
    if own_group is not None and set(own_group.members) - {name}:
        return f"group {name} has other members ({', '.join(own_group.members)})"
    nginx = group(host, layout.NGINX_USER)
    if nginx is not None and (name in nginx.members or nginx.gid == (found.gid if found else -1)):
        return f"account {name} is in group {layout.NGINX_USER}"
    return None


def check_identities(host: Host, config: Config) -> None:
    """Refuse (exit 2, one line, nothing touched) any app whose user is not fleet's own."""
    for app in config.apps:
        problem = identity_problem(host, app)
        if problem:
            key = f"apps.{app.name}.user" if app.owner != app.name else f"apps.{app.name}"
            raise ConfigError(AppPaths(app.name).config_file, key, problem)


def creates_user(actions: list[Action]) -> bool:
    """Whether the plan makes a new account (new ids: the app's files must be given back),
    rather than only marking an earlier fleet's account."""
    return any(isinstance(a, Run) and a.argv[0] == "useradd" for a in actions)


def plan_user(host: Host, name: str, home: str, app_name: str | None = None) -> list[Action]:
    """Create the app's user and group, marked as fleet's; an account of an earlier fleet
    (no comment) gets the mark. check_identities has already refused any other account."""
    comment = fleet_comment(app_name or name)
    found = account(host, name)
    if found is not None:
        if found.comment == comment:
            return []
        return [Run(argv=("usermod", "--comment", comment, name),
                    why=f"mark user {name} as fleet's")]
    return [Run(argv=("useradd", "--system", "--user-group", "--home-dir", home, "--no-create-home",
                 "--comment", comment, "--shell", NOLOGIN, name), why=f"create user {name}")]
