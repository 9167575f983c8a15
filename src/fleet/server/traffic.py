"""What an app's visitors got, read from its nginx access log (one JSON object a line).

nginx writes each app's requests to /var/log/nginx/fleet-NAME.access.log in fleet's
`fleet_json` format (templates/nginx-fleet.conf.j2): the time the request ended, its status,
nginx's request_time and the app's upstream_response_time, the bytes sent. Two readers:

- `recent`: the last minute, for `fleet top`. It reads the log backwards from its end in
  blocks and stops at the first line older than the window, so a big log costs what its last
  minute costs (and at most WINDOW_CAP bytes); the rotated `.1` file is read when the window
  reaches past the start of the current one.
- `advance`: running totals for Prometheus counters, from where the previous run stopped
  (offset and inode kept by fleet.server.metrics). A rotated log is finished from its `.1`
  copy (Debian's logrotate keeps the newest rotation uncompressed: delaycompress), then the
  new file is read from its start. A log first seen bigger than CATCH_UP_CAP is counted from
  its end (its past is not parsed), like a counter that starts when fleet starts counting.

Lines of another format (written before fleet switched the format, or garbage) are skipped.
The log is nginx's (root's and www-data's), read as root without following a symlink.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from fleet.host.machine import Host

NGINX_LOG_DIR = "/var/log/nginx"
WINDOW = 60.0  # seconds `fleet top` looks back
BLOCK = 64 * 1024  # read backwards in blocks of this size
WINDOW_CAP = 16 * 1024 * 1024  # at most this much of one log per window (about 60k req/s)
# At most this much unread log per metrics run and app: parsing costs about 0.1 s per MB
# on a busy 2-core server (bench/README.md), and the timer's run must end well within its
# 60 s. 8 MB every 15 s is about 2,500 requests/s for one app.
CATCH_UP_CAP = 8 * 1024 * 1024
# Latency histogram buckets (seconds): Prometheus' defaults, which fit web requests.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CODES = ("2xx", "3xx", "4xx", "5xx")


def access_log(app: str) -> str:
    return f"{NGINX_LOG_DIR}/fleet-{app}.access.log"


@dataclass(frozen=True)
class Hit:
    """One request as nginx logged it: when it ended, its status and how long it took."""

    time: float
    status: int
    duration: float  # nginx's request_time: what the client waited
    upstream: float | None  # the app's share (None: nginx answered alone)
    bytes: int


# The fields fleet reads lead every `fleet_json` line, in this order and before any text a
# client chose (escape=json: a client's text cannot close a string early). One regular
# expression reads them about three times faster than json.loads reads the whole line, which
# is what keeps a sample of busy apps cheap (bench/README.md "top and metrics").
LINE = re.compile(rb'\{"time":([0-9.]+),"status":([0-9]{3}),"request_time":([0-9.]+),'
                  rb'"upstream_time":"([^"]*)","bytes":([0-9]+)[,}]')


def parse_line(line: bytes) -> Hit | None:
    """A `fleet_json` line, or None for anything else (another format, a torn line)."""
    found = LINE.match(line)
    if found is None:
        return None
    when, status, duration, upstream, size = found.groups()
    # Several upstreams tried ("0.001, 0.002") or none ("" / "-"): the last one answered.
    last = upstream.replace(b":", b",").rsplit(b",", 1)[-1].strip()
    try:
        return Hit(float(when), int(status), float(duration),
                   float(last) if last and last != b"-" else None, int(size))
    except ValueError:  # "1.2.3": the pattern's digits and dots, but no number
        return None


def parse_lines(data: bytes) -> list[Hit]:
    return [hit for line in data.split(b"\n") if (hit := parse_line(line)) is not None]


def first_time(data: bytes) -> float | None:
    """The time of the first whole, readable line in a block (its first piece is partial)."""
    for line in data.split(b"\n")[1:]:
        hit = parse_line(line)
        if hit is not None:
            return hit.time
    return None


def recent(host: Host, path: str, now: float, window: float = WINDOW) -> list[Hit]:
    """The requests that ended in the `window` seconds up to `now`, oldest first."""
    since = now - window
    hits: list[Hit] = []
    for log in (path, path + ".1"):
        found, reached_start = read_back(host, log, since)
        hits = [h for h in found if since < h.time <= now] + hits
        if not reached_start:
            break  # this file alone covers the window: no need for the rotated one
    return hits


def read_back(host: Host, path: str, since: float) -> tuple[list[Hit], bool]:
    """The lines of `path` back to the first one before `since`; whether the window reached
    past the file's start (so an older file may hold part of it)."""
    head = host.read_span(path, 0, 0)
    if head is None:
        return [], True
    end, data = head.size, b""
    while end > 0 and len(data) < WINDOW_CAP:
        start = max(0, end - BLOCK)
        span = host.read_span(path, start, end - start)
        if span is None:
            return [], True
        data = span.data + data
        end = start
        oldest = first_time(data)
        if oldest is not None and oldest <= since:
            break
    if end > 0:  # the first piece is part of a line that started before what was read
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    return parse_lines(data), end == 0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (one of the values seen, never interpolated)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class Traffic:
    """One window of an app's requests, as `fleet top` shows it."""

    requests: int
    window: float
    p50: float | None  # seconds
    p99: float | None
    client_errors: int  # 4xx
    server_errors: int  # 5xx
    bytes: int

    @classmethod
    def of(cls, hits: list[Hit], window: float = WINDOW) -> Traffic:
        durations = [h.duration for h in hits]
        return cls(len(hits), window, percentile(durations, 0.5), percentile(durations, 0.99),
                   sum(1 for h in hits if 400 <= h.status < 500),
                   sum(1 for h in hits if h.status >= 500), sum(h.bytes for h in hits))

    @property
    def per_second(self) -> float:
        return self.requests / self.window

    def to_json(self) -> dict[str, object]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 1)

        def share(count: int) -> float | None:
            return round(count / self.requests, 4) if self.requests else None

        return {"requests": self.requests, "per_second": round(self.per_second, 3),
                "p50_ms": ms(self.p50), "p99_ms": ms(self.p99),
                "4xx": self.client_errors, "5xx": self.server_errors,
                "4xx_share": share(self.client_errors), "5xx_share": share(self.server_errors),
                "bytes": self.bytes}


