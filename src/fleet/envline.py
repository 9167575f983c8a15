"""How long an environment line uWSGI reads whole: one constant for env_file (envfile.py) and
the `env` table (config.py). No fleet imports, so config.py can use it without a cycle."""

from __future__ import annotations

# uWSGI reads the env file (`for-readline`) with fgets into a 1024-byte buffer (core/config.c):
# one byte goes to the NUL and one to the newline, so a `KEY=VALUE` line of more bytes than
# ENV_LINE_MAX is cut, and its rest becomes another variable. Shared with config.py's check
# of `env` values: refuse such a line rather than deliver half of it.
UWSGI_LINE_BUFFER = 1024
ENV_LINE_MAX = UWSGI_LINE_BUFFER - 2


def env_line_length(key: str, value: str) -> int:
    """Bytes of the line `KEY=VALUE` as the app's env file holds it (without its newline)."""
    return len(f"{key}={value}".encode())


def env_line_problem(key: str, value: str) -> str | None:
    """Why uWSGI would not read this pair whole, or None. Never quotes the value."""
    length = env_line_length(key, value)
    if length <= ENV_LINE_MAX:
        return None
    return (f"{key}=VALUE is {length} bytes; uWSGI reads env lines of at most {ENV_LINE_MAX} "
            "bytes whole (a longer one is cut and its rest becomes another variable)")
