"""Per-app release history in /var/lib/fleet/apps/NAME.json: what was built, deployed, failed,
and whether a rollback pinned a release."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from fleet.host.actions import Action
from fleet.host.files import plan_file
from fleet.host.layout import AppPaths
from fleet.host.machine import Host


@dataclass
class ReleaseRecord:
    id: str
    commit: str
    venv: str = ""
    built: float = 0.0
    deployed: float | None = None
    failed: str | None = None


@dataclass
class History:
    app: str
    releases: dict[str, ReleaseRecord] = field(default_factory=dict)
    pin: dict[str, str | None] | None = None  # {"commit": ..., "ref": ...} set by a rollback

    @classmethod
    def load(cls, host: Host, app: str) -> History:
        raw = host.read(AppPaths(app).state_file)
        if raw is None:
            return cls(app)
        try:
            data = json.loads(raw)
            releases = {r["id"]: ReleaseRecord(**r) for r in data.get("releases", [])}
            return cls(app, releases, data.get("pin"))
        except (ValueError, TypeError, KeyError):
            return cls(app)  # a damaged history only loses the listing, never the releases

    def to_bytes(self) -> bytes:
        ordered = sorted(self.releases.values(), key=lambda r: (r.deployed or r.built, r.id))
        data = {"releases": [asdict(r) for r in ordered], "pin": self.pin}
        return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()

    def write_action(self, host: Host) -> list[Action]:
        return plan_file(host, AppPaths(self.app).state_file, self.to_bytes(), 0o600,
                         why="release history")

    def record(self, release: str, commit: str, **changes: object) -> ReleaseRecord:
        entry = self.releases.setdefault(release, ReleaseRecord(release, commit))
        for key, value in changes.items():
            setattr(entry, key, value)
        return entry

    def deployed_order(self) -> list[ReleaseRecord]:
        """Releases that took traffic, oldest first."""
        return sorted((r for r in self.releases.values() if r.deployed),
                      key=lambda r: r.deployed or 0.0)

    def previous(self, live: str | None) -> ReleaseRecord | None:
        """The release that served before the live one (the default rollback target): another
        commit, not the live commit's twin (same code, served again for a new environment)."""
        live_commit = self.releases[live].commit if live in self.releases else None
        earlier = [r for r in self.deployed_order()
                   if r.id != live and not r.failed and r.commit != live_commit]
        return earlier[-1] if earlier else None

    def to_prune(self, keep: int, live: str | None, existing: list[str]) -> list[str]:
        """Release directories beyond the newest `keep` (never the live one)."""
        def age(release: str) -> float:
            entry = self.releases.get(release)
            return (entry.deployed or entry.built) if entry else 0.0

        newest_first = sorted(existing, key=age, reverse=True)
        kept = set(newest_first[:keep]) | ({live} if live else set())
        return [r for r in existing if r not in kept]


@dataclass(frozen=True)
class ReleaseRow:
    """One kept (or pruned) release as `fleet releases` lists it; fields in --json's order."""

    release: str
    commit: str
    built: float
    deployed: float | None
    live: bool
    failed: str | None
    kept: bool  # its directory is still on disk (else pruned: only the record remains)
    pinned: bool  # a rollback holds the app at this commit


@dataclass(frozen=True)
class ReleaseListing:
    """An app's release history, oldest first, with the live release named."""

    app: str
    live: str | None
    releases: list[ReleaseRow]

    def to_json(self) -> dict[str, object]:
        return {"app": self.app, "live": self.live,
                "releases": [asdict(row) for row in self.releases]}


def release_listing(host: Host, history: History, live: str | None) -> ReleaseListing:
    """The history's releases in the order they served (built, for those that never did)."""
    on_disk = {r for r in host.listdir(AppPaths(history.app).releases) if not r.startswith(".")}
    pinned = history.pin.get("commit") if history.pin else None
    rows = [ReleaseRow(release=record.id, commit=record.commit, built=record.built,
                       deployed=record.deployed, live=record.id == live, failed=record.failed,
                       kept=record.id in on_disk,
                       pinned=bool(history.pin and pinned == record.commit))
            for record in sorted(history.releases.values(),
                                 key=lambda r: (r.deployed or r.built))]
    return ReleaseListing(history.app, live, rows)
