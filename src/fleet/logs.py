"""Per-app logs: vassal lines in the Emperor's journal carry an `[app] ` prefix."""

from __future__ import annotations

from fleet import layout
from fleet.host import Host


def prefix(name: str) -> str:
    return f"[{name}] "


def filter_app_lines(text: str, name: str) -> list[str]:
    tag = prefix(name)
    return [line[len(tag):] for line in text.splitlines() if line.startswith(tag)]


def journal_argv(name: str, lines: int, follow: bool = False) -> list[str]:
    argv = ["journalctl", "--unit", layout.EMPEROR_UNIT_NAME, "--output", "cat",
            "--no-pager", "--lines", str(max(lines * 20, 1000))]
    return [*argv, "--follow"] if follow else argv


def app_log_tail(host: Host, name: str, lines: int = 20) -> str:
    """The app's last log lines, for failure reports (empty when journald has none)."""
    result = host.run(journal_argv(name, lines), check=False, timeout=30)
    return "\n".join(filter_app_lines(result.stdout, name)[-lines:])
