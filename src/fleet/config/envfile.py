"""An app's environment: its `env` table merged over the pairs of its optional `env_file`.

The env_file holds secrets the operator keeps out of fleet's config: it must be a root-owned
file nobody else can read, or fleet refuses it (a readable secrets file is already leaked).
Errors name the file, the key and the line, never a value.
"""

from __future__ import annotations

from fleet.config.limits import env_line_problem
from fleet.config.parse import ENV_NAME_RE
from fleet.config.settings import AppConfig, Config
from fleet.errors import ConfigError
from fleet.host.files import require_file
from fleet.host.machine import Host

Pairs = tuple[tuple[str, str], ...]

def parse_env_file(path: str, text: str) -> Pairs:
    """KEY=VALUE lines; blank lines and lines starting with '#' are skipped. Values are kept
    verbatim (no quotes, no expansion): a secret may contain anything but a newline."""
    pairs: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = line.lstrip().partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(path, f"line {number}", "expected KEY=VALUE")
        if not ENV_NAME_RE.fullmatch(key):
            raise ConfigError(path, f"line {number}",
                              "is not a valid environment variable name before '='")
        if "\x00" in value:
            raise ConfigError(path, f"line {number}", "contains a NUL byte")
        too_long = env_line_problem(key, value)
        if too_long:
            raise ConfigError(path, f"line {number} ({key})", too_long)
        pairs[key] = value
    return tuple(sorted(pairs.items()))


def load_env_file(host: Host, app: AppConfig) -> Pairs:
    """The env_file's pairs, after checking it is a root-only regular file."""
    if app.env_file is None:
        return ()
    path = app.env_file
    key = f"apps.{app.name}.env_file"
    state = require_file(host, path, key)
    if state.owner != "root" or state.mode & 0o077:
        raise ConfigError(path, key, "must be owned by root and readable by nobody else "
                                     f"(chmod 600; it is {state.owner} {state.mode:04o})")
    data = host.read(path) or b""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ConfigError(path, key, "is not UTF-8 text") from None
    return parse_env_file(path, text)


def app_environment(host: Host, app: AppConfig) -> Pairs:
    """What the app's process sees: env_file pairs, overridden by the `env` table."""
    merged = dict(load_env_file(host, app))
    merged.update(app.env)
    return tuple(sorted(merged.items()))


def check_env_files(host: Host, config: Config) -> None:
    """Refuse (exit 2, nothing touched) when any app's env_file is missing, unsafe or bad."""
    for app in config.apps:
        load_env_file(host, app)
