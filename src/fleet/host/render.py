"""Render templates/ and systemd/: the only place fleet's config text lives.

jinja2 is imported when the first template is rendered, not with this module: the commands
that only read the server (status, check, logs) import the modules that render but render
nothing, and jinja2 is a large share of their start-up time.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2


def data_dir(name: str) -> Path:
    """The installed copy (wheel, zipapp), or the source tree's top-level directory."""
    packaged = Path(__file__).parents[1] / "_data" / name
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / name


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    import jinja2  # deferred to the first render (see the module docstring)

    loader = jinja2.ChoiceLoader([
        jinja2.FileSystemLoader(str(data_dir("templates"))),
        jinja2.PrefixLoader({"systemd": jinja2.FileSystemLoader(str(data_dir("systemd")))}),
    ])
    env = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["systemd_quote"] = systemd_quote
    env.filters["systemd_exec_quote"] = systemd_exec_quote
    return env


def systemd_quote(value: str) -> str:
    """The inside of a double-quoted value in a systemd unit or EnvironmentFile=: these
    four characters are the ones its parser takes a backslash before."""
    return "".join("\\" + c if c in '\\"`$' else c for c in value)


def systemd_exec_quote(value: str) -> str:
    """The inside of a double-quoted word of ExecStart=: systemd also expands `$NAME` and
    `%x` specifiers there, so `$` and `%` are doubled to stay literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return escaped.replace("$", "$$").replace("%", "%%")


def render(template: str, **context: Any) -> bytes:
    return environment().get_template(template).render(**context).encode()
