"""The read-only commands' results: built as data, shown as text by cli/views and as JSON by
their own to_json(). The commands themselves are run in test_cli and tests/e2e."""

from __future__ import annotations

import io
import json

from rich.console import Console

from fleet.cli.views import render_text
from fleet.server.health import CheckReport, HealthResult
from fleet.server.history import History, ReleaseRecord, release_listing
from fleet.server.status import AppStatus, EmperorStatus, ServerStatus, WorkerInfo
from tests.unit.fakehost import FakeHost


def text(result: object, **options: bool) -> str:
    out = io.StringIO()
    console = Console(file=out, width=200, highlight=False, color_system=None)
    for part in render_text(result, **options):
        console.print(part)
    return out.getvalue()


def test_release_listing_orders_by_service_and_names_live_pinned_failed_and_pruned() -> None:
    host = FakeHost()
    host.mkdir("/srv/fleet/shop/releases/r3", 0o755, "root", "root")
    history = History("shop", {
        "r3": ReleaseRecord("r3", "c" * 40, built=300.0, deployed=400.0),
        "r1": ReleaseRecord("r1", "a" * 40, built=100.0, deployed=150.0),
        "r2": ReleaseRecord("r2", "b" * 40, built=200.0, failed="HTTP 502"),
    }, pin={"commit": "c" * 40, "ref": "main"})
    listing = release_listing(host, history, "r3")
    assert [r.release for r in listing.releases] == ["r1", "r2", "r3"]
    data = listing.to_json()
    assert list(data) == ["app", "live", "releases"]
    assert data["releases"][2] == {"release": "r3", "commit": "c" * 40, "built": 300.0,  # type: ignore[index]
                                   "deployed": 400.0, "live": True, "failed": None,
                                   "kept": True, "pinned": True}
    rows = [line.split("│")[-2].strip() for line in text(listing).splitlines()
            if line.startswith("│")]
    assert rows == ["pruned", "failed: HTTP 502", "live, pinned"]


def test_status_json_keeps_its_shape_and_text_says_when_nothing_is_configured() -> None:
    emperor = EmperorStatus(False, problem="no answer")
    empty = ServerStatus(apps=[], front={}, emperor=emperor, nginx_active=True)
    assert empty.to_json() == {"apps": {}, "front": {},
                               "emperor": {"active": False, "problem": "no answer",
                                           "vassals": [], "blacklist": []},
                               "nginx": {"active": True}}
    assert list(empty.to_json()["emperor"]) == ["active", "problem", "vassals", "blacklist"]  # type: ignore[arg-type]
    assert text(empty).splitlines() == [
        "No apps configured (fleet add-app or fleet apply FILE adds some).",
        "Emperor: inactive, 0 vassals (no answer)", "nginx: active"]
    app = AppStatus("blog", "r1", ["blog.test"], "running", "r1",
                    workers=[WorkerInfo(7, "busy", 3, 2**21, 1)], health="passed")
    running = ServerStatus(apps=[app], front={}, nginx_active=False,
                           emperor=EmperorStatus(True, blacklist=[
                               {"id": "x@r1.ini", "failed_starts": 2, "throttle_ms": 1}]))
    shown = text(running)
    assert "│ blog │ r1      │ running │ 1/1 busy │ 3        │ 2 MiB │ 1        │ passed" in shown
    assert "Emperor: active, 0 vassals, throttled: x@r1.ini (2 failed starts)" in shown
    assert json.loads(json.dumps(running.to_json()))["apps"]["blog"]["workers"]["busy"] == 1


def test_check_report_counts_failures_and_quiet_shows_only_them() -> None:
    report = CheckReport({"a": HealthResult(True, 200, "HTTP 200", 0.01234),
                          "b": HealthResult(False, 502, "HTTP 502", 5.0)})
    assert report.failed == 1
    assert report.to_json()["apps"]["a"] == {"health": "passed", "detail": "HTTP 200",  # type: ignore[index]
                                             "status": 200, "elapsed": 0.012}
    assert text(report).splitlines() == ["passed   a: HTTP 200", "failed   b: HTTP 502",
                                         "1 of 2 apps passed their health check"]
    assert text(report, quiet=True).splitlines() == ["failed   b: HTTP 502",
                                                     "1 of 2 apps passed their health check"]
    assert text(CheckReport({})).splitlines() == ["No apps configured."]


def test_status_text_shows_workers_jobs_and_limits_only_for_apps_that_have_them() -> None:
    from fleet.server.background import BackgroundStatus, JobStatus, WorkerStatus
    from fleet.server.usage import LimitsStatus

    plain = AppStatus("blog", "r1", ["blog.test"], "running", "r1", health="passed")
    shop = AppStatus("shop", "r2", ["shop.test"], "running", "r2", health="passed")
    shop.background = BackgroundStatus(
        [WorkerStatus("celery", "failed", 2, 1, 10, "r2", [42])],
        [JobStatus("prune", "daily", "waiting", 1795000000.0, "timeout", None, 1795086400.0,
                   "r2", skipped=3)])
    shop.limits = LimitsStatus(
        rows={"memory": {"limit": 512 * 2**20, "used": 100 * 2**20, "mechanism": "cgroup"},
              "cpu": {"limit": 50, "used": 12.5, "mechanism": "cpu 50%: not enforced"},
              "tasks": {"limit": None, "used": 7, "mechanism": "no limit"},
              "timeout": {"limit": 30, "mechanism": "harakiri"}},
        events={"timeouts": 2, "recycles": 1, "oom_kills": None})
    output = text(ServerStatus(apps=[plain, shop], front={}, nginx_active=True,
                               emperor=EmperorStatus(True)))
    assert "No apps configured" not in output
    assert "worker celery" in output and "1/2" in output and "failed" in output
    assert "job prune (daily)" in output and "timeout (3 skipped)" in output
    assert "100 / 512" in output and "12 / 50 (not enforced)" in output and "30 s" in output
    assert "blog" in output.split("worker celery")[0]  # the apps table lists both apps
    rows = [line.split("│")[1].strip() for line in output.splitlines() if line.startswith("│")]
    assert rows.count("blog") == 1 and rows.count("shop") == 4  # apps, worker, job, limits
    assert shop.to_json()["limits"]["events"]["timeouts"] == 2  # type: ignore[index]
    assert shop.to_json()["background"]["jobs"]["prune"]["skipped"] == 3  # type: ignore[index]
