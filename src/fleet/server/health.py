"""Health checks through nginx, with the app's own Host header, as a visitor would see it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fleet.config.settings import AppConfig
from fleet.errors import AnswerError
from fleet.host.client import Reply, answer_errors, http_get
from fleet.host.poll import poll


@dataclass(frozen=True)
class HealthResult:
    passed: bool
    status: int | None
    detail: str
    elapsed: float


@dataclass(frozen=True)
class CheckReport:
    """`fleet check`: each app's (or balanced app's) health check result, by name."""

    results: dict[str, HealthResult]

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results.values() if not r.passed)

    def to_json(self) -> dict[str, object]:
        return {"apps": {name: {"health": "passed" if r.passed else "failed",
                                "detail": r.detail, "status": r.status,
                                "elapsed": round(r.elapsed, 3)}
                         for name, r in self.results.items()},
                "failed": self.failed}


def judge(app: AppConfig, response: Reply, site: str | None = None) -> str | None:
    """Why a response through nginx fails the app's health check, or None when it passes.

    `site` is the X-Fleet-Site value the answer must carry (app@release): proof that nginx
    runs the configuration fleet just wrote and routes to the release it expects.
    """
    if site is not None and response.site != site:
        return (f"HTTP {response.status} from {response.site or 'another site'}, "
                f"not yet from {site}")
    return judge_reply(app, response.status, response.body)


def judge_reply(app: AppConfig, status: int, body: str) -> str | None:
    """Why an app's answer fails its health check, or None when it passes."""
    if not app.health.accepts(status):
        return f"HTTP {status}"
    if app.health.contains is not None and app.health.contains not in body:
        return f"HTTP {status} without {app.health.contains!r} in the body"
    return None


def check_app(app: AppConfig, site: str | None = None, *, timeout: float | None = None,
              interval: float = 0.5, clock: type[time] = time,
              https: bool = False) -> HealthResult:
    """Retry until the check passes or the app's health timeout runs out."""
    wait = app.health.timeout if timeout is None else timeout
    start = clock.monotonic()

    def attempt() -> tuple[int | None, str]:
        """The status (None: no answer) and why it fails ("" when it passes)."""
        try:
            response = http_get(app.domains[0], app.url(app.health.path),
                                timeout=min(5.0, wait), https=https)
            return response.status, judge(app, response, site) or ""
        except AnswerError as exc:
            return None, str(exc)
        except answer_errors() as exc:
            return None, f"no response ({exc.__class__.__name__}: {exc})"

    status, problem = poll(attempt, lambda result: not result[1], timeout=wait,
                           interval=interval, clock=clock, fit=True)
    elapsed = clock.monotonic() - start
    if not problem:
        return HealthResult(True, status, f"HTTP {status}", elapsed)
    return HealthResult(False, status, problem, elapsed)
