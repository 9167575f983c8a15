"""Version and build id (the zipapp's shiv build id, or "source" when run from a checkout)."""

from __future__ import annotations

import json
import sys
import zipfile

from fleet import __version__


def build_id() -> str:
    """shiv records its build id in environment.json at the root of the zipapp."""
    archive = sys.argv[0] if sys.argv and sys.argv[0].endswith((".pyz", "fleet")) else ""
    try:
        with zipfile.ZipFile(archive) as zf:
            return str(json.loads(zf.read("environment.json")).get("build_id", "unknown"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return "source"


def version_line() -> str:
    return f"fleet {__version__} (build {build_id()})"
