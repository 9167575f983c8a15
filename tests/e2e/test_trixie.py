"""The core scenario once on Debian 13 (trixie, Python 3.13): bootstrap, conflicting pins,
a factory app, idempotence, no root workers; built with pip (`builder = "pip"`), the
alternative to the default uv that every other module builds with."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.helpers import fleet_json, get, install_fleet, service_pids, uwsgi_processes
from tests.harness.server import BareServer

APPS = Path(__file__).resolve().parents[1] / "apps"


@pytest.fixture(scope="module")
def trixie(server_factory, git_remote, fleet_pyz) -> BareServer:
    for name in ("alpha", "beta", "gamma"):
        if name not in git_remote.repos_created:
            git_remote.create_repo(name, APPS / name)
    server: BareServer = server_factory("trixie")
    assert "VERSION_CODENAME=trixie" in server.read_file("/etc/os-release").decode()
    install_fleet(server, fleet_pyz)
    server.write_file("/root/fleet.toml", f"""
[server]
builder = "pip"

[apps.alpha]
repo = "{git_remote.url('alpha')}"
domains = ["alpha.test"]
[apps.beta]
repo = "{git_remote.url('beta')}"
domains = ["beta.test"]
[apps.gamma]
repo = "{git_remote.url('gamma')}"
domains = ["gamma.test"]
module = "gamma:create_app()"
""")
    return server


def test_trixie_provisions_and_stays_converged(trixie: BareServer) -> None:
    result = trixie.run(["sh", "/root/bootstrap", "/root/fleet.pyz", "apply", "/root/fleet.toml",
                         "--json"], timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads(result.stdout)["failed"] == 0
    assert not trixie.exists("/usr/local/lib/fleet/uv-0.13.9"), "builder = pip installed uv"
    python = trixie.run(["python3", "--version"]).stdout
    assert python.startswith("Python 3.13"), python
    assert re.match(r"alpha sqlalchemy=1\.4\.\d+", get(trixie, "alpha.test")[1])
    assert re.match(r"beta sqlalchemy=2\.0\.\d+", get(trixie, "beta.test")[1])
    assert get(trixie, "gamma.test")[1] == "gamma factory"
    users = {p["user"] for p in uwsgi_processes(trixie)}
    assert users == {"root", "alpha", "beta", "gamma"}, users
    assert sum(p["user"] == "root" for p in uwsgi_processes(trixie)) == 1
    before = service_pids(trixie)
    again = fleet_json(trixie, "apply")
    assert again.returncode == 0 and again.data["changed"] == 0, again.data["steps"]
    assert service_pids(trixie) == before
