"""Prometheus metrics of every app, in the text exposition format (`fleet metrics`, and the
fleet-metrics timer that writes them for node_exporter's textfile collector).

Request counters and the latency histogram count the app's nginx access log
(fleet.server.traffic.advance) from where the previous run stopped: the offset, the log's
inode and the totals so far live in STATE_FILE, so they only grow, across log rotation too.
A lost or damaged state file starts them at zero again: a counter reset, which Prometheus'
rate() and increase() handle. The gauges come from the same sample `fleet top` takes.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from fleet.config.settings import AppConfig, Config
from fleet.host import layout
from fleet.host.machine import Host
from fleet.server.certs import cert_info, served_files
from fleet.server.history import History
from fleet.server.observe import AppSample, take_sample
from fleet.server.traffic import BUCKETS, CODES, Totals, access_log, advance

METRICS_DIR = f"{layout.STATE_DIR}/metrics"
STATE_FILE = f"{METRICS_DIR}/state.json"
LOCK = "/run/fleet.metrics.lock"  # the timer and an operator's `fleet metrics` take turns
BACKUPS_DIR = f"{layout.STATE_DIR}/backups"  # APP.json, written by fleet's backups
TEXTFILE = "fleet.prom"

# name -> (type, help): every metric fleet exports, in the order it prints them.
METRICS = {
    "fleet_app_up": ("gauge", "1 when the app's live vassal runs (or sleeps on demand)."),
    "fleet_app_requests_total": (
        "counter", "Requests nginx answered for the app, by status class."),
    "fleet_app_request_duration_seconds": (
        "histogram", "Time nginx took to answer the app's requests (request_time)."),
    "fleet_app_workers": ("gauge", "The live vassal's uWSGI workers, busy or idle."),
    "fleet_app_memory_bytes": ("gauge", "Resident memory of the live vassal's workers."),
    "fleet_app_restarts_total": (
        "counter", "Respawns of the live vassal and its workers (resets with a new release)."),
    "fleet_app_last_deploy_timestamp_seconds": (
        "gauge", "When the app's last deploy ended (deployed or failed)."),
    "fleet_app_last_deploy_success": ("gauge", "1 when the app's last deploy succeeded."),
    "fleet_certificate_expiry_timestamp_seconds": (
        "gauge", "When the certificate served for the app's domain expires."),
    "fleet_app_last_backup_timestamp_seconds": (
        "gauge", "When the app's last successful backup ended."),
}


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class Exposition:
    """Samples grouped by metric name, printed with one HELP and TYPE line each."""

    samples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, metric: str, labels: dict[str, str], value: float, suffix: str = "") -> None:
        text = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
        self.samples.setdefault(metric, []).append(
            f"{metric}{suffix}{{{text}}} {number(value)}")

    def text(self) -> str:
        lines = []
        for metric, (kind, why) in METRICS.items():
            if metric in self.samples:
                lines += [f"# HELP {metric} {why}", f"# TYPE {metric} {kind}",
                          *self.samples[metric]]
        return "\n".join(lines) + "\n"


def load_totals(host: Host) -> dict[str, Totals]:
    try:
        data = json.loads(host.read(STATE_FILE) or b"{}")
        return {str(k): Totals.from_json(v) for k, v in data.get("apps", {}).items()}
    except (ValueError, AttributeError):
        return {}


def save_totals(host: Host, totals: dict[str, Totals]) -> None:
    if host.state(METRICS_DIR) is None:
        host.mkdir(METRICS_DIR, 0o700, "root", "root")
    text = json.dumps({"apps": {k: v.to_json() for k, v in sorted(totals.items())}})
    host.write(STATE_FILE, (text + "\n").encode(), 0o600, "root", "root")


def count_requests(host: Host, apps: Iterable[AppConfig]) -> dict[str, Totals]:
    """Each app's totals, brought up to the end of its log and saved (apps no longer
    configured are dropped). The caller holds LOCK: two runs at once would count twice."""
    saved = load_totals(host)
    totals = {}
    for app in apps:
        totals[app.name] = saved.get(app.name, Totals())
        # Not a regular file (a symlink is never followed): the counts stay where they were.
        with contextlib.suppress(OSError):
            totals[app.name] = advance(host, access_log(app.name), totals[app.name])
    save_totals(host, totals)
    return totals


def add_requests(out: Exposition, app: str, totals: Totals) -> None:
    for code in CODES:
        out.add("fleet_app_requests_total", {"app": app, "code": code},
                totals.codes.get(code, 0))
    metric = "fleet_app_request_duration_seconds"
    for bound, count in zip(BUCKETS, totals.cumulative(), strict=True):
        out.add(metric, {"app": app, "le": repr(float(bound))}, count, "_bucket")
    out.add(metric, {"app": app, "le": "+Inf"}, totals.count, "_bucket")
    out.add(metric, {"app": app}, totals.sum, "_sum")
    out.add(metric, {"app": app}, totals.count, "_count")


def add_sample(out: Exposition, sample: AppSample) -> None:
    app = {"app": sample.name}
    out.add("fleet_app_up", app, 1 if sample.state in ("running", "sleeping") else 0)
    out.add("fleet_app_workers", {**app, "state": "busy"}, sample.busy)
    out.add("fleet_app_workers", {**app, "state": "idle"}, len(sample.workers) - sample.busy)
    out.add("fleet_app_memory_bytes", app, sample.memory)
    out.add("fleet_app_restarts_total", app, sample.restarts)


def add_deploy(out: Exposition, host: Host, name: str) -> None:
    """The newest release that was deployed or failed: when, and whether it succeeded."""
    ended = [r for r in History.load(host, name).releases.values() if r.deployed or r.failed]
    if not ended:
        return
    last = max(ended, key=lambda r: r.deployed or r.built)
    out.add("fleet_app_last_deploy_timestamp_seconds", {"app": name}, last.deployed or last.built)
    out.add("fleet_app_last_deploy_success", {"app": name}, 0 if last.failed else 1)


def add_certificate(out: Exposition, host: Host, app: AppConfig) -> None:
    if app.tls.mode == "off":
        return
    files = served_files(host, app)
    info = cert_info(host, files[0]) if files else None
    if info is None:
        return
    for domain in info.names:
        out.add("fleet_certificate_expiry_timestamp_seconds", {"app": app.name,
                                                               "domain": domain},
                info.not_after.timestamp())


def backup_time(value: object) -> float | None:
    """`last_success` as epoch seconds or an ISO 8601 time; None when never or unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
    return None


def add_backup(out: Exposition, host: Host, name: str) -> None:
    try:
        data = json.loads(host.read(f"{BACKUPS_DIR}/{name}.json") or b"null")
    except ValueError:
        return
    when = backup_time(data.get("last_success")) if isinstance(data, dict) else None
    if when is not None:
        out.add("fleet_app_last_backup_timestamp_seconds", {"app": name}, when)


def exposition(host: Host, config: Config, now: float | None = None) -> str:
    """Every metric of every configured app, as Prometheus' text format."""
    now = time.time() if now is None else now
    totals = count_requests(host, config.apps)
    sample = take_sample(host, config, now, window=False)
    out = Exposition()
    for app, app_sample in zip(config.apps, sample.apps, strict=True):
        add_sample(out, app_sample)
        add_requests(out, app.name, totals[app.name])
        add_deploy(out, host, app.name)
        add_certificate(out, host, app)
        add_backup(out, host, app.name)
    return out.text()
