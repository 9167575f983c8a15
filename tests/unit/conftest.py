"""Fixtures of the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.converge import apply as converge_mod
from fleet.converge import deploy as deploy_mod
from fleet.server.health import HealthResult


@pytest.fixture
def healthy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No real health checks, gates or waits; the names of the apps checked, in order.
    Modules that converge use it: pytestmark = pytest.mark.usefixtures("healthy")."""
    checked: list[str] = []

    def fake_check(app, site=None, **_kwargs):
        checked.append(app.name)
        assert site and site.startswith(f"{app.name}@")
        return HealthResult(True, 200, "HTTP 200", 0.0)

    monkeypatch.setattr(converge_mod, "check_app", fake_check)
    monkeypatch.setattr(converge_mod, "wait_for_vassal", lambda *_a, **_k: True)
    monkeypatch.setattr(deploy_mod, "gate", lambda *_a, **_k: "HTTP 200 on its own socket")
    return checked


@pytest.fixture(autouse=True)
def private_audit(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
                  ) -> None:
    """A command a test runs as root leaves its audit line in a temp directory and reads the
    apps' state from a fake host: never the real /var/log/fleet of the machine running tests."""
    from fleet.cli import audited
    from fleet.server import audit
    from tests.unit.fakehost import FakeHost

    monkeypatch.setenv(audit.TEST_LOG_ENV,  # subprocesses too
                       str(tmp_path_factory.mktemp("audit") / "log" / "audit.log"))
    monkeypatch.setattr(audited, "audit_host", FakeHost)


@pytest.fixture(autouse=True)
def private_backup_lock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """apply takes the backup lock to sweep a killed backup's staging directories: a test's
    own, never the real /run/fleet.backup.lock (which a backup elsewhere may hold)."""
    from fleet.host import layout

    monkeypatch.setattr(layout, "BACKUP_LOCK", str(tmp_path / "fleet.backup.lock"))
