"""fleet apply on a real bare Debian: bootstrap, three apps with conflicting pins, idempotence,
add-app, reboot, unknown hosts. One server is shared by the module, in order."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    describe,
    fleet,
    fleet_json,
    get,
    install_fleet,
    service_pids,
    uwsgi_processes,
)
from tests.harness.server import BareServer, NoResponse

APPS_DIR = Path(__file__).resolve().parents[1] / "apps"


def fleet_toml(git_remote) -> str:
    return f"""
[server]
packages = ["sqlite3"]

[apps.alpha]
repo = "{git_remote.url('alpha')}"
domains = ["alpha.test", "www.alpha.test"]
processes = 2
[apps.alpha.env]
GREETING = "hello from alpha"

[apps.beta]
repo = "{git_remote.url('beta')}"
ref = "main"
domains = ["beta.test"]

[apps.gamma]
repo = "{git_remote.url('gamma')}"
domains = ["gamma.test"]
module = "gamma:create_app()"
"""


@pytest.fixture(scope="module")
def box(server_factory, git_remote, fleet_pyz):
    for name in ("alpha", "beta", "gamma", "delta"):
        if name not in git_remote.repos_created:
            source = APPS_DIR / ("alpha" if name == "delta" else name)
            git_remote.create_repo(name, source)
    server: BareServer = server_factory()
    install_fleet(server, fleet_pyz)
    server.write_file("/root/fleet.toml", fleet_toml(git_remote))
    return server


@pytest.fixture(scope="module")
def first_apply(box: BareServer):
    result = box.run(["sh", "/root/bootstrap", "/root/fleet.pyz", "apply", "/root/fleet.toml",
                      "--json"], timeout=1500)
    return result


def test_bootstrap_provisions_apps_with_their_own_dependencies(box, first_apply) -> None:
    assert first_apply.returncode == 0, first_apply.stdout[-4000:] + first_apply.stderr[-4000:]
    data = json.loads(first_apply.stdout)  # nothing but JSON on stdout
    assert data["failed"] == 0 and data["changed"] > 0
    assert {n: a["health"] for n, a in data["apps"].items()} == {
        "alpha": "passed", "beta": "passed", "gamma": "passed"}
    assert all(re.fullmatch(r"[0-9a-f]{40}", a["commit"]) for a in data["apps"].values())
    status, body = get(box, "alpha.test")
    assert status == 200 and re.match(r"alpha sqlalchemy=1\.4\.\d+", body), body
    status, body = get(box, "www.alpha.test")
    assert status == 200 and body.startswith("alpha"), body
    status, body = get(box, "beta.test")
    assert status == 200 and re.match(r"beta sqlalchemy=2\.0\.\d+", body), body
    status, body = get(box, "gamma.test")
    assert status == 200 and "gamma factory" in body, body


def test_vassal_workers_run_as_their_app_user(box, first_apply) -> None:
    procs = uwsgi_processes(box)
    by_user: dict[str, int] = {}
    for p in procs:
        by_user[p["user"]] = by_user.get(p["user"], 0) + 1
    # Only the Emperor is root; each vassal (master + 2 workers) runs as its own user.
    assert by_user.get("root") == 1, procs
    assert {u for u in by_user if u != "root"} == {"alpha", "beta", "gamma"}, procs
    assert all(by_user[u] >= 3 for u in ("alpha", "beta", "gamma")), procs


def test_files_are_root_owned_and_private(box, first_apply) -> None:
    release = box.run(["readlink", "/srv/fleet/alpha/current"]).stdout.strip().rsplit("/")[-1]
    out = box.run(["stat", "-c", "%U:%G %a %n", f"/etc/uwsgi/vassals/alpha@{release}.ini",
                   "/etc/fleet/env/alpha.env", "/srv/fleet/alpha", "/run/fleet/alpha",
                   f"/run/fleet/alpha/{release}.sock", "/srv/fleet/alpha/shared/instance"],
                  check=True).stdout.split("\n")
    assert out[0].startswith("root:root 600 ")
    assert out[1].startswith("root:root 600 ")
    assert out[2].startswith("root:alpha 751 ")
    assert out[3].startswith("alpha:www-data 750 ")
    assert out[4].startswith("alpha:www-data 660 ")
    assert out[5].startswith("alpha:alpha 700 ")
    # Another app's user can read neither alpha's code nor its socket.
    denied = box.run(["runuser", "-u", "beta", "--", "ls", "/srv/fleet/alpha/releases"])
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    # alpha's user cannot rewrite its own code.
    cannot = box.run(["runuser", "-u", "alpha", "--", "touch", "/srv/fleet/alpha/current/wsgi.py"])
    assert cannot.returncode != 0


def test_second_apply_changes_nothing_and_restarts_nothing(box, first_apply) -> None:
    before = service_pids(box)
    run = fleet_json(box, "apply")
    assert run.returncode == 0, describe(run)
    assert run.data["changed"] == 0, [s for s in run.data["steps"] if s["status"] != "ok"]
    assert all(not a["changed"] for a in run.data["apps"].values())
    assert service_pids(box) == before
    text = fleet(box, "apply")
    assert "0 changed" in text.stdout and "Nothing changed" in text.stdout, text.stdout
    # After a run, a no-op renders nothing (issue 19): every file's text comes from root's
    # render cache, and jinja2 is never imported.
    code_files = "stat -c '%U %a %i %n' /var/cache/fleet/_code /var/cache/fleet/_code/*"
    code_before = box.run(["sh", "-c", code_files], check=True).stdout
    timed = box.run(["python3", "-X", "importtime", "/usr/local/bin/fleet", "apply", "--json"])
    assert timed.returncode == 0 and json.loads(timed.stdout)["changed"] == 0, timed.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in timed.stderr.splitlines()
                if line.startswith("import time:")}
    assert "fleet.host.render_cache" in imported and "jinja2" not in imported, timed.stderr
    cache = box.run(["stat", "-c", "%U %a", "/var/cache/fleet/_render",
                     "/var/cache/fleet/_render/renders.marshal"], check=True).stdout.split()
    assert cache == ["root", "700", "root", "600"]
    # The dataclasses' compiled methods came from root's code cache: nothing new to write.
    assert box.run(["sh", "-c", code_files], check=True).stdout == code_before
    assert [line.split()[:2] for line in code_before.splitlines()] == [["root", "700"],
                                                                       ["root", "600"]]
    # git is asked only where the refs point: what it said about each commit is kept.
    verbose = box.run(["/usr/local/bin/fleet", "-v", "apply", "--json"])
    gits = [line for line in verbose.stderr.splitlines() if line.startswith("$ git")]
    assert verbose.returncode == 0 and gits, verbose.stderr[-3000:]
    assert all(" ls-remote " in line for line in gits), gits


def test_unknown_host_gets_no_app_content(box, first_apply) -> None:
    with pytest.raises(NoResponse):
        box.http("/", host="unknown.example")


def test_add_app_leaves_other_vassals_alone(box, first_apply, git_remote) -> None:
    before = service_pids(box)
    run = fleet_json(box, "add-app", "delta", "--repo", git_remote.url("delta"),
                     "--domain", "delta.test", "--env", "A", input="1\n")
    assert run.returncode == 0, describe(run)
    assert set(run.data["apps"]) == {"delta"}
    status, body = get(box, "delta.test")
    assert status == 200 and body.startswith("alpha"), body
    after = service_pids(box)
    for key, pids in before.items():
        if key.startswith("uwsgi") and not key.endswith(":root"):
            assert after[key] == pids, key
    assert box.exists("/etc/fleet/apps/delta.toml")


def test_status_reads_workers_from_uwsgi(box, first_apply) -> None:
    import json

    result = fleet(box, "status", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    alpha = data["apps"]["alpha"]
    assert alpha["state"] == "running" and alpha["health"] == "passed"
    assert alpha["workers"]["total"] == 2
    worker_pids = {str(p) for p in alpha["workers"]["pids"]}
    alpha_procs = {p["pid"] for p in uwsgi_processes(box) if p["user"] == "alpha"}
    assert worker_pids <= alpha_procs
    assert data["emperor"]["active"] and data["nginx"]["active"]


def test_everything_serves_after_reboot_without_fleet(box, first_apply) -> None:
    box.reboot()
    for host, prefix in (("alpha.test", "alpha"), ("beta.test", "beta"),
                         ("gamma.test", "gamma"), ("delta.test", "alpha")):
        status, body = get(box, host, attempts=30)
        assert status == 200 and body.startswith(prefix), (host, body)
