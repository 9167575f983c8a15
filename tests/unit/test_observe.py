"""Issue 21: the access-log reader (`fleet top`'s window, the metrics' running totals), the
Prometheus exposition text, the sample's JSON and the fleet-metrics timer's plan."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleet.host.layout import AppPaths
from fleet.server import metrics, traffic
from fleet.server.metrics import Exposition, add_backup, add_deploy, add_requests, exposition
from fleet.server.observe import take_sample
from fleet.server.traffic import (
    BUCKETS,
    Hit,
    Totals,
    Traffic,
    advance,
    parse_line,
    percentile,
    recent,
)
from tests.unit.fakehost import Entry, FakeHost
from tests.unit.support import changed_steps, config, run, server

LOG = "/var/log/nginx/fleet-alpha.access.log"
NOW = 1_800_000_000.0


def line(time: float, status: int = 200, duration: float = 0.01, upstream: str = "0.009",
         size: int = 5) -> bytes:
    """A line as nginx writes it with fleet's `fleet_json` format."""
    return (json.dumps({"time": round(time, 3), "status": status, "request_time": duration,
                        "upstream_time": upstream, "bytes": size, "remote_addr": "10.0.0.1",
                        "host": "alpha.test", "method": "GET", "uri": "/",
                        "protocol": "HTTP/1.1", "referer": "", "user_agent": "t"},
                       separators=(",", ":")) + "\n").encode()


def log_host(content: bytes, path: str = LOG) -> FakeHost:
    host = server()
    for d in ("/var/log", "/var/log/nginx"):
        host.files[d] = Entry("dir", mode=0o755)
    host.files[path] = Entry("file", content=content)
    return host


# ------------------------------------------------------------------------- the log lines


def test_a_line_is_read_with_its_times_and_the_last_upstream() -> None:
    hit = parse_line(line(NOW, 502, 0.25, "0.100, 0.120").rstrip())
    assert hit == Hit(NOW, 502, 0.25, 0.12, 5)
    assert parse_line(line(NOW, 444, 0.0, "").rstrip()).upstream is None
    assert parse_line(line(NOW, 200, 0.0, "-").rstrip()).upstream is None


@pytest.mark.parametrize("text", [
    b'10.0.0.1 - - [27/Nov/2026:06:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl"',  # combined
    b'{"time":1800000000.1,"status":200', b"", b"{}", b'{"time":"x","status":200,'
    b'"request_time":0.1}', b"\x00\xff garbage", b'{"time":1,"status":null,"request_time":1}'])
def test_lines_of_another_format_or_garbage_are_skipped(text: bytes) -> None:
    assert parse_line(text) is None


def test_percentiles_are_nearest_rank() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentile(values, 0.5) == 0.05 and percentile(values, 0.99) == 0.099
    assert percentile([0.3], 0.99) == 0.3 and percentile([], 0.5) is None


# ----------------------------------------------------------------------- the last minute


def test_the_window_holds_the_last_minute_only() -> None:
    content = b"".join(line(NOW - 120 + i, 200) for i in range(60))  # two minutes ago
    content += b"garbage line\n"
    content += b"".join(line(NOW - 59.5 + i / 2, 404 if i % 4 == 0 else 200, 0.001 * (i + 1))
                        for i in range(100))
    window = Traffic.of(recent(log_host(content), LOG, NOW))
    assert window.requests == 100 and window.client_errors == 25 and window.server_errors == 0
    assert window.per_second == pytest.approx(100 / 60)
    assert window.p50 == pytest.approx(0.05) and window.p99 == pytest.approx(0.099)
    data = window.to_json()
    assert data["4xx_share"] == 0.25 and data["p99_ms"] == 99.0 and data["5xx_share"] == 0.0


def test_a_big_log_is_read_back_from_its_end_only() -> None:
    old = line(NOW - 3600) * 200_000  # an hour ago: about 45 MB nobody needs
    host = log_host(old + b"".join(line(NOW - 10 + i) for i in range(10)))
    read: list[int] = []
    span = host.read_span

    def counting(path: str, start: int, length: int):
        result = span(path, start, length)
        read.append(len(result.data) if result else 0)
        return result

    host.read_span = counting  # type: ignore[method-assign]
    assert len(recent(host, LOG, NOW)) == 10
    assert sum(read) <= 2 * traffic.BLOCK, sum(read)


