"""An app's basic-auth users: the htpasswd file `auth.users` names (written by `fleet auth`).

Like an env_file it holds secrets (password hashes): it must be a root-owned file nobody else
can read, or fleet refuses it. nginx reads a copy fleet writes for its group only.
Errors name the file, the key and the line, never a hash.
"""

from __future__ import annotations

import re

from fleet.config.settings import AppConfig, Config, as_app
from fleet.errors import ConfigError
from fleet.host.files import require_file
from fleet.host.machine import Host

USER_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}")
# A crypt(3) string or one of nginx's own schemes: printable, no ':' or whitespace.
HASH_RE = re.compile(r"(\$(?:6|5|apr1|2[aby]|y)\$|\{(?:SHA|SSHA)\})[!-9;-~]{1,200}")

Users = tuple[tuple[str, str], ...]


def parse_users(path: str, text: str, key: str = "auth.users") -> Users:
    """USER:HASH lines; blank lines and '#' comments skipped."""
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not USER_RE.fullmatch(user):
            raise ConfigError(path, f"{key} line {number}",
                              "expected USER:HASH (user: letters, digits and . _ @ -)")
        if not HASH_RE.fullmatch(hashed):
            raise ConfigError(path, f"{key} line {number} ({user})",
                              "is not a password hash nginx verifies (use `fleet auth NAME "
                              "add USER`: SHA-512 crypt)")
        users[user] = hashed
    return tuple(sorted(users.items()))


def users_text(users: Users) -> bytes:
    return "".join(f"{user}:{hashed}\n" for user, hashed in users).encode()


def load_users(host: Host, app: AppConfig) -> Users:
    """The app's users, after checking the file is root-only."""
    if app.auth is None:
        return ()
    path = app.auth.users
    key = f"apps.{app.name}.auth.users"
    state = require_file(host, path, key)
    if state.owner != "root" or state.mode & 0o077:
        raise ConfigError(path, key, "must be owned by root and readable by nobody else "
                                     f"(chmod 600; it is {state.owner} {state.mode:04o})")
    try:
        text = (host.read(path) or b"").decode()
    except UnicodeDecodeError:
        raise ConfigError(path, key, "is not UTF-8 text") from None
    return parse_users(path, text, key)


def check_auth_files(host: Host, config: Config) -> None:
    """Refuse (exit 2, nothing touched) when any app's htpasswd file is missing, unsafe or bad."""
    for app in (*config.apps, *(as_app(f) for f in config.front)):
        load_users(host, app)