def code_class(status: int) -> str | None:
    return f"{status // 100}xx" if 200 <= status < 600 else None


@dataclass
class Totals:
    """Running counts of one app's log since fleet started counting, and where it stopped."""

    inode: int = 0
    offset: int = 0
    codes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CODES, 0))
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))  # not cumulative
    count: int = 0
    sum: float = 0.0

    def add(self, hit: Hit) -> None:
        code = code_class(hit.status)
        if code is not None:
            self.codes[code] = self.codes.get(code, 0) + 1
        for index, bound in enumerate(BUCKETS):
            if hit.duration <= bound:
                self.buckets[index] += 1
                break
        self.count += 1
        self.sum += hit.duration

    def cumulative(self) -> list[int]:
        """Each bucket's count of requests at or below its bound (Prometheus' `le`)."""
        result, running = [], 0
        for count in self.buckets:
            running += count
            result.append(running)
        return result

    def to_json(self) -> dict[str, object]:
        return {"inode": self.inode, "offset": self.offset, "codes": self.codes,
                "buckets": self.buckets, "count": self.count, "sum": self.sum}

    @classmethod
    def from_json(cls, data: object) -> Totals:
        """Totals from the state file; anything unreadable starts afresh (a counter reset,
        which Prometheus' rate() takes in its stride)."""
        try:
            assert isinstance(data, dict)
            totals = cls(int(data["inode"]), int(data["offset"]),
                         {str(k): int(v) for k, v in data["codes"].items()},
                         [int(v) for v in data["buckets"]], int(data["count"]),
                         float(data["sum"]))
            assert len(totals.buckets) == len(BUCKETS)
            return totals
        except (AssertionError, KeyError, TypeError, ValueError, AttributeError):
            return cls()


def advance(host: Host, path: str, totals: Totals) -> Totals:
    """Count the lines written since `totals` stopped; the new totals say where this run did."""
    head = host.read_span(path, 0, 0)
    if head is None:
        return totals
    if not totals.inode and head.size > CATCH_UP_CAP:  # first sight of a big log: from now
        totals.inode, totals.offset = head.inode, head.size
        return totals
    offset = totals.offset
    if totals.inode and head.inode != totals.inode:  # rotated: finish the old file first
        rotated = host.read_span(path + ".1", 0, 0)
        if rotated is not None and rotated.inode == totals.inode:
            consume(host, path + ".1", totals, totals.offset, rotated.size)
        offset = 0
    elif offset > head.size:  # truncated in place (copytruncate): start again
        offset = 0
    totals.inode = head.inode
    totals.offset = consume(host, path, totals, offset, head.size)
    return totals


def consume(host: Host, path: str, totals: Totals, offset: int, size: int) -> int:
    """Count whole lines between offset and size; returns where the last whole line ended.
    More than CATCH_UP_CAP behind: only the newest CATCH_UP_CAP counts (the rest is lost to
    the counters, which then undercount: better than a run that never ends)."""
    offset = max(offset, size - CATCH_UP_CAP)
    if offset > 0 and offset == size - CATCH_UP_CAP:  # skipped ahead: drop the partial line
        span = host.read_span(path, offset, BLOCK)
        if span is None or b"\n" not in span.data:
            return offset
        offset += span.data.index(b"\n") + 1
    while offset < size:
        span = host.read_span(path, offset, min(16 * BLOCK, size - offset))
        if span is None or not span.data:
            break
        whole = span.data.rfind(b"\n") + 1
        if whole == 0:
            break  # a line still being written: the next run counts it
        for hit in parse_lines(span.data[:whole]):
            totals.add(hit)
        offset += whole
    return offset