def test_the_rotated_log_covers_the_start_of_the_window() -> None:
    host = log_host(b"".join(line(NOW - 5 + i, 500) for i in range(5)))
    host.files[LOG + ".1"] = Entry("file", content=b"".join(
        line(NOW - 90 + i * 10, 200) for i in range(9)))  # 5 of them in the window
    window = Traffic.of(recent(host, LOG, NOW))
    assert window.requests == 5 + 5 and window.server_errors == 5


def test_an_empty_or_missing_log_is_no_traffic() -> None:
    assert recent(log_host(b""), LOG, NOW) == []
    assert recent(server(), LOG, NOW) == []
    empty = Traffic.of([])
    assert empty.to_json()["p50_ms"] is None and empty.to_json()["4xx_share"] is None


def test_a_symlinked_log_is_not_followed() -> None:
    host = log_host(b"")
    host.files[LOG] = Entry("link", target="/etc/shadow")
    with pytest.raises(OSError):
        recent(host, LOG, NOW)
    cfg = config(host)
    assert take_sample(host, cfg, NOW).apps[0].traffic.requests == 0
    text = exposition(host, cfg, NOW)
    assert families(text)["fleet_app_requests_total"][(("app", "alpha"), ("code", "2xx"))] == 0


# ------------------------------------------------------------------------ running totals


def test_totals_count_each_whole_line_once() -> None:
    torn = line(NOW, 503, 2.0)
    host = log_host(line(NOW, 200, 0.004) + line(NOW, 404, 0.3) + torn[:30])
    totals = advance(host, LOG, Totals())
    assert totals.codes == {"2xx": 1, "3xx": 0, "4xx": 1, "5xx": 0}
    assert totals.offset == len(line(NOW, 200, 0.004) + line(NOW, 404, 0.3))
    # The torn line is completed later and counted then; nothing is counted twice.
    host.files[LOG].content += torn[30:] + line(NOW, 301)
    totals = advance(host, LOG, Totals.from_json(json.loads(json.dumps(totals.to_json()))))
    assert totals.codes == {"2xx": 1, "3xx": 1, "4xx": 1, "5xx": 1}
    assert totals.count == 4 and totals.sum == pytest.approx(0.004 + 0.3 + 2.0 + 0.01)
    assert totals.cumulative()[0] == 1  # 0.004 <= 5 ms
    assert totals.cumulative()[BUCKETS.index(2.5)] == 4
    assert advance(host, LOG, totals).count == 4


def test_rotation_finishes_the_old_file_then_reads_the_new_one() -> None:
    host = log_host(line(NOW, 200))
    host.inodes[LOG] = 11
    totals = advance(host, LOG, Totals())
    host.files[LOG].content += line(NOW, 500)  # written before logrotate moved the file
    host.files[LOG + ".1"] = host.files.pop(LOG)
    host.inodes[LOG + ".1"], host.inodes[LOG] = 11, 12
    host.files[LOG] = Entry("file", content=line(NOW, 404))
    totals = advance(host, LOG, totals)
    assert totals.codes == {"2xx": 1, "3xx": 0, "4xx": 1, "5xx": 1}
    assert (totals.inode, totals.offset) == (12, len(line(NOW, 404)))


def test_a_truncated_log_is_read_again_from_its_start() -> None:
    host = log_host(line(NOW) * 3)
    totals = advance(host, LOG, Totals())
    host.files[LOG].content = line(NOW, 500)
    assert advance(host, LOG, totals).codes["5xx"] == 1 and totals.count == 4


@pytest.mark.parametrize("saved", [None, "x", {"inode": 1}, {"inode": 1, "offset": 2,
                                   "codes": {}, "buckets": [1], "count": 1, "sum": 0}])
def test_damaged_totals_start_again(saved: object) -> None:
    assert Totals.from_json(saved) == Totals()


# ----------------------------------------------------------------------- exposition text


