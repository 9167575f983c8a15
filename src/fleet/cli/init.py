"""`fleet init`: a commented example fleet.toml, so nobody starts from a blank page."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from fleet.errors import ConfigError
from fleet.host.render import render

from fleet.cli.common import app  # isort: skip


def example_config() -> bytes:
    """Every key with its default (optional ones commented out); parses as a valid config."""
    return render("init/fleet.toml")


@app.command()
def init(
    path: Annotated[Path, typer.Argument(
        help="Where to write it ('-' prints it instead).")] = Path("fleet.toml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented example fleet.toml that documents every key and its default.

    Example: fleet init && fleet plan fleet.toml
    """
    content = example_config()
    if str(path) == "-":
        sys.stdout.buffer.write(content)
        sys.stdout.flush()
        return
    if path.is_dir():
        raise ConfigError(str(path), "", "is a directory: give a file name")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        # 0600: the file will hold the apps' env values, which are secrets.
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigError(str(path), "", "already exists (--force overwrites it)") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot write: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    print(f"Wrote {path}: edit [apps.hello], then run: fleet plan {path}")
