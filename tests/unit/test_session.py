"""Session.act: the changes that are no step's result still go through the session, so a
plan makes none of them and the executor stays the only place that acts."""

from __future__ import annotations

from fleet.cli.report import SilentReporter
from fleet.host.actions import Remove, WriteFile
from fleet.host.session import Session
from tests.unit.fakehost import FakeHost


def test_act_performs_and_keeps_what_it_did_without_a_step() -> None:
    host = FakeHost()
    session = Session(host, SilentReporter())
    write = WriteFile(path="/run/probe", content=b"token", mode=0o644)
    session.act([write, Remove(path="/run/probe")])
    assert host.state("/run/probe") is None and session.side_actions[0] == write
    assert session.steps == [] and session.counts()["changed"] == 0


def test_a_plan_acts_on_nothing() -> None:
    host = FakeHost()
    session = Session(host, SilentReporter(), check=True)
    session.act([WriteFile(path="/run/probe", content=b"token", mode=0o644)])
    assert host.state("/run/probe") is None and session.side_actions == []