def families(text: str) -> dict[str, dict[tuple, float]]:
    """Prometheus' own parser: metric name -> {labels: value}."""
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = \
                sample.value
    return found


def test_requests_and_the_histogram_in_prometheus_text() -> None:
    totals = Totals()
    for status, duration in ((200, 0.003), (200, 0.2), (404, 0.02), (500, 12.0)):
        totals.add(Hit(NOW, status, duration, None, 0))
    out = Exposition()
    add_requests(out, "shop", totals)
    text = out.text()
    assert "# TYPE fleet_app_requests_total counter" in text
    assert "# TYPE fleet_app_request_duration_seconds histogram" in text
    parsed = families(text)
    assert parsed["fleet_app_requests_total"][(("app", "shop"), ("code", "4xx"))] == 1
    assert parsed["fleet_app_requests_total"][(("app", "shop"), ("code", "3xx"))] == 0
    buckets = parsed["fleet_app_request_duration_seconds_bucket"]
    assert buckets[(("app", "shop"), ("le", "0.005"))] == 1
    assert buckets[(("app", "shop"), ("le", "0.25"))] == 3
    assert buckets[(("app", "shop"), ("le", "10.0"))] == 3
    assert buckets[(("app", "shop"), ("le", "+Inf"))] == 4
    assert parsed["fleet_app_request_duration_seconds_count"][(("app", "shop"),)] == 4
    assert parsed["fleet_app_request_duration_seconds_sum"][(("app", "shop"),)] == \
        pytest.approx(12.223)


def test_label_values_are_escaped() -> None:
    out = Exposition()
    out.add("fleet_app_up", {"app": 'a"b\\c\nd'}, 1)
    assert 'app="a\\"b\\\\c\\nd"' in out.text()
    assert families(out.text())["fleet_app_up"][(("app", 'a"b\\c\nd'),)] == 1


def test_the_last_backup_comes_from_the_backups_file() -> None:
    host = server()
    host.files["/var/lib/fleet/backups"] = Entry("dir", mode=0o700)
    host.files["/var/lib/fleet/backups/alpha.json"] = Entry("file", content=json.dumps({
        "app": "alpha", "last_attempt": NOW, "last_result": "failed",
        "last_success": NOW - 86400, "snapshot": "abc", "error": "x", "bytes": 10}).encode())
    host.files["/var/lib/fleet/backups/beta.json"] = Entry("file", content=json.dumps({
        "app": "beta", "last_success": "2026-11-27T06:00:00Z"}).encode())
    host.files["/var/lib/fleet/backups/gamma.json"] = Entry("file", content=b'{"last_su')
    out = Exposition()
    for name in ("alpha", "beta", "gamma", "delta"):  # delta: no file, no metric
        add_backup(out, host, name)
    parsed = families(out.text())["fleet_app_last_backup_timestamp_seconds"]
    beta = datetime(2026, 11, 27, 6, 0, tzinfo=timezone.utc).timestamp()
    assert parsed == {(("app", "alpha"),): NOW - 86400, (("app", "beta"),): beta}


def test_the_last_deploy_is_the_newest_release_deployed_or_failed() -> None:
    host = server()
    history = {"releases": [
        {"id": "r1", "commit": "a", "built": NOW - 100, "deployed": NOW - 90, "failed": None},
        {"id": "r2", "commit": "b", "built": NOW - 50, "deployed": None,
         "failed": "health check failed"},
        {"id": "r3", "commit": "c", "built": NOW - 10, "deployed": None, "failed": None}]}
    host.files["/var/lib/fleet/apps"] = Entry("dir", mode=0o700)
    host.files[AppPaths("alpha").state_file] = Entry("file", content=json.dumps(
        history).encode())
    out = Exposition()
    add_deploy(out, host, "alpha")
    add_deploy(out, host, "beta")  # never deployed: no metric
    parsed = families(out.text())
    assert parsed["fleet_app_last_deploy_timestamp_seconds"] == {(("app", "alpha"),): NOW - 50}
    assert parsed["fleet_app_last_deploy_success"] == {(("app", "alpha"),): 0}


