"""Health checks through nginx, with the app's own Host header, as a visitor would see it."""

from __future__ import annotations

import http.client
import ssl
import time
from dataclasses import dataclass

from fleet.config.settings import AppConfig
from fleet.errors import AnswerError, AnswerTooSlow
from fleet.host.bounded import deadline
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


BODY_CAP = 65536  # what `contains` is looked for in
PROBE_HEADER = "X-Fleet-Probe"
SITE_HEADER = "X-Fleet-Site"


@dataclass(frozen=True)
class Response:
    status: int
    body: str
    site: str | None  # which fleet site answered (nginx sends it to probes only)


def probe(host_header: str, path: str, timeout: float = 5.0, address: str = "127.0.0.1",
          port: int | None = None, https: bool = False) -> Response:
    """One GET through nginx; with `https`, over TLS on 443 with the domain as SNI (port 80
    only redirects). The certificate is not verified here: its expiry is checked apart.

    `timeout` bounds the whole exchange, not each read: the app behind nginx may stream its
    answer a byte a second (AnswerTooSlow). Only the first BODY_CAP bytes are read."""
    conn: http.client.HTTPConnection
    if https:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = _SniConnection(address, port or 443, timeout=timeout, context=context,
                              sni=host_header)
    else:
        conn = http.client.HTTPConnection(address, port or 80, timeout=timeout)
    start = time.monotonic()
    try:
        conn.connect()
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            raise AnswerTooSlow(timeout)
        with deadline(conn.sock, left) as expired:
            try:
                conn.request("GET", path, headers={"Host": host_header,
                                                   "User-Agent": "fleet-health",
                                                   PROBE_HEADER: "1"})
                response = conn.getresponse()
                body = response.read(BODY_CAP)
            except (OSError, http.client.HTTPException):
                if expired.is_set():
                    raise AnswerTooSlow(timeout) from None
                raise
            if expired.is_set():  # a body cut short by the deadline is no answer
                raise AnswerTooSlow(timeout)
        return Response(response.status, body.decode(errors="replace"),
                        response.getheader(SITE_HEADER))
    finally:
        conn.close()


class _SniConnection(http.client.HTTPSConnection):
    """HTTPS to an address (127.0.0.1) with another name in SNI, as a browser would send."""

    def __init__(self, address: str, port: int, *, timeout: float, context: ssl.SSLContext,
                 sni: str) -> None:
        super().__init__(address, port, timeout=timeout, context=context)
        self._context = context
        self._sni = sni

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._sni)


def judge(app: AppConfig, response: Response, site: str | None = None) -> str | None:
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
            response = probe(app.domains[0], app.url(app.health.path),
                             timeout=min(5.0, wait), https=https)
            return response.status, judge(app, response, site) or ""
        except AnswerError as exc:
            return None, str(exc)
        except (OSError, http.client.HTTPException) as exc:
            return None, f"no response ({exc.__class__.__name__}: {exc})"

    status, problem = poll(attempt, lambda result: not result[1], timeout=wait,
                           interval=interval, clock=clock, fit=True)
    elapsed = clock.monotonic() - start
    if not problem:
        return HealthResult(True, status, f"HTTP {status}", elapsed)
    return HealthResult(False, status, problem, elapsed)
