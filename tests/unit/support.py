"""What the unit test modules share: a FakeHost with two apps' repos, converging it, parsing
config text, and running the CLI in-process. Fixtures live in conftest.py."""

from __future__ import annotations

import sys

import pytest

from fleet.cli import app as cli
from fleet.config.parse import parse_document, parse_toml
from fleet.config.settings import Config
from fleet.config.store import desired_state
from fleet.converge.apply import converge
from fleet.errors import EXIT_INVALID, ConfigError
from fleet.host.facts import FactsHost
from fleet.host.session import Session, Status
from tests.unit.fakehost import FakeHost

SHA_A1 = "a" * 40
SHA_A2 = "b" * 40
SHA_B1 = "c" * 40

CONFIG = """
[apps.alpha]
repo = "git://remote/alpha.git"
domains = ["alpha.test"]
[apps.beta]
repo = "git://remote/beta.git"
domains = ["beta.test"]
[apps.beta.env]
SECRET = "hunter2"
"""


class Quiet:
    def step_started(self, step) -> None:
        pass

    def step_finished(self, step) -> None:
        pass


def server() -> FakeHost:
    host = FakeHost()
    host.commits = {"git://remote/alpha.git": {"HEAD": SHA_A1, "main": SHA_A1},
                    "git://remote/beta.git": {"HEAD": SHA_B1, "main": SHA_B1}}
    host.repo_files = {SHA_A1: {"requirements.txt": b"flask\n", "wsgi.py": b"app = 1\n"},
                       SHA_A2: {"requirements.txt": b"flask\n", "wsgi.py": b"app = 2\n"},
                       SHA_B1: {"pyproject.toml": b"[project]\n", "wsgi.py": b""}}
    return host


def config(host: FakeHost, text: str = CONFIG) -> Config:
    return desired_state(host, "fleet.toml", text).config


def run(host: FakeHost, cfg: Config, check: bool = False, only: set[str] | None = None):
    # As `fleet apply` runs it: through the host that remembers facts for the run.
    session = Session(FactsHost(host), Quiet(), check=check)
    outcome = converge(cfg, session, only=only)
    return session, outcome


def changed_steps(session: Session) -> list[str]:
    return [f"{s.name} {s.app or ''}".strip() for s in session.steps
            if s.status in (Status.CHANGED, Status.PENDING)]


def parse(text: str):
    return parse_document("f.toml", parse_toml("f.toml", text))


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert info.value.exit_code == EXIT_INVALID
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("f.toml: ")
    return message


def fleet_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
               *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["fleet", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err