def test_fleet_metrics_text_for_configured_apps(tmp_path) -> None:
    host = log_host(line(NOW, 200) + line(NOW, 503))
    cfg = config(host)
    text = exposition(host, cfg, NOW)
    parsed = families(text)
    assert parsed["fleet_app_requests_total"][(("app", "alpha"), ("code", "5xx"))] == 1
    assert parsed["fleet_app_requests_total"][(("app", "beta"), ("code", "2xx"))] == 0
    assert parsed["fleet_app_up"] == {(("app", "alpha"),): 0, (("app", "beta"),): 0}
    assert parsed["fleet_app_workers"][(("app", "alpha"), ("state", "busy"))] == 0
    for name, (kind, _) in metrics.METRICS.items():  # one HELP and TYPE line per family
        if name in text.split("# TYPE ", 1)[-1] or f"\n{name}" in text:
            assert text.count(f"# TYPE {name} {kind}\n") == 1, name
    # The state file keeps the counts: the next run counts only what is new.
    state = json.loads(host.files[metrics.STATE_FILE].content)
    assert state["apps"]["alpha"]["count"] == 2 and host.files[metrics.STATE_FILE].mode == 0o600
    host.files[LOG].content += line(NOW, 503)
    again = families(exposition(host, cfg, NOW))
    assert again["fleet_app_requests_total"][(("app", "alpha"), ("code", "5xx"))] == 2


def test_the_sample_shows_apps_traffic_and_background_workers() -> None:
    host = log_host(line(NOW - 1, 200, 0.02) + line(NOW - 2, 500, 0.04))
    cfg = config(host, """
[apps.alpha]
repo = "git://remote/alpha.git"
domains = ["alpha.test"]
[apps.alpha.workers.tasks]
command = "python worker.py"
processes = 2
[apps.beta]
repo = "git://remote/beta.git"
domains = ["beta.test"]
[apps.beta.workers.mail]
command = "python mail.py"
""")
    host.commands.clear()
    data = take_sample(host, cfg, NOW).to_json()
    # Every app's workers from one `systemctl show`, not one per app.
    shows = host.ran("systemctl")
    assert len(shows) == 1 and {"fleet-alpha.worker.tasks@2.service",
                                "fleet-beta.worker.mail@1.service"} <= set(shows[0])
    row = data["apps"]["alpha"]
    assert row["requests"] == 2 and row["5xx"] == 1 and row["5xx_share"] == 0.5
    assert row["p99_ms"] == 40.0 and row["state"] == "not deployed"
    assert row["workers"] == {"busy": 0, "idle": 0} and row["memory_bytes"] == 0
    assert data["window_seconds"] == 60 and data["time"] == NOW
    assert [(w["app"], w["name"], w["processes"]) for w in data["workers"]] == [
        ("alpha", "tasks", 2), ("beta", "mail", 1)]


# ----------------------------------------------------------------------- the timer's plan

@pytest.fixture
def converging(healthy: list[str]) -> None:
    """No real health checks or waits while converging (conftest's `healthy`)."""


METRICS_CONFIG = """
[server.metrics]
textfile_dir = "/var/lib/prometheus/node-exporter"
[apps.alpha]
repo = "git://remote/alpha.git"
domains = ["alpha.test"]
"""
SERVICE = "/etc/systemd/system/fleet-metrics.service"
TIMER = "/etc/systemd/system/fleet-metrics.timer"


def test_apply_writes_starts_and_then_leaves_the_metrics_timer(converging: None) -> None:
    host = server()
    session, _ = run(host, config(host, METRICS_CONFIG))
    assert "metrics" in changed_steps(session)
    service = host.files[SERVICE].content.decode()
    assert ("ExecStart=/usr/local/bin/fleet metrics --textfile "
            "/var/lib/prometheus/node-exporter\n") in service
    assert "Type=oneshot" in service
    assert "OnUnitActiveSec=15s" in host.files[TIMER].content.decode()
    assert host.files["/var/lib/prometheus/node-exporter"].kind == "dir"
    assert ["systemctl", "enable", "--quiet", "fleet-metrics.timer"] in host.commands
    assert "fleet-metrics.timer" in host.active
    host.commands.clear()
    session, _ = run(host, config(host, METRICS_CONFIG))
    assert "metrics" not in changed_steps(session)
    assert not host.ran("systemctl", "restart", "fleet-metrics.timer")


