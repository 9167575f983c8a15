"""`fleet apply --hold-changes`, what `fleet push` asks each host: a server that would change
is left untouched and answers with its plan, marked held; one that would not is applied in the
same run (its health checks and all), sharing the plan's facts."""

from __future__ import annotations

import json

import pytest

from fleet.cli import converging
from fleet.cli.audited import session_result
from fleet.cli.converging import run_converge, run_held
from fleet.config.store import desired_state
from fleet.host.machine import RunResult
from fleet.host.session import Session, Status
from tests.unit.fakehost import FakeHost
from tests.unit.support import CONFIG, SHA_A1, SHA_A2, Quiet, fleet_main, server

pytestmark = pytest.mark.usefixtures("healthy")


def snapshot(host: FakeHost) -> dict[str, tuple]:
    return {path: (e.kind, e.content, e.mode) for path, e in host.files.items()}


def converge_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                  host: FakeHost, hold: bool) -> tuple[int, dict]:
    monkeypatch.setattr(converging, "local_host", lambda: host)
    desired = desired_state(host, "fleet.toml", CONFIG)
    code = (run_held(desired, json_out=True) if hold
            else run_converge(desired, json_out=True, check=False))
    return code, json.loads(capsys.readouterr().out)


def test_a_server_that_would_change_is_left_untouched_and_answers_with_its_plan(
        monkeypatch, capsys, healthy: list[str]) -> None:
    host = server()
    before = snapshot(host)
    code, report = converge_json(monkeypatch, capsys, host, hold=True)
    assert code == 0 and report["held"] is True
    assert report["changed"] > 0
    assert {s["status"] for s in report["steps"]} >= {"would change"}
    assert snapshot(host) == before  # not even the stored state was written
    assert not host.ran("useradd") and not host.ran("apt-get") and healthy == []


def test_a_server_with_nothing_to_change_is_applied_in_the_same_run(
        monkeypatch, capsys, healthy: list[str]) -> None:
    host = server()
    code, report = converge_json(monkeypatch, capsys, host, hold=False)
    assert code == 0 and report["changed"] > 0
    healthy.clear()
    host.commands.clear()
    code, report = converge_json(monkeypatch, capsys, host, hold=True)
    assert code == 0 and report["held"] is False
    assert report["changed"] == 0 and report["failed"] == 0
    assert {s["status"] for s in report["steps"]} == {"ok"}  # the apply's, not a plan's
    assert healthy == ["alpha", "beta"]  # a plan checks no health: the apply ran
    assert report["apps"]["alpha"]["health"] == "passed"
    # the plan and the apply share the run's facts: asked once for both
    assert host.commands.count(["nginx", "-v"]) == 1
    assert sum(1 for c in host.commands if c[:2] == ["getent", "passwd"]) == 1


def test_check_and_hold_changes_are_refused_together(monkeypatch, capsys) -> None:
    code, _, err = fleet_main(monkeypatch, capsys, "apply", "fleet.toml", "--check",
                              "--hold-changes")
    assert code == 2
    assert err.strip() == "fleet: --hold-changes: --check: give one of them: --check only plans"


def test_the_audit_line_counts_only_sessions_that_acted() -> None:
    planned = Session(FakeHost(), Quiet(), check=True)
    with planned.step("packages") as step:
        planned.apply(step, [])
    planned.steps[-1].status = Status.PENDING
    assert planned.counts()["changed"] == 1
    assert session_result(0, [planned]) == "ok"  # a plan's "would change" changed nothing


def test_as_text_a_held_server_says_nothing_was_applied(monkeypatch, capsys) -> None:
    host = server()
    monkeypatch.setattr(converging, "local_host", lambda: host)
    code = run_held(desired_state(host, "fleet.toml", CONFIG), json_out=False)
    out = capsys.readouterr().out
    assert code == 0 and "steps would change" in out
    assert "held: nothing applied (--hold-changes)" in out


def test_the_apply_acts_on_the_refs_its_plan_saw(monkeypatch, capsys) -> None:
    """A commit pushed to an app's remote between the plan and the apply of one
    --hold-changes run does not slip in as "no change": the apply uses the plan's answers
    (and the remotes are asked once per run, not once per walk)."""
    host = server()
    assert converge_json(monkeypatch, capsys, host, hold=False)[0] == 0
    alpha = "git://remote/alpha.git"
    fetched: list[str] = []

    def remote_moves_after_answering(fake: FakeHost, argv: list[str]) -> RunResult | None:
        if "ls-remote" in argv and argv[-1] == alpha:
            answer = fake.simulate(argv)
            fake.commits[alpha] = {"HEAD": SHA_A2, "main": SHA_A2}  # pushed right after
            return answer
        if "fetch" in argv:
            fetched.append(argv[4])
        elif "rev-parse" in argv and argv[4].endswith("/alpha/repo.git") and not fetched:
            return RunResult(0, SHA_A1 + "\n", "")  # the mirror knows A2 once fetched
        return None

    host.handlers.append(remote_moves_after_answering)
    host.commands.clear()
    code, report = converge_json(monkeypatch, capsys, host, hold=True)
    assert code == 0 and report["held"] is False and report["changed"] == 0, report
    assert not fetched
    assert len([c for c in host.commands if "ls-remote" in c]) == 2  # alpha, beta: once
    # The next run sees the new commit and would change: held, with its plan.
    code, report = converge_json(monkeypatch, capsys, host, hold=True)
    assert code == 0 and report["held"] is True and report["changed"] > 0
