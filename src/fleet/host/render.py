"""Render templates/ and systemd/: the only place fleet's config text lives.

jinja2 is imported when the first template is rendered, not with this module: the commands
that only read the server (status, check, logs) import the modules that render but render
nothing, and jinja2 is a large share of their start-up time.

Every run renders the files it compares (a no-op apply too), and compiling a template is
most of its cost: the zipapp carries its templates compiled (build.py calls
`compile_templates` into `_data/compiled`, compiled from the same files in the same build,
and shiv byte-compiles them with the rest), so a run only imports them. A source checkout
has no compiled copy and compiles as it renders. A build also remembers what it rendered
(render_cache.py): a run whose contexts are all as before renders nothing, imports no jinja2.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet.host import render_cache

if TYPE_CHECKING:
    import jinja2


COMPILED = "compiled"  # under _data: the templates as Python modules (zipapp only)


def data_dir(name: str) -> Path:
    """The installed copy (wheel, zipapp), or the source tree's top-level directory."""
    packaged = Path(__file__).parents[1] / "_data" / name
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / name


def compiled_dir() -> Path | None:
    """The templates compiled at build time, when this is a build that has them."""
    path = Path(__file__).parents[1] / "_data" / COMPILED
    return path if path.is_dir() else None


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return make_environment(compiled_dir())


def make_environment(compiled: Path | None) -> jinja2.Environment:
    """The one template environment; with `compiled`, templates found there are loaded as
    the modules build.py compiled them into, the others from their files."""
    import jinja2  # deferred to the first render (see the module docstring)

    sources: list[jinja2.BaseLoader] = [
        jinja2.FileSystemLoader(str(data_dir("templates"))),
        jinja2.PrefixLoader({"systemd": jinja2.FileSystemLoader(str(data_dir("systemd")))}),
    ]
    if compiled is not None:
        sources.insert(0, jinja2.ModuleLoader(str(compiled)))
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        loader=jinja2.ChoiceLoader(sources),
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
    """The template's text: what this build rendered for the same context before, when the
    render cache knows it (render_cache.py), so that a run with nothing new needs no jinja2."""
    cache = render_cache.current()
    digest = None if cache is None else render_cache.key(template, context)
    if digest is not None:
        known = cache.get(digest, template)
        if known is not None:
            return known
    content = environment().get_template(template).render(**context).encode()
    if digest is not None:
        cache.put(digest, content, template)
    return content


def compile_templates(target: str) -> None:
    """Compile every template into `target` as Python modules (build.py, for the zipapp);
    a file that is no template (a script copied as it is) fails to compile and is skipped,
    and is read from its file when asked for."""
    make_environment(None).compile_templates(target, zip=None, ignore_errors=True)