def test_a_changed_directory_rewrites_the_service_and_restarts_the_timer(converging: None) -> None:
    host = server()
    run(host, config(host, METRICS_CONFIG))
    host.commands.clear()
    session, _ = run(host, config(host, METRICS_CONFIG.replace("prometheus/node-exporter",
                                                               "node")))
    assert "metrics" in changed_steps(session)
    assert "--textfile /var/lib/node\n" in host.files[SERVICE].content.decode()
    assert host.ran("systemctl", "daemon-reload")
    assert host.ran("systemctl", "restart", "fleet-metrics.timer")


def test_without_the_setting_the_timer_is_removed_or_never_written(converging: None) -> None:
    host = server()
    session, _ = run(host, config(host))
    assert "metrics" not in changed_steps(session) and SERVICE not in host.files
    run(host, config(host, METRICS_CONFIG))
    session, _ = run(host, config(host))
    assert "metrics" in changed_steps(session)
    assert SERVICE not in host.files and TIMER not in host.files
    assert host.ran("systemctl", "disable", "--now", "--quiet", "fleet-metrics.timer")


def test_textfile_dir_must_be_an_absolute_path() -> None:
    from tests.unit.support import error_of

    message = error_of('[server.metrics]\ntextfile_dir = "prom"\n')
    assert "server.metrics.textfile_dir" in message and "absolute" in message
    assert "unknown" in error_of('[server.metrics]\ntextfile = "/x"\n').lower()


def test_the_top_screen_has_a_row_per_app_and_per_worker() -> None:
    from rich.console import Console

    from fleet.cli.observe import render_sample
    from fleet.server.observe import AppSample, Sample, WorkerSample
    from fleet.server.status import WorkerInfo

    hits = [Hit(NOW - i, 500 if i < 3 else 200, 0.002 * (i + 1), None, 0) for i in range(30)]
    sample = Sample(NOW, 60.0, [
        AppSample("blog", "running", "3f2a1b9c0d1e", Traffic.of(hits),
                  [WorkerInfo(1, "busy", 5, 30 * 2**20, 0), WorkerInfo(2, "idle", 5,
                                                                        30 * 2**20, 1)], 1),
        AppSample("shop", "not deployed", None, Traffic.of([]))],
        [WorkerSample("shop", "tasks", "running", 2, 2, 3, "9a8b7c6d5e4f", 2**20)])
    console = Console(width=160, record=True, color_system=None)
    console.print(render_sample(sample, "box"))
    lines = console.export_text().splitlines()
    assert "q quits" in lines[0] and "box" in lines[0]
    assert lines[1].split() == ["APP", "STATE", "RELEASE", "REQ/S", "P50", "P99", "4XX", "5XX",
                                "BUSY/IDLE", "MEM", "RESTARTS"]
    assert lines[2].split() == ["blog", "running", "3f2a1b9c0d1e", "0.5", "30ms", "60ms",
                                "0%", "10%", "1/1", "60M", "1"]
    assert lines[3].split() == ["shop", "not", "deployed", "-", "0.0", "-", "-", "-", "-",
                                "0/0", "-", "0"]
    assert lines[4].split() == ["shop:tasks", "running", "9a8b7c6d5e4f", "2/2", "1M", "3"]


def test_a_big_log_first_seen_is_counted_from_its_end(monkeypatch) -> None:
    monkeypatch.setattr(traffic, "CATCH_UP_CAP", 1000)
    host = log_host(line(NOW) * 20)
    totals = advance(host, LOG, Totals())
    assert totals.count == 0 and totals.offset == len(line(NOW) * 20)
    host.files[LOG].content += line(NOW, 404)
    assert advance(host, LOG, totals).codes["4xx"] == 1 and totals.count == 1
    host.files[LOG].content += line(NOW, 500) * 40  # more than the cap behind: newest part
    counted = advance(host, LOG, totals).codes["5xx"]
    assert 0 < counted < 40 and totals.offset == len(host.files[LOG].content)
