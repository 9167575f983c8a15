"""Issue 21, seeing what the apps do, on a real bare Debian: a known load of 200, 404 and 500
answers through nginx, then `fleet top --once --json`, `fleet metrics`, the fleet.prom the
fleet-metrics timer writes (both read with prometheus_client's own text parser), Debian's
prometheus-node-exporter serving it, and the live `fleet top` driven in tmux.

One bridged server (no host lock) and one apply for the module; the tests run in order and
build on each other (the load of the first is what the others count).
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers import bootstrap_apply, eventually, fleet, fleet_json, install_fleet
from tests.harness import GitRemote
from tests.harness.bridged import BridgedServer
from tests.harness.network import BridgeNetwork

APP, HOST = "tally", "tally.test"
LOG = f"/var/log/nginx/fleet-{APP}.access.log"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
PROM = f"{TEXTFILE_DIR}/fleet.prom"
# The known load: path -> (requests, status class).
LOAD = {"/": (150, "2xx"), "/missing": (30, "4xx"), "/boom": (20, "5xx")}
TOTAL = sum(n for n, _ in LOAD.values())


def toml(remote_url: str) -> str:
    return f"""[server]
packages = ["tmux", "prometheus-node-exporter"]

[server.metrics]
textfile_dir = "{TEXTFILE_DIR}"

[apps.{APP}]
repo = "{remote_url}"
domains = ["{HOST}"]

[apps.{APP}.health]
path = "/health"
"""


@pytest.fixture(scope="module")
def box(e2e_host: None, suite: str, fleet_pyz: Path, fixture_apps_dir: Path
        ) -> Iterator[BridgedServer]:
    with BridgeNetwork() as network, GitRemote(listen=("127.0.0.1", network.gateway)) as git:
        git.create_repo(APP, fixture_apps_dir / APP)
        server = BridgedServer(network, 0, "observe", suite)
        try:
            server.boot()
            install_fleet(server, fleet_pyz)
            bootstrap_apply(server, toml(git.url(APP, network.gateway)))
            yield server
        finally:
            server.destroy()



def counters(text: str, app: str = APP) -> dict[str, float]:
    """The app's request counters and histogram count, read by Prometheus' own parser."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("app") != app:
                continue
            if sample.name == "fleet_app_requests_total":
                found[sample.labels["code"]] = sample.value
            elif sample.name == "fleet_app_request_duration_seconds_count":
                found["count"] = sample.value
            elif sample.name == "fleet_app_up":
                found["up"] = sample.value
    return found


