"""A bounded, continuous HTTP load through a server's nginx, counting every failure."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    """One answered request: when it was sent and answered (epoch seconds), and its body."""

    start: float
    end: float
    body: str


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    bodies: set[str] = field(default_factory=set)
    samples: list[Sample] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)


class Load:
    """`with Load(host): ...` keeps requests going for the whole block (at most `limit` s)."""

    def __init__(self, host: str, path: str = "/", threads: int = 2, limit: float = 600,
                 max_requests: int = 200_000, address: str = "127.0.0.1",
                 pause: float = 0.0) -> None:
        self.host, self.path, self.threads, self.address = host, path, threads, address
        # Seconds each thread waits between requests: every request is a new connection, and
        # the client's TIME_WAIT sockets (60 s) would exhaust its ports over a long run.
        self.pause = pause
        self.limit, self.max_requests = limit, max_requests
        self.result = LoadResult()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.workers: list[threading.Thread] = []

    def worker(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self.stop.is_set() and time.monotonic() < deadline:
            with self.lock:
                if self.result.sent >= self.max_requests:
                    return
                self.result.sent += 1
            start = time.time()
            try:
                conn = http.client.HTTPConnection(self.address, 80, timeout=10)
                conn.request("GET", self.path, headers={"Host": self.host})
                response = conn.getresponse()
                body = response.read().decode(errors="replace")
                conn.close()
                with self.lock:
                    if 200 <= response.status < 300:
                        self.result.ok += 1
                        self.result.bodies.add(body[:80])
                        self.result.samples.append(Sample(start, time.time(), body[:80]))
                    else:
                        self.result.failures.append(f"HTTP {response.status}: {body[:80]}")
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.result.failures.append(f"{exc.__class__.__name__}: {exc}")
            if self.pause:
                self.stop.wait(self.pause)

    def __enter__(self) -> LoadResult:
        for _ in range(self.threads):
            thread = threading.Thread(target=self.worker, daemon=True)
            thread.start()
            self.workers.append(thread)
        time.sleep(0.5)  # requests are flowing before the block starts
        return self.result

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)
        self.stop.set()
        for thread in self.workers:
            thread.join(timeout=30)
