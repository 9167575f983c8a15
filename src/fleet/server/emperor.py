"""The Emperor's own view of its vassals, from its stats socket."""

from __future__ import annotations

from typing import Any

from fleet.host import layout
from fleet.host.machine import Host
from fleet.host.poll import wait_until
from fleet.server.status import read_stats


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
