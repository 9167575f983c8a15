"""Reading one TOML table with checks: every problem is one ConfigError naming file and key."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fleet.errors import ConfigError


class Checker:
    """Reads one TOML table, remembering which keys were used so unknown ones can be named."""

    def __init__(self, source: str, prefix: str, table: Any) -> None:
        self.source = source
        self.prefix = prefix
        if not isinstance(table, Mapping):
            self.fail("", f"expected a table, got {type_name(table)}")
        self.table = table

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, problem: str) -> None:
        raise ConfigError(self.source, self.key(name) if name else self.prefix, problem)

    def check_known(self, known: list[str]) -> None:
        for name in self.table:
            if name not in known:
                import difflib  # only for an error's hint

                close = difflib.get_close_matches(str(name), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(str(name), f"unknown key{hint}")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None,
            required: bool = False) -> Any:
        if name not in self.table:
            if required:
                self.fail(name, "required key is missing")
            return default
        value = self.table[name]
        # TOML booleans are ints in Python; never accept one for the other.
        if isinstance(value, bool) and bool not in _as_tuple(kind):
            self.fail(name, f"expected {kind_name(kind)}, got boolean")
        if not isinstance(value, kind):
            self.fail(name, f"expected {kind_name(kind)}, got {type_name(value)}")
        return value

    def get_str(self, name: str, default: str | None = None, required: bool = False,
                pattern: re.Pattern[str] | None = None, what: str = "") -> Any:
        value = self.get(name, str, default, required)
        if name in self.table and pattern is not None and not pattern.fullmatch(value):
            self.fail(name, f"{value!r} is not {what}")
        if isinstance(value, str) and ("\n" in value or "\x00" in value):
            self.fail(name, "must be a single line")
        return value

    def get_str_list(self, name: str, default: tuple[str, ...] = (),
                     required: bool = False) -> tuple[str, ...]:
        value = self.get(name, list, None, required)
        if value is None:
            return default
        for index, item in enumerate(value):
            if not isinstance(item, str):
                self.fail(f"{name}[{index}]", f"expected a string, got {type_name(item)}")
            if "\n" in item or "\x00" in item:
                self.fail(f"{name}[{index}]", "must be a single line")
        return tuple(value)

    def get_int(self, name: str, default: int, low: int, high: int) -> int:
        value = self.get(name, int, default)
        if not low <= value <= high:
            self.fail(name, f"must be between {low} and {high}, got {value}")
        return value

    def sub(self, name: str) -> Checker:
        return Checker(self.source, self.key(name), self.table.get(name, {}))


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def type_name(value: Any) -> str:
    return {
        str: "string", int: "integer", float: "float", bool: "boolean",
        list: "array", dict: "table",
    }.get(type(value), type(value).__name__)


def kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "an array", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))
