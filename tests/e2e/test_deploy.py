"""Deploys without downtime on a real server: health-gated switch, failed releases that never
take traffic, rollback, and data that survives. One server for the module, in order.

Not a provisioning test: its server starts from the provisioned tree (python3 and fleet's OS
packages preinstalled, tests/harness/rootfs.py); bare servers are provisioned in test_apply,
test_operator, test_reliability, test_trixie and the push modules."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import bootstrap_apply, describe, fleet, fleet_json, get, install_fleet
from tests.e2e.load import Load
from tests.harness.server import BareServer

APPS = Path(__file__).resolve().parents[1] / "apps"
ALPHA = (APPS / "alpha" / "wsgi.py").read_text()
TIMES: dict[str, float] = {}


def version_of(body: str) -> str:
    match = re.match(r"web (v\d+)", body)
    return match.group(1) if match else body[:40]


def web_source(version: str) -> str:
    return ALPHA.replace('f"alpha sqlalchemy=', f'f"web {version} sqlalchemy=')


@pytest.fixture(scope="module")
def box(server_factory, git_remote, fleet_pyz):
    if "web" not in git_remote.repos_created:
        git_remote.create_repo("web", APPS / "alpha", files={"wsgi.py": web_source("v1")})
        git_remote.create_repo("keeper", APPS / "keeper")
    server: BareServer = server_factory(provisioned=True)
    install_fleet(server, fleet_pyz)
    bootstrap_apply(server, f"""
[apps.web]
repo = "{git_remote.url('web')}"
domains = ["web.test"]
processes = 2
keep_releases = 3
[apps.web.health]
timeout = 20

[apps.keeper]
repo = "{git_remote.url('keeper')}"
domains = ["keeper.test"]
persist = ["instance"]
init = "python init_db.py"
""")
    return server


def timed_deploy(box: BareServer, name: str, *args: str):
    start = time.monotonic()
    run = fleet_json(box, "deploy", name, *args)
    return run, time.monotonic() - start


def test_persisted_data_and_init(box, git_remote) -> None:
    for _ in range(3):
        assert box.http("/notes", host="keeper.test", method="POST").status == 201
    assert get(box, "keeper.test")[1] == "keeper v1 notes=3"
    git_remote.commit("keeper", {"wsgi.py": (APPS / "keeper" / "wsgi.py").read_text()
                                 .replace('VERSION = "v1"', 'VERSION = "v2"')})
    run, _ = timed_deploy(box, "keeper")
    assert run.returncode == 0, describe(run)
    assert get(box, "keeper.test")[1] == "keeper v2 notes=3", run.data["steps"]
    assert fleet(box, "rollback", "keeper").returncode == 0
    assert get(box, "keeper.test")[1] == "keeper v1 notes=3"
    assert fleet(box, "apply").returncode == 0
    assert get(box, "keeper.test")[1] == "keeper v1 notes=3"  # the rollback's pin holds
    owner = box.run(["stat", "-c", "%U %a", "/srv/fleet/keeper/shared/instance/keeper.db"])
    assert owner.stdout.split() == ["keeper", "644"] or owner.stdout.startswith("keeper ")


def test_new_commit_deploys_under_load_without_a_failed_request(box, git_remote) -> None:
    git_remote.commit("web", {"wsgi.py": web_source("v2")})
    with Load("web.test") as load:
        run, seconds = timed_deploy(box, "web")
    assert run.returncode == 0, describe(run)
    TIMES["code-only deploy"] = seconds
    assert load.failed == 0, load.failures[:5]
    assert load.ok > 20
    assert version_of(get(box, "web.test")[1]) == "v2"
    venv_step = next(s for s in run.data["steps"] if s["name"] == "virtualenv")
    assert venv_step["status"] == "ok"  # same requirements: the venv was reused, no pip
    # The replaced release's vassal is gone; one vassal per app remains.
    vassals = box.run(["ls", "/etc/uwsgi/vassals"]).stdout.split()
    assert len([v for v in vassals if v.startswith("web@")]) == 1, vassals


def test_release_that_fails_to_import_never_takes_traffic(box, git_remote) -> None:
    git_remote.commit("web", {"wsgi.py": "import does_not_exist_fleet  # noqa\n"})
    with Load("web.test") as load:
        run, _ = timed_deploy(box, "web")
    assert run.returncode == 1
    failed = [s for s in run.data["steps"] if s["status"] == "failed"]
    assert failed and failed[0]["name"] == "deploy", failed
    assert "health check" in failed[0]["error"] and "previous release keeps serving" in \
        failed[0]["error"]
    assert "does_not_exist_fleet" in (failed[0].get("log") or ""), failed[0]
    assert load.failed == 0, load.failures[:5]
    assert version_of(get(box, "web.test")[1]) == "v2"
    releases = json.loads(fleet(box, "releases", "web", "--json").stdout)
    assert any(r["failed"] for r in releases["releases"]), releases


def test_release_whose_requirements_fail_never_takes_traffic(box, git_remote) -> None:
    git_remote.commit("web", {"wsgi.py": web_source("v3"),
                              "requirements.txt": "flask==3.0.3\nno-such-package-fleet==1.0\n"})
    with Load("web.test") as load:
        start = time.monotonic()
        run, _ = timed_deploy(box, "web")
        TIMES["failed full deploy"] = time.monotonic() - start
    assert run.returncode == 1
    failed = [s for s in run.data["steps"] if s["status"] == "failed"]
    assert failed[0]["name"] == "virtualenv" and "no-such-package-fleet" in failed[0]["error"]
    assert load.failed == 0, load.failures[:5]
    assert version_of(get(box, "web.test")[1]) == "v2"


def test_full_deploy_then_rollback_under_load(box, git_remote) -> None:
    requirements = (APPS / "alpha" / "requirements.txt").read_text() + "itsdangerous==2.2.0\n"
    git_remote.commit("web", {"wsgi.py": web_source("v4"), "requirements.txt": requirements})
    run, seconds = timed_deploy(box, "web")
    assert run.returncode == 0, describe(run)
    TIMES["full deploy (new venv)"] = seconds
    assert version_of(get(box, "web.test")[1]) == "v4"
    with Load("web.test") as load:
        result = fleet_json(box, "rollback", "web")
    assert result.returncode == 0, describe(result)
    assert load.failed == 0, load.failures[:5]
    assert version_of(get(box, "web.test")[1]) == "v2"
    assert {"v2", "v4"} >= {version_of(b) for b in load.bodies}
    kept = box.run(["ls", "/srv/fleet/web/releases"]).stdout.split()
    assert len(kept) <= 3, kept  # keep_releases = 3
    print("\ndeploy times:", {k: f"{v:.1f} s" for k, v in TIMES.items()})
