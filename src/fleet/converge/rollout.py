"""One app's rollout: the decisions of a run, shared by prepare, deploy, the TCP switch and the
front, and reported per app in --json."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.masking import mask_urls


@dataclass
class Rollout:
    """What one app's run decided: which release serves, and how it gets there."""

    name: str
    commit: str | None = None
    release: str | None = None  # the release that should serve after this run
    live: str | None = None  # the release serving before this run
    venv: str | None = None
    vassal: bytes | None = None
    env: bytes | None = None
    site: bytes | None = None
    previous_site: bytes | None = None  # the site before this run, to switch back to
    user_recreated: bool = False  # the app's user had been deleted and was created again
    restart: str | None = None  # why the live vassal must be started anew, not reloaded
    site_file: str | None = None  # where the app's nginx file lives (fleet.converge.sites)
    stopped_live: bytes | None = None  # TCP app: ini of the live vassal stopped for the new one
    swapped: bool = False  # a new release passed its gate and nginx must switch to it
    vassal_written: float | None = None  # in-place reload: mtime of the rewritten ini
    health: str = "skipped"
    failed: bool = False
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self, changed: bool) -> dict[str, object]:
        data: dict[str, object] = {"commit": self.commit, "release": self.release,
                                   "health": self.health, "changed": changed}
        if self.error:
            data["error"] = mask_urls(self.error)
        return data
