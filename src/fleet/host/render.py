"""Render templates/ and systemd/: the only place fleet's config text lives."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2


def data_dir(name: str) -> Path:
    """The installed copy (wheel, zipapp), or the source tree's top-level directory."""
    packaged = Path(__file__).parents[1] / "_data" / name
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / name


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    loader = jinja2.ChoiceLoader([
        jinja2.FileSystemLoader(str(data_dir("templates"))),
        jinja2.PrefixLoader({"systemd": jinja2.FileSystemLoader(str(data_dir("systemd")))}),
    ])
    return jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(template: str, **context: Any) -> bytes:
    return environment().get_template(template).render(**context).encode()
