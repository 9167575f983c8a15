"""A small TOML writer for fleet's stored state (strings, numbers, booleans, arrays, tables)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def key(name: str) -> str:
    return name if BARE_KEY.fullmatch(name) else value(name)


def value(item: Any) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, (int, float)):
        return repr(item)
    if isinstance(item, str):
        return json.dumps(item, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(item, list):
        return "[" + ", ".join(value(v) for v in item) + "]"
    if isinstance(item, Mapping):
        return "{ " + ", ".join(f"{key(k)} = {value(v)}" for k, v in item.items()) + " }"
    raise TypeError(f"cannot write {type(item).__name__} as TOML")


def dumps(data: Mapping[str, Any], prefix: str = "") -> str:
    """Scalars first, then one [table] per nested mapping, in the input's order."""
    lines = [f"{key(k)} = {value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in data.items():
        if isinstance(v, Mapping):
            name = f"{prefix}.{key(k)}" if prefix else key(k)
            body = dumps(v, name)
            has_scalars = any(not isinstance(x, Mapping) for x in v.values())
            header = f"[{name}]\n" if has_scalars or not v else ""
            out += ("\n" if out else "") + header + body
    return out