def request(server: BridgedServer, path: str) -> int:
    conn = http.client.HTTPConnection(server.address, 80, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": HOST})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def load(box: BridgedServer) -> dict[str, float]:
    """Empty the log (fleet apply's health checks are in it), take the counters, then send
    the known load from the host to the server's address; returns the counters before."""
    box.run(["truncate", "-s", "0", LOG], check=True)
    before = counters(fleet(box, "metrics").stdout)
    expected = {"2xx": 200, "4xx": 404, "5xx": 500}
    for path, (count, code) in LOAD.items():
        for _ in range(count):
            assert request(box, path) == expected[code]
    return before


def test_top_once_json_reports_the_load(box: BridgedServer, load: dict) -> None:
    started = time.monotonic()
    run = fleet_json(box, "top", "--once")
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.result.stderr
    row = run.data["apps"][APP]
    assert abs(row["requests"] - TOTAL) <= TOTAL * 0.1, row
    assert abs(row["per_second"] - TOTAL / 60) <= TOTAL / 60 * 0.1, row
    assert abs(row["4xx_share"] - 30 / TOTAL) <= 0.1 * 30 / TOTAL, row
    assert abs(row["5xx_share"] - 20 / TOTAL) <= 0.1 * 20 / TOTAL, row
    assert row["4xx"] == 30 and row["5xx"] == 20, row
    # nginx times to the millisecond: a quick answer over the bridge can take 0.000 s.
    assert 0 <= row["p50_ms"] <= row["p99_ms"] < 5000, row
    assert row["state"] == "running" and row["release"], row
    assert row["workers"]["busy"] + row["workers"]["idle"] >= 1, row
    assert row["memory_bytes"] > 1_000_000, row
    assert run.data["window_seconds"] == 60
    assert elapsed < 10, elapsed  # the whole command, pyz start included
    print(f"\nfleet top --once --json took {elapsed:.2f} s")


def test_fleet_metrics_counts_exactly_the_load(box: BridgedServer, load: dict) -> None:
    after = counters(fleet(box, "metrics").stdout)
    for code in ("2xx", "4xx", "5xx"):
        sent = sum(n for n, c in LOAD.values() if c == code)
        assert after[code] - load.get(code, 0) == sent, (code, load, after)
    assert after["count"] - load.get("count", 0) == TOTAL, (load, after)
    assert after["up"] == 1
    text = fleet(box, "metrics").stdout
    assert counters(text) == after  # a second run counts nothing twice
    assert "# TYPE fleet_app_request_duration_seconds histogram" in text
    assert re.search(r'fleet_app_last_deploy_success\{app="tally"\} 1\n', text), text


def test_the_timer_writes_the_textfile(box: BridgedServer, load: dict) -> None:
    assert box.run(["systemctl", "is-active", "fleet-metrics.timer"]).stdout.strip() == "active"

    def written() -> dict[str, float]:
        found = counters(box.read_file(PROM).decode()) if box.exists(PROM) else {}
        assert found.get("5xx", 0) - load.get("5xx", 0) == 20, found
        return found

    found = eventually(written, timeout=45)
    # Every 15 s, not more often (each run is a fleet start: about 0.4 s of CPU).
    def starts() -> list[float]:
        journal = box.run(["journalctl", "-u", "fleet-metrics.service", "-o",
                           "short-monotonic", "--no-pager"], check=True).stdout
        found = [float(m.group(1)) for m in re.finditer(
            r"^\[\s*([\d.]+)\].*Starting fleet-metrics\.service", journal, re.M)]
        assert len(found) >= 2, journal[-2000:]
        return found

    runs = eventually(starts, timeout=40)
    gaps = [b - a for a, b in pairwise(runs)]
    print(f"\nfleet-metrics.service: {len(runs)} runs, seconds between: {gaps}")
    assert gaps and all(14.0 <= gap <= 17.0 for gap in gaps), gaps
    assert found["2xx"] - load.get("2xx", 0) == 150 and found["4xx"] - load["4xx"] == 30
    mode = box.run(["stat", "-c", "%a %U", PROM], check=True).stdout.split()
    assert mode == ["644", "root"], mode
    leftovers = box.run(["ls", "-A", TEXTFILE_DIR], check=True).stdout.split()
    assert leftovers == ["fleet.prom"], leftovers  # no temp file left behind


def test_node_exporter_serves_the_fleet_metrics(box: BridgedServer, load: dict) -> None:
    def scraped() -> dict[str, float]:
        conn = http.client.HTTPConnection(box.address, 9100, timeout=10)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        except OSError as exc:
            raise AssertionError(f"node_exporter: {exc}") from exc
        finally:
            conn.close()
        found = counters(text)
        assert found.get("5xx", 0) - load.get("5xx", 0) == 20, found
        return found

    found = eventually(scraped, timeout=60)
    assert found["4xx"] - load["4xx"] == 30 and found["up"] == 1


def pane(box: BridgedServer) -> str:
    return box.run(["tmux", "capture-pane", "-p", "-t", "observe"], check=True).stdout


def test_fleet_top_draws_in_tmux_and_q_restores_the_terminal(box: BridgedServer,
                                                            load: dict) -> None:
    env = {"TERM": "xterm"}
    box.run(["tmux", "new-session", "-d", "-s", "observe", "-x", "160", "-y", "40"],
            check=True, env=env)
    box.run(["tmux", "send-keys", "-t", "observe",
             "stty -a > /tmp/stty.before; /usr/local/bin/fleet top; echo top-exit=$?; "
             "stty -a > /tmp/stty.after", "Enter"], check=True)

    def drawn() -> float:
        screen = pane(box)
        assert "REQ/S" in screen and "(q quits)" in screen, screen
        row = re.search(rf"^{APP}\s+running\s+\S+\s+(\d+\.\d)\s", screen, re.M)
        assert row, screen
        return float(row.group(1))

    def shows(value: float) -> Callable[[], float]:
        def check() -> float:
            assert drawn() == value, pane(box)
            return value
        return check

    # The load of the first test, then 60 more requests sent while it runs: a later
    # refresh counts them (nothing else reached the app in the last minute).
    eventually(shows(round(TOTAL / 60, 1)), timeout=30)
    for _ in range(60):
        assert request(box, "/") == 200
    eventually(shows(round((TOTAL + 60) / 60, 1)), timeout=15)
    box.run(["tmux", "send-keys", "-t", "observe", "q"], check=True)

    def exited() -> str:
        screen = pane(box)
        assert "top-exit=0" in screen, screen
        assert box.exists("/tmp/stty.after")
        return screen

    screen = eventually(exited, timeout=15)
    assert "REQ/S" not in screen, screen  # the alternate screen is gone
    before = box.read_file("/tmp/stty.before").decode()
    after = box.read_file("/tmp/stty.after").decode()
    assert before == after and "-icanon" not in after and "-echo " not in after, after
    box.run(["tmux", "kill-server"])


def test_a_second_apply_changes_nothing(box: BridgedServer, load: dict) -> None:
    run = fleet_json(box, "apply", "/root/fleet.toml")
    assert run.returncode == 0, run.result.stderr
    changed = [(s["name"], s.get("app"), s["status"]) for s in run.data["steps"]
               if s["status"] != "ok"]
    assert changed == [], json.dumps(changed)
    assert any(s["name"] == "metrics" for s in run.data["steps"])
