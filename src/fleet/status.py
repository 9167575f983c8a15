"""What is running, read from uWSGI's own stats sockets, systemd and nginx (no config parsing)."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any

from fleet import layout
from fleet.config import Config
from fleet.health import judge, probe
from fleet.host import Host
from fleet.layout import AppPaths
from fleet.resources.services import is_active


def read_stats(path: str, timeout: float = 2.0) -> dict[str, Any]:
    """uWSGI's stats server writes one JSON document and closes the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return json.loads(b"".join(chunks).decode(errors="replace"))


@dataclass
class WorkerInfo:
    pid: int
    status: str
    requests: int
    rss: int
    respawns: int


def parse_workers(stats: dict[str, Any]) -> list[WorkerInfo]:
    return [WorkerInfo(int(w.get("pid", 0)), str(w.get("status", "?")),
                       int(w.get("requests", 0)), int(w.get("rss", 0)),
                       int(w.get("respawn_count", 0)))
            for w in stats.get("workers", [])]


@dataclass
class AppStatus:
    name: str
    commit: str | None
    domains: list[str]
    state: str  # running, down
    workers: list[WorkerInfo] = field(default_factory=list)
    health: str = "unknown"
    problem: str | None = None

    def to_json(self) -> dict[str, object]:
        busy = sum(1 for w in self.workers if w.status == "busy")
        return {
            "commit": self.commit, "domains": self.domains, "state": self.state,
            "health": self.health, "problem": self.problem,
            "workers": {"total": len(self.workers), "busy": busy,
                        "idle": len(self.workers) - busy,
                        "requests": sum(w.requests for w in self.workers),
                        "rss": sum(w.rss for w in self.workers),
                        "respawns": sum(w.respawns for w in self.workers),
                        "pids": [w.pid for w in self.workers]},
        }


def app_status(host: Host, config: Config, name: str) -> AppStatus:
    app = config.app(name)
    assert app is not None
    paths = AppPaths(name)
    link = host.state(paths.current)
    commit = link.target.rsplit("/", 1)[-1] if link and link.kind == "link" else None
    result = AppStatus(name, commit, list(app.domains), "down")
    try:
        result.workers = parse_workers(read_stats(paths.stats))
        result.state = "running"
    except (OSError, ValueError) as exc:
        result.problem = f"vassal not answering on its stats socket ({exc.__class__.__name__})"
    try:
        why = judge(app, probe(app.domains[0], app.health.path, timeout=5))
        result.health = "failed" if why else "passed"
        if why:
            result.problem = result.problem or why
    except OSError as exc:
        result.health = "failed"
        result.problem = result.problem or f"no response through nginx ({exc})"
    return result


def emperor_status(host: Host) -> dict[str, object]:
    data: dict[str, object] = {"active": is_active(host, layout.EMPEROR_UNIT_NAME)}
    try:
        stats = read_stats(layout.EMPEROR_STATS)
        vassals = [v for v in stats.get("vassals", [])]
        data["vassals"] = [{"id": v.get("id"), "pid": v.get("pid"), "ready": v.get("ready"),
                            "respawns": v.get("respawns"), "cursed": v.get("cursed")}
                           for v in vassals]
        data["blacklist"] = [b.get("id") for b in stats.get("blacklist", [])]
    except (OSError, ValueError) as exc:
        data["problem"] = f"no Emperor stats ({exc.__class__.__name__})"
    return data


def server_status(host: Host, config: Config) -> dict[str, object]:
    return {
        "apps": {a.name: app_status(host, config, a.name).to_json() for a in config.apps},
        "emperor": emperor_status(host),
        "nginx": {"active": is_active(host, "nginx")},
    }
