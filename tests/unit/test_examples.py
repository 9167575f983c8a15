"""The shipped example config is valid, and the README documents every key and command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tomli_w import dumps

from fleet.cli.common import app as cli_app
from fleet.cli.dispatch import modules_for, register
from fleet.cluster.inventory import host_document, load_inventory
from fleet.config import parse as config
from fleet.config.settings import JobConfig, WorkerConfig, toml_keys
from fleet.config.store import desired_state
from tests.unit.fakehost import FakeHost

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fleet.toml"
README = ROOT / "README.md"


def test_example_config_is_valid() -> None:
    desired = desired_state(FakeHost(), str(EXAMPLE), EXAMPLE.read_text())
    apps = {a.name: a for a in desired.config.apps}
    assert set(apps) == {"alpha", "beta", "gamma"}
    assert apps["gamma"].module == "gamma:create_app()"
    assert apps["alpha"].health.path == "/health"
    assert all(a.repo.startswith("git://127.0.0.1:9418/") for a in apps.values())
    assert desired.config.emperor.thunder_lock


def test_example_commented_keys_are_valid_too() -> None:
    """Uncommenting the example's `# key = value` lines must still give a valid config."""
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        match = re.match(r"^# ?((\[[a-z_.]+\])|([a-z_\"/-]+ = .*))$", line)
        lines.append(match.group(1) if match else line)
    config.parse_document("uncommented", config.parse_toml("uncommented", "\n".join(lines)))


def test_cluster_example_cuts_into_valid_shares() -> None:
    path = ROOT / "examples" / "cluster.toml"
    inventory, data = load_inventory(str(path), path.read_text())
    assert [(s.name, s.role) for s in inventory.servers] == [
        ("web1", "app"), ("web2", "app"), ("lb", "front")]
    shares = {s.name: host_document(inventory, data, s.name) for s in inventory.servers}
    assert set(shares["web1"]["apps"]) == {"blog"} and set(shares["web2"]["apps"]) == {
        "blog", "shop"}
    assert shares["web1"]["server"]["accept_from"] == ["10.0.0.10"]
    assert shares["lb"]["front"]["apps"]["shop"]["upstreams"] == ["10.0.0.12:80"]
    for name, share in shares.items():  # each share is what that server's apply accepts
        desired_state(FakeHost(), f"{name}.toml", dumps(share))


def readme() -> str:
    return README.read_text()


@pytest.mark.parametrize(("section", "keys"), [
    ("server", config.SERVER_KEYS),
    ("server.pip", config.PIP_KEYS),
    ("emperor", config.EMPEROR_KEYS),
    ("apps.NAME", config.APP_KEYS),
    ("apps.NAME.health", config.HEALTH_KEYS),
    ("apps.NAME.workers.WORKER", toml_keys(WorkerConfig)),
    ("apps.NAME.jobs.JOB", toml_keys(JobConfig)),
])
def test_readme_documents_every_config_key(section: str, keys: list[str]) -> None:
    text = readme()
    missing = [key for key in keys if f"`{key}`" not in text]
    assert not missing, f"README.md does not mention [{section}] keys {missing}"


def command_names() -> list[str]:
    register(modules_for([]))  # every command module, as --help loads them
    names = []
    for command in cli_app.registered_commands:
        name = command.name or command.callback.__name__.replace("_", "-")
        names.append(name)
    return names


def test_readme_documents_every_command() -> None:
    text = readme()
    names = command_names()
    assert {"apply", "plan", "add-app", "status"} <= set(names)
    missing = [name for name in names if f"fleet {name}" not in text]
    assert not missing, f"README.md does not mention commands {missing}"
