"""Limits fleet enforces on its inputs, shared by config validation and the server-side checks.

Kept in a module of its own (no imports) so parse.py, envfile.py and the checks on the server
can all use them without import cycles.
"""

from __future__ import annotations

# uWSGI reads ini and `for-readline` files with fgets() into a 1024-byte buffer
# (core/config.c): at most 1023 bytes per read, the newline included. A longer line is split,
# not refused, and its tail becomes another line (another variable: `...LD_PRELOAD=/srv/...`).
# So the longest `KEY=VALUE` (UTF-8 bytes, without the newline) uWSGI reads whole is 1022.
ENV_LINE_MAX = 1022

# An operator's TOML file: larger than this is a mistake, not a config.
TOML_MAX_BYTES = 1024 * 1024
# Tables and arrays nested deeper than this: fleet's own schema needs 4 levels; the parser
# recurses per level, so thousands of levels raise RecursionError instead of a one-line error.
TOML_MAX_DEPTH = 32


def env_line_problem(key: str, value: str) -> str | None:
    """Why uWSGI would not read the line `KEY=VALUE` whole, or None. Never quotes the value:
    it is a secret. Used for `env` (parse.py) and `env_file` lines (envfile.py) alike."""
    length = len(f"{key}={value}".encode())
    if length <= ENV_LINE_MAX:
        return None
    return (f"KEY=VALUE is {length} bytes; uWSGI reads at most {ENV_LINE_MAX} per line "
            "(a longer one is cut and its rest becomes another variable)")
