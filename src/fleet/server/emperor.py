"""The Emperor's own view of its vassals, from its stats socket (and a vassal ini's values).

Kept apart from server/status.py, which gathers everything `fleet status` shows: apply and
deploy need only this, and a no-op apply should not import the rest."""

from __future__ import annotations

from typing import Any

from fleet.errors import AnswerError
from fleet.host import layout
from fleet.host.bounded import STATS_CAP, parse_json
from fleet.host.machine import Host
from fleet.host.poll import wait_until


def read_stats(host: Host, path: str, timeout: float = 2.0) -> dict[str, Any]:
    """uWSGI's stats server writes one JSON document and closes the connection. The socket's
    directory is writable by the app, so the answer may be anyone's: it is read within
    `timeout` and STATS_CAP bytes, and anything but a JSON object is an AnswerError."""
    data = parse_json(host.ask_socket(path, timeout=timeout, cap=STATS_CAP))
    if not isinstance(data, dict):
        raise AnswerError("stats answer unreadable (not a JSON object)")
    return data


def ini_value(text: str, key: str) -> str | None:
    """The last `key = value` of an ini (uWSGI lets a later line win)."""
    value = None
    for line in text.splitlines():
        name, sep, rest = line.partition("=")
        if sep and name.strip() == key:
            value = rest.strip()
    return value


def is_sleeping(host: Host, filename: str, entry: dict[str, Any] | None) -> bool:
    """An on-demand vassal (a .socket file beside its ini) without a process: the Emperor
    holds its socket and starts it on the next request. Not a failure."""
    if host.state(f"{layout.VASSALS_DIR}/{filename}{layout.ON_DEMAND_EXTENSION}") is None:
        return False
    return entry is None or int(entry.get("pid") or 0) <= 0


def read_emperor(host: Host, path: str = layout.EMPEROR_STATS) -> dict[str, Any] | None:
    try:
        return read_stats(host, path)
    except (OSError, ValueError):
        return None


def vassal_entry(stats: dict[str, Any], vassal_id: str) -> dict[str, Any] | None:
    return next((v for v in stats.get("vassals", []) if v.get("id") == vassal_id), None)


def has_loaded(stats: dict[str, Any], vassal_id: str, mtime: float) -> bool:
    """True once the Emperor has (re)started the vassal for an ini at least this new.

    It rescans every 3 s and records the ini's mtime (whole seconds) when it acts on it.
    """
    entry = vassal_entry(stats, vassal_id)
    return entry is not None and int(entry.get("last_mod", 0)) >= int(mtime)


def wait_for_vassal(host: Host, vassal_id: str, mtime: float, timeout: float,
                    interval: float = 0.25, stats_path: str = layout.EMPEROR_STATS) -> bool:
    def loaded() -> bool:
        try:
            return has_loaded(read_stats(host, stats_path), vassal_id, mtime)
        except (OSError, ValueError):
            return False  # the Emperor may be (re)starting

    return wait_until(loaded, timeout=timeout, interval=interval)


def wait_until_gone(host: Host, vassal_id: str, timeout: float = 30.0, interval: float = 0.25,
                    stats_path: str = layout.EMPEROR_STATS) -> bool:
    """Wait until the Emperor no longer lists a vassal whose ini was removed.

    Re-creating an ini of the same name (a rollback to a release that just left) before the
    old vassal has exited would let the dying one answer the health gate, and its vacuum
    unlink the new one's socket.
    """
    def gone() -> bool:
        try:
            return vassal_entry(read_stats(host, stats_path), vassal_id) is None
        except (OSError, ValueError):
            return True  # no Emperor running: no vassal either

    return wait_until(gone, timeout=timeout, interval=interval)
