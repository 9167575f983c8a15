"""Templates compiled at build time (the zipapp's) render exactly as their files do."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from fleet.host import render
from tests.unit.support import config, run, server

pytestmark = pytest.mark.usefixtures("healthy")  # no real health checks, gates or waits

RICH = """
[server]
accept_from = ["10.0.0.0/8"]
[emperor]
vassal_set = { "max-requests" = "1000" }
[apps.alpha]
repo = "git://remote/alpha.git"
domains = ["alpha.test", "www.alpha.test"]
rate_limit = "10r/s"
[apps.alpha.env]
GREETING = "it's \\"quoted\\" $HOME 100%"
[apps.alpha.workers.mail]
command = "python -m mail"
[apps.alpha.jobs.nightly]
command = "python -m nightly"
schedule = "daily"
[apps.beta]
repo = "git://remote/beta.git"
domains = ["beta.test"]
mode = "on-demand"
"""


def files_written(monkeypatch: pytest.MonkeyPatch, env: jinja2.Environment) -> dict:
    monkeypatch.setattr(render, "environment", lambda: env)
    host = server()
    run(host, config(host, RICH))
    history = "/var/lib/fleet/apps/"  # holds build and deploy times
    return {p: e for p, e in host.files.items() if not p.startswith(history)}


def test_compiled_templates_render_as_their_files(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    render.compile_templates(str(tmp_path))
    plain, compiled = render.make_environment(None), render.make_environment(tmp_path)
    templates = [n for n in plain.list_templates() if n.endswith(".j2") or "/" in n]
    assert "vassal.ini.j2" in templates and "systemd/fleet-emperor.service" in templates
    for name in templates:  # every template is compiled, and loaded from its module
        assert (tmp_path / jinja2.ModuleLoader.get_module_filename(name)).is_file(), name
        assert compiled.get_template(name).filename.startswith(str(tmp_path)), name
    # A converge renders the same files either way (vassals, sites, units, env files...).
    assert files_written(monkeypatch, compiled) == files_written(monkeypatch, plain)
