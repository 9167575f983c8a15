"""Per-app logs.

uWSGI: every vassal logs into the Emperor's journal (journald rotates it), each line tagged
`[NAME] ` (or `[NAME@RELEASE] `) by the vassal's log-encoder; the Emperor's own lines about a
vassal name its file. nginx: one access and one error log per app under /var/log/nginx, which
Debian's /etc/logrotate.d/nginx rotates with the rest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator

from fleet.host import layout
from fleet.host.layout import AppPaths, unit_owner
from fleet.host.machine import CLEAN_PATH, Host

NGINX_LOG_DIR = "/var/log/nginx"
ERROR_LINE = re.compile(r"(Error|Exception|error|GAME OVER|Traceback|unable to load)")


def prefix(name: str) -> str:
    return f"[{name}] "


def line_matcher(name: str) -> Callable[[str], str | None]:
    """What of a journal line belongs to the app: the vassal's own lines without their tag,
    or the Emperor's lines naming the app's vassal file; None for anything else."""
    tagged = re.compile(rf"^\[{re.escape(name)}(?:@(?P<release>[\w.-]+))?\] ")
    emperor = re.compile(rf"(?<![\w@.-]){re.escape(name)}(?:@[\w.-]+)?\.ini\b")

    def match(line: str) -> str | None:
        found = tagged.match(line)
        if found:
            rest = line[found.end():]
            return f"{found['release']}: {rest}" if found["release"] else rest
        if not line.startswith("[") or line.startswith(("[emperor]", "[uWSGI]")):
            return line if emperor.search(line) else None
        return None

    return match


def filter_app_lines(text: str | Iterable[str], name: str) -> list[str]:
    match = line_matcher(name)
    lines = text.splitlines() if isinstance(text, str) else text
    return [kept for line in lines if (kept := match(line)) is not None]


def unit_patterns(name: str, process: str | None = None, job: str | None = None) -> list[str]:
    """The journal units of an app: its vassals' lines are in the Emperor's; each worker
    instance and job has its own unit (fleet.server.units)."""
    paths = AppPaths(name)
    if process is not None:
        return [f"{paths.unit_prefix}worker.{process}@*"]
    if job is not None:
        return [f"{paths.unit_prefix}job.{job}.*"]
    return [layout.EMPEROR_UNIT_NAME, f"{paths.unit_prefix}worker.*", f"{paths.unit_prefix}job.*"]


def journal_argv(units: list[str], lines: int, follow: bool = False) -> list[str]:
    # Other apps' lines share the Emperor's journal: read far enough back to find `lines`.
    argv = ["journalctl", "--output", "json", "--no-pager", "--lines", str(max(lines * 20, 2000))]
    argv += [arg for unit in units for arg in ("--unit", unit)]
    return [*argv, "--follow"] if follow else argv


def message_text(value: object) -> str:
    """journald's MESSAGE: a string, or an array of bytes when it was not UTF-8."""
    if isinstance(value, list):
        return bytes(b for b in value if isinstance(b, int) and 0 <= b < 256).decode(
            errors="replace")
    return value if isinstance(value, str) else ""


def entry_matcher(name: str) -> Callable[[str], str | None]:
    """A journal entry (one JSON line) as `fleet logs` shows it: a vassal's line through
    line_matcher, a worker's prefixed `WORKER#N: `, a job's `job NAME: `; None if not the
    app's."""
    web = line_matcher(name)

    def match(line: str) -> str | None:
        try:
            entry = json.loads(line)
        except ValueError:
            return None
        if not isinstance(entry, dict):
            return None
        message = message_text(entry.get("MESSAGE")).rstrip("\n")
        unit = str(entry.get("_SYSTEMD_UNIT") or entry.get("UNIT") or "")
        owner = unit_owner(unit)
        if owner is not None and owner[0] == name:
            if owner[1] == "job":
                return f"job {owner[2]}: {message}"
            instance = unit.rsplit("@", 1)[-1].split(".", 1)[0] if "@" in unit else ""
            return f"{owner[2]}#{instance}: {message}" if instance else f"{owner[2]}: {message}"
        return web(message) if unit == layout.EMPEROR_UNIT_NAME else None

    return match


def filter_entries(text: str, name: str) -> list[str]:
    match = entry_matcher(name)
    return [kept for line in text.splitlines() if (kept := match(line)) is not None]


def app_log_tail(host: Host, name: str, lines: int = 20) -> str:
    """The app's web (vassal) log lines, for failure reports (empty when journald has none)."""
    result = host.run(journal_argv([layout.EMPEROR_UNIT_NAME], lines), check=False, timeout=30)
    return "\n".join(filter_entries(result.stdout, name)[-lines:])


def log_tail(host: Host, name: str, lines: int, units: list[str]) -> list[str]:
    """`fleet logs`: the app's last lines from these units, oldest first."""
    result = host.run(journal_argv(units, lines), check=False, timeout=30, env=JOURNAL_ENV)
    return filter_entries(result.stdout, name)[-lines:] if lines > 0 else []


def last_error(text: str) -> str | None:
    """The line of a log tail most likely to say why an app is down (its last error)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if ERROR_LINE.search(line)]
    picked = next((e for e in reversed(errors) if "GAME OVER" not in e), None)
    return (picked or (errors or lines or [None])[-1])


JOURNAL_ENV = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}


def last_cursor(text: str) -> str | None:
    """The journal cursor of the last entry of `--output json` text."""
    for line in reversed(text.splitlines()):
        try:
            cursor = json.loads(line).get("__CURSOR")
        except (ValueError, AttributeError):
            continue
        if isinstance(cursor, str):
            return cursor
    return None


def follow_journal(host: Host, name: str, lines: int,
                   units: list[str] | None = None) -> Iterator[str]:
    """The app's last `lines` lines, then each new one as it arrives (until interrupted).

    The backlog is read first and remembered by its journal cursor; following starts right
    after that cursor, so no line is lost or shown twice in between.
    """
    units = units or unit_patterns(name)
    result = host.run(journal_argv(units, lines), check=False, env=JOURNAL_ENV)
    yield from filter_entries(result.stdout, name)[-lines:] if lines > 0 else []
    cursor = last_cursor(result.stdout)
    since = [f"--after-cursor={cursor}"] if cursor else ["--lines", "0"]
    argv = ["journalctl", "--output", "json", "--no-pager", "--follow", *since]
    argv += [arg for unit in units for arg in ("--unit", unit)]
    match = entry_matcher(name)
    for line in host.follow(argv, env=JOURNAL_ENV):
        kept = match(line.rstrip("\n"))
        if kept is not None:
            yield kept


def nginx_logs(name: str) -> tuple[str, str]:
    """The app's nginx access and error logs (the site template names them)."""
    return (f"{NGINX_LOG_DIR}/fleet-{name}.access.log", f"{NGINX_LOG_DIR}/fleet-{name}.error.log")


def tail_file(host: Host, path: str, lines: int) -> list[str]:
    """The last lines of a (possibly large) log file, reading only its end."""
    return host.read_tail(path, lines).decode(errors="replace").splitlines()[-lines:] \
        if lines > 0 else []


def existing(host: Host, paths: Iterable[str]) -> list[str]:
    return [p for p in paths if (state := host.state(p)) is not None and state.kind == "file"]
