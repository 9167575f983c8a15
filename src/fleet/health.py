"""Health checks through nginx, with the app's own Host header, as a visitor would see it."""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass

from fleet.config import AppConfig


@dataclass(frozen=True)
class HealthResult:
    passed: bool
    status: int | None
    detail: str
    elapsed: float


def probe(host_header: str, path: str, timeout: float = 5.0, address: str = "127.0.0.1",
          port: int = 80) -> tuple[int, str]:
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host_header, "User-Agent": "fleet-health"})
        response = conn.getresponse()
        return response.status, response.read(65536).decode(errors="replace")
    finally:
        conn.close()


def judge(app: AppConfig, status: int, body: str) -> str | None:
    """Why a response fails the app's health check, or None when it passes."""
    if not app.health.accepts(status):
        return f"HTTP {status}"
    if app.health.contains is not None and app.health.contains not in body:
        return f"HTTP {status} without {app.health.contains!r} in the body"
    return None


def check_app(app: AppConfig, *, timeout: float | None = None, interval: float = 0.5,
              clock: type[time] = time) -> HealthResult:
    """Retry until the check passes or the app's health timeout runs out."""
    deadline_after = app.health.timeout if timeout is None else timeout
    start = clock.monotonic()
    problem = "no attempt"
    status: int | None = None
    while True:
        try:
            status, body = probe(app.domains[0], app.health.path,
                                 timeout=min(5.0, deadline_after))
            problem = judge(app, status, body) or ""
            if not problem:
                return HealthResult(True, status, f"HTTP {status}", clock.monotonic() - start)
        except (OSError, http.client.HTTPException) as exc:
            status = None
            problem = f"no response ({exc.__class__.__name__}: {exc})"
        if clock.monotonic() - start + interval > deadline_after:
            return HealthResult(False, status, problem, clock.monotonic() - start)
        clock.sleep(interval)
