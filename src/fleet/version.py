"""Version and build id: build.py bakes the id into the zipapp; a checkout says "source"."""

from __future__ import annotations

from fleet import __version__


def build_id() -> str:
    from importlib import resources  # here: every command imports this module, few ask

    try:
        return resources.files("fleet").joinpath("_build_id.txt").read_text("ascii").strip()
    except OSError:
        return "source"


def version_line() -> str:
    return f"fleet {__version__} (build {build_id()})"
