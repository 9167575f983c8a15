"""Fixtures for end-to-end tests against real bare Debian servers (systemd-nspawn).

Every test under tests/e2e is marked ``e2e``. Missing prerequisites fail the session
instead of skipping it: an e2e suite that silently skips proves nothing in CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import (
    BareServer,
    GitRemote,
    default_suite,
    destroy_all,
    install_signal_handlers,
)

E2E_DIR = Path(__file__).resolve().parent
APPS_DIR = E2E_DIR.parent / "apps"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items, not just ours: filter by path.
    for item in items:
        if Path(str(item.path)).resolve().is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    # Remember each phase's outcome so server fixtures can dump diagnostics on failure.
    report = yield
    setattr(item, f"_fleet_rep_{report.when}", report)
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    destroy_all()  # Belt and braces: also runs from atexit.


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Another session's host-network server makes ours wait: that is in setup durations.
    from tests.harness.hostlock import WAITED

    if WAITED:
        terminalreporter.write_line(
            f"[fleet-tests] {len(WAITED)} boot(s) waited {sum(WAITED):.0f} s in all for "
            "another session's server (host lock); setup durations include it")


@pytest.fixture(scope="session")
def e2e_host() -> None:
    """Fail (not skip) early when this host cannot boot test servers."""
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (systemd-nspawn, debootstrap, nsenter)")
    for tool in ("systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} not found (apt-get install systemd-container util-linux)")
    if problems:
        pytest.fail("end-to-end tests cannot run here: " + "; ".join(problems), pytrace=False)
    install_signal_handlers()


@pytest.fixture(scope="session")
def suite() -> str:
    """Debian suite under test: FLEET_TEST_SUITE, default bookworm."""
    return default_suite()


@pytest.fixture(scope="session")
def fixture_apps_dir() -> Path:
    """tests/apps: one directory per fixture Flask app."""
    return APPS_DIR


@pytest.fixture(scope="session")
def git_remote() -> Iterator[GitRemote]:
    """git daemon on 127.0.0.1 serving repos created by tests (reachable from servers)."""
    with GitRemote() as remote:
        yield remote


@pytest.fixture(scope="session")
def fleet_pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fleet built as users get it (build.py), once per session."""
    from tests.e2e.helpers import build_pyz  # fleet's own helpers: only when a test needs it

    return build_pyz(tmp_path_factory.mktemp("pyz") / "fleet.pyz")


def _dump_on_failure(request: pytest.FixtureRequest, server: BareServer) -> None:
    node = request.node
    failed = any(
        getattr(getattr(node, f"_fleet_rep_{when}", None), "failed", False)
        for when in ("setup", "call")
    )
    if failed and server.booted:
        print(f"\n===== {server.name}: failed units and journal tail =====")
        print(server.run(["systemctl", "--failed", "--no-pager"], timeout=30).stdout)
        print(server.journal(lines=80))


@pytest.fixture
def bare_server(e2e_host: None, suite: str, request: pytest.FixtureRequest) -> Iterator[BareServer]:
    """A freshly booted bare server for one test; destroyed afterwards, pass or fail."""
    server = BareServer(suite)
    try:
        server.boot()
        yield server
        _dump_on_failure(request, server)
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def server_factory(e2e_host: None) -> Iterator[Callable[..., BareServer]]:
    """Make servers that outlive one test (module-shared, or another suite).

    Only one server can be booted at a time (shared host network), so power off or
    ``destroy()`` one before booting the next. All are destroyed at module end.
    ``provisioned=True`` starts from the tree that already has python3 and fleet's OS packages
    (tests/harness/rootfs.py): only for modules whose claims are not about provisioning.
    """
    made: list[BareServer] = []

    def make(suite: str | None = None, *, boot: bool = True,
             provisioned: bool = False) -> BareServer:
        server = BareServer(suite, provisioned=provisioned)
        made.append(server)
        if boot:
            server.boot()
        return server

    try:
        yield make
    finally:
        for server in made:
            server.destroy()
