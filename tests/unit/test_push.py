"""fleet push with a fake ssh: order, canary, max-failures, unreachable hosts, reports, argv."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
from pathlib import Path

import pytest

from fleet.cli import app as cli
from fleet.cluster.inventory import Server, load_inventory
from fleet.cluster.push import NEEDS_FLEET, Payload, groups, push
from fleet.cluster.ssh import OpenSSH, Result, as_root

FILE = """
[servers.app1]
address = "10.0.0.11"
[servers.app2]
address = "10.0.0.12"
[servers.app3]
address = "10.0.0.13"
[servers.lb]
address = "10.0.0.10"
role = "front"

[apps.blog]
repo = "https://git.example.com/blog.git"
domains = ["blog.example.com"]
"""
PAYLOAD = Payload(b"PYZ", b"#!/bin/sh\n")
PAYLOAD_SHA = hashlib.sha256(b"PYZ").hexdigest()


def report(changed: int = 0, failed: int = 0, error: str | None = None) -> dict:
    app = {"commit": "abc", "health": "failed" if error else "passed", "changed": bool(changed)}
    if error:
        app["error"] = error
    return {"ok": 10, "changed": changed, "failed": failed, "apps": {"blog": app}, "steps": []}


VERBS = ("undrain", "drain", "apply", "plan")


def verb_of(command: str) -> str:
    """The remote command's verb; `check` is `apply --hold-changes` (plan, and apply when
    nothing would change)."""
    if "fleet.pyz apply " in command and "--hold-changes" in command:
        return "check"
    return next((v for v in VERBS if f"fleet.pyz {v} " in command), "copy")


def would_change(code: int, answer: object) -> bool:
    return code != 0 or not isinstance(answer, dict) or bool(
        answer.get("changed") or answer.get("failed"))


class FakeSsh:
    """Answers like a server would; records what each host was sent, in order.

    `answers` are a server's apply (and plan) reports; `verbs` override one (server, verb):
    plan, apply, drain or undrain. The check (`apply --hold-changes`) answers with the plan,
    held, when that would change, else with the apply (logged as an apply too)."""

    def __init__(self, answers: dict[str, tuple[int, object]] | None = None,
                 verbs: dict[tuple[str, str], tuple[int, object]] | None = None) -> None:
        self.answers = answers or {}
        self.verbs = verbs or {}
        self.calls: list[tuple[str, str]] = []
        self.log: list[tuple[str, str]] = []  # (server, verb)
        self.shares: dict[str, str] = {}
        self.without_fleet: set[str] = set()  # servers whose installed fleet is another one
        self.lock = threading.Lock()

    def run(self, server: Server, command: str, input: bytes | None = None,
            timeout: float | None = None) -> Result:
        verb = verb_of(command)
        with self.lock:
            self.calls.append((server.name, command))
            self.log.append((server.name, verb))
        default = {"drain": (0, {"apps": {"blog": {"state": "drained"}}}),
                   "undrain": (0, {"apps": {"blog": {"state": "restored"}}})}.get(
            verb, self.answers.get(server.name, (0, report(changed=1))))
        code, answer = self.verbs.get((server.name, verb), default)
        if verb == "check":
            code, answer = self.verbs.get((server.name, "plan"), default)
            if code != 255 and not would_change(code, answer):
                with self.lock:
                    self.log.append((server.name, "apply"))
                code, answer = self.verbs.get((server.name, "apply"), default)
                answer = {**answer, "held": False} if isinstance(answer, dict) else answer
            elif isinstance(answer, dict):
                answer = {**answer, "held": True}
        if code == 255:
            return Result(255, b"", "ssh: connect to host 10.0.0.12 port 22: No route to host\n")
        if input is not None:  # the copy: unpack the bundle to see the share
            with tarfile.open(fileobj=io.BytesIO(input)) as tar:
                names = tar.getnames()
                member = tar.extractfile("fleet.toml")
                assert member is not None
                self.shares[server.name] = member.read().decode()
            if names == ["bootstrap", "fleet.toml"]:  # fleet itself only where it differs
                assert re.search(r" [0-9a-f]{64} /usr/local/bin/fleet \| sha256sum", command)
                if server.name in self.without_fleet:
                    return Result(NEEDS_FLEET, b"", "")
            else:
                assert names == ["fleet.pyz", "bootstrap", "fleet.toml"]
                self.without_fleet.discard(server.name)
            return Result(0, b"", "")
        body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        return Result(code, body, "bootstrap: installed\n")

    def close(self) -> None:
        pass

    def order(self, verb: str = "apply") -> list[str]:
        return [name for name, v in self.log if v == verb]


def run_push(ssh: FakeSsh, **kwargs):
    inventory, data = load_inventory("f.toml", FILE)
    return push(inventory, data, ssh, PAYLOAD, **kwargs)


def test_groups_are_the_canary_alone_then_the_app_servers_then_fronts() -> None:
    inventory, _ = load_inventory("f.toml", FILE)
    plan = [(g, [s.name for s in members]) for g, members in groups(list(inventory.servers))]
    assert plan == [("canary", ["app1"]), ("app servers", ["app2", "app3"]), ("fronts", ["lb"])]


def test_every_host_converges_and_gets_its_own_share() -> None:
    ssh = FakeSsh()
    result = run_push(ssh)
    assert result.ok and [h.status for h in result.hosts] == ["changed"] * 4
    assert ssh.order() == ["app1", "app2", "app3", "lb"]
    assert "[apps.blog]" in ssh.shares["app1"] and "servers" not in ssh.shares["app1"]
    assert "[front.apps.blog]" in ssh.shares["lb"] and "10.0.0.13:80" in ssh.shares["lb"]
    applied = [c for n, c in ssh.calls if n == "app1" and verb_of(c) == "apply"][-1]
    assert applied.endswith("sh bootstrap fleet.pyz apply fleet.toml --json")
    assert result.hosts[0].healthy == "1/1"


def test_the_zipapp_goes_only_where_the_installed_fleet_is_another_one() -> None:
    """A server answers the light copy (bootstrap and its share) with NEEDS_FLEET when its
    installed fleet is not this zipapp (sha256): only that one gets the 9 MB, then applies."""
    ssh = FakeSsh()
    ssh.without_fleet = {"app2"}
    result = run_push(ssh)
    assert result.ok and ssh.order() == ["app1", "app2", "app3", "lb"]
    copies = {name: [c for n, c in ssh.calls if n == name and verb_of(c) == "copy"]
              for name in ("app1", "app2")}
    assert len(copies["app1"]) == 1 and "ln -sfn /usr/local/bin/fleet" in copies["app1"][0]
    assert f" {PAYLOAD_SHA} /usr/local/bin/fleet " in copies["app1"][0]
    assert len(copies["app2"]) == 2 and "rm -f /var/lib/fleet/push/fleet.pyz" in copies["app2"][1]
    assert not ssh.without_fleet  # the full copy carried fleet.pyz to app2


def test_a_failing_canary_stops_everything_and_names_the_cause() -> None:
    ssh = FakeSsh({"app1": (1, report(failed=1, error="deploy: ImportError: no module x"))})
    result = run_push(ssh, max_failures=5)
    assert ssh.order() == ["app1"] and not result.ok
    assert [h.status for h in result.hosts] == ["failed", "skipped", "skipped", "skipped"]
    assert result.hosts[0].error == "blog: deploy: ImportError: no module x"
    assert "canary" in (result.stopped or "")


def test_unreachable_host_is_reported_as_such_and_counts_as_a_failure() -> None:
    ssh = FakeSsh({"app2": (255, None)})
    result = run_push(ssh, max_failures=1)
    states = {h.name: h.status for h in result.hosts}
    assert states == {"app1": "changed", "app2": "unreachable", "app3": "changed",
                      "lb": "changed"}
    assert "No route to host" in (result.hosts[1].error or "") and not result.ok
    assert result.to_json()["counts"]["unreachable"] == 1


def test_more_than_max_failures_stops_starting_new_hosts() -> None:
    ssh = FakeSsh({"app2": (255, None)})
    result = run_push(ssh, max_failures=0)
    assert ssh.order() == ["app1"]  # app2 never got to the apply
    assert [h.status for h in result.hosts] == ["changed", "unreachable", "skipped", "skipped"]
    assert "more than --max-failures 0" in (result.stopped or "")


def test_a_batch_runs_to_its_end_even_when_one_member_fails() -> None:
    ssh = FakeSsh({"app2": (1, report(failed=1, error="repo: boom"))})
    result = run_push(ssh, batch=2)
    assert sorted(ssh.order()) == ["app1", "app2", "app3"]
    assert result.hosts[3].status == "skipped"


def test_garbage_output_is_a_failure_with_the_stderr_tail() -> None:
    ssh = FakeSsh({"app1": (2, b"Traceback...")})
    result = run_push(ssh)
    assert result.hosts[0].status == "failed"
    assert result.hosts[0].error == "exit 2, no JSON report: bootstrap: installed"


def test_a_converged_host_reports_ok_and_plan_runs_plan() -> None:
    ssh = FakeSsh({name: (0, report()) for name in ("app1", "app2", "app3", "lb")})
    result = run_push(ssh, plan=True, limit=["app2", "lb"])
    assert ssh.order("plan") == ["app2", "lb"]  # with --limit, app2 is the canary
    assert ssh.order("apply") == [] and ssh.order("drain") == []  # a plan drains nothing
    assert [h.status for h in result.hosts] == ["ok", "ok"] and result.ok
    assert all("fleet.pyz plan fleet.toml --json" in c for _, c in ssh.calls if "plan" in c)


def test_ssh_argv_multiplexes_and_only_uses_F_when_asked() -> None:
    server = Server("app1", "10.0.0.11", "root", 2222, "app")
    plain = OpenSSH()
    configured = OpenSSH("/tmp/ssh_config")
    try:
        argv = plain.argv(server, "true")
        assert argv[0] == "ssh" and "-F" not in argv
        assert "ControlMaster=auto" in argv and f"ControlPath={plain.control_dir}/%C" in argv
        assert "BatchMode=yes" in argv and argv[-3:] == ["--", "10.0.0.11", "true"]
        assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "root"
        assert configured.argv(server, "true")[1:3] == ["-F", "/tmp/ssh_config"]
    finally:
        plain.close()
        configured.close()
    assert not Path(plain.control_dir).exists()


def test_non_root_users_go_through_sudo() -> None:
    assert as_root(Server("a", "h"), "x y") == "x y"
    assert as_root(Server("a", "h", user="deploy"), "x 'y'") == "sudo -n sh -c 'x '\"'\"'y'\"'\"''"


def test_push_command_rejects_unknown_limit_and_exits_2(monkeypatch, capsys,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FILE)
    monkeypatch.setattr("sys.argv", ["fleet", "push", str(path), "--limit", "nope"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2
    assert "--limit: [0]: no server 'nope'" in capsys.readouterr().err


def test_push_command_json_and_exit_1_on_failure(monkeypatch, capsys, tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FILE)
    pyz = tmp_path / "fleet.pyz"
    pyz.write_bytes(b"PK")
    fake = FakeSsh({"app3": (255, None)})
    monkeypatch.setattr("fleet.cli.push.OpenSSH", lambda config: fake)
    monkeypatch.setattr("sys.argv", ["fleet", "push", str(path), "--pyz", str(pyz), "--json",
                                     "--max-failures", "1"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out = json.loads(capsys.readouterr().out)
    assert info.value.code == 1 and out["ok"] is False
    assert out["hosts"]["app3"]["status"] == "unreachable"
    assert out["hosts"]["lb"]["status"] == "changed"


# --------------------------------------------------------------------------- rotation on fronts


def test_each_app_server_is_drained_on_the_front_around_its_apply_only() -> None:
    ssh = FakeSsh()
    result = run_push(ssh)
    assert result.ok
    around = [(n, v) for n, v in ssh.log if v != "copy"]
    for name in ("app1", "app2", "app3"):  # check there (held), drain on lb, apply, undrain
        i = around.index((name, "apply"))
        assert around[i - 1:i + 2] == [("lb", "drain"), (name, "apply"), ("lb", "undrain")]
        assert around.index((name, "check")) < i - 1
    drains = [c for n, c in ssh.calls if n == "lb" and verb_of(c) == "drain"]
    assert "fleet.pyz drain 10.0.0.11:80 --app blog --json" in drains[0]
    assert drains[0].startswith("if [ -f /etc/fleet/fleet.toml ]")  # a bare front: no-op
    assert ssh.log.count(("lb", "copy")) == 2  # once for the drains, once for its own push
    rotation = result.hosts[0].rotation
    assert rotation and rotation.applied
    assert rotation.out and rotation.back
    assert rotation.out[1] <= rotation.applied[0] <= rotation.applied[1] <= rotation.back[0]
    assert rotation.fronts == {"lb": {"blog": {"state": "restored"}}}
    assert result.hosts[3].rotation is None  # the front itself is never drained


def test_an_unchanged_app_server_is_not_drained() -> None:
    ssh = FakeSsh({name: (0, report()) for name in ("app1", "app2", "app3", "lb")})
    result = run_push(ssh)
    assert result.ok and ssh.order("drain") == [] and ssh.order("undrain") == []
    order = ssh.order()  # the canary, then app2 and app3 in one wave (in parallel), the front
    assert (order[0], sorted(order[1:3]), order[3:]) == ("app1", ["app2", "app3"], ["lb"])


def test_a_no_op_host_costs_one_copy_and_one_start_of_fleet() -> None:
    ssh = FakeSsh({name: (0, report()) for name in ("app1", "app2", "app3", "lb")})
    result = run_push(ssh)
    assert result.ok and [h.status for h in result.hosts] == ["ok"] * 4
    for name in ("app1", "app2", "app3", "lb"):  # no separate plan, no second start
        sent = [command for host, command in ssh.calls if host == name]
        assert [verb_of(c) for c in sent] == ["copy", "check"], sent
        assert sent[1].endswith("sh bootstrap fleet.pyz apply fleet.toml --json --hold-changes")
    assert result.hosts[0].healthy == "1/1"  # the apply's report, health and all


def test_a_held_host_is_applied_after_its_check_only_once_out_of_rotation() -> None:
    ssh = FakeSsh()  # every host would change
    run_push(ssh, prune=True)
    sent = [verb_of(c) for host, c in ssh.calls if host == "app2"]
    assert sent == ["copy", "check", "apply"]
    check, apply = [c for host, c in ssh.calls if host == "app2"][1:]
    assert check.endswith("apply fleet.toml --json --hold-changes --prune")
    assert apply.endswith("apply fleet.toml --json --prune")


def test_no_drain_deploys_without_touching_the_fronts_first() -> None:
    ssh = FakeSsh()
    run_push(ssh, drain=False)
    assert ssh.order("drain") == [] and ssh.order("undrain") == []
    assert sorted(ssh.order("check")) == ["app2", "app3", "lb"]  # the canary applies at once
    assert ssh.log.index(("lb", "copy")) > ssh.log.index(("app3", "apply"))


def test_a_front_that_cannot_drain_stops_that_servers_deploy() -> None:
    ssh = FakeSsh(verbs={("lb", "drain"): (255, None)})
    result = run_push(ssh, max_failures=5)
    assert ssh.order() == []  # the canary was never applied, nor anything after it
    assert result.hosts[0].status == "failed"
    assert result.hosts[0].error.startswith(
        "not deployed: could not take it out of rotation on lb: unreachable")


def test_a_server_failing_the_fronts_check_stays_out_and_fails() -> None:
    kept = {"apps": {"blog": {"state": "kept", "detail": "health check failed: HTTP 500"}}}
    ssh = FakeSsh(verbs={("lb", "undrain"): (1, kept)})
    result = run_push(ssh)
    assert result.hosts[0].status == "failed" and "canary" in (result.stopped or "")
    assert result.hosts[0].error == ("still out of rotation: lb: blog (health check failed: "
                                     "HTTP 500)")


def test_a_failed_deploy_is_still_put_back_when_the_front_check_passes() -> None:
    ssh = FakeSsh({"app1": (1, report(failed=1, error="deploy: ImportError: no module x"))})
    result = run_push(ssh)
    assert ssh.order("undrain") == ["lb"]  # the old release serves: back into rotation
    assert result.hosts[0].error == "blog: deploy: ImportError: no module x"
    assert result.hosts[0].to_json()["rotation"]["fronts"]["lb"]["blog"]["state"] == "restored"


def test_the_cause_carries_the_last_exception_of_the_apps_failed_step() -> None:
    failing = report(failed=1, error="deploy: release r2 failed its health check")
    failing["steps"] = [{"name": "deploy", "app": "blog", "status": "failed", "log": (
        "[blog] Traceback (most recent call last):\n"
        "[blog]   File \"/srv/fleet/blog/releases/r2/wsgi.py\", line 1, in <module>\n"
        "[blog] ModuleNotFoundError: No module named 'nope'\n"
        "[blog] unable to load app 0 (mountpoint='') (callable not found or import error)")}]
    result = run_push(FakeSsh({"app1": (1, failing)}))
    assert result.hosts[0].error == ("blog: deploy: release r2 failed its health check "
                                     "[ModuleNotFoundError: No module named 'nope']")


def test_a_server_lost_before_its_plan_is_unreachable_and_never_drained() -> None:
    ssh = FakeSsh(verbs={("app2", "plan"): (255, None)})
    result = run_push(ssh, max_failures=1)
    assert result.hosts[1].status == "unreachable" and result.hosts[1].rotation is None
    assert ssh.order("drain") == ["lb", "lb"]  # for app1 and app3 only


def test_push_plan_prints_what_each_host_would_change(monkeypatch, capsys,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FILE)
    pyz = tmp_path / "fleet.pyz"
    pyz.write_bytes(b"PK")
    planned = report(changed=1)
    planned["steps"] = [
        {"name": "packages", "app": None, "status": "ok", "actions": []},
        {"name": "repo", "app": "blog", "status": "would change",
         "actions": ["clone https://git.example.com/blog.git", "check out abc"]}]
    fake = FakeSsh({name: (0, planned if name == "app2" else report())
                    for name in ("app1", "app2", "app3", "lb")})
    monkeypatch.setattr("fleet.cli.push.OpenSSH", lambda config: fake)
    monkeypatch.setattr("sys.argv", ["fleet", "push", str(path), "--pyz", str(pyz), "--plan"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "app1 (10.0.0.11): nothing would change" in out
    assert "app2 (10.0.0.12): 2 change(s)" in out
    assert "  repo blog: clone https://git.example.com/blog.git" in out
    assert "  repo blog: check out abc" in out


def test_progress_says_when_a_server_leaves_and_rejoins_rotation() -> None:
    lines: list[str] = []
    kept = {"apps": {"blog": {"state": "kept", "detail": "health check failed: HTTP 500"}}}
    run_push(FakeSsh(verbs={("lb", "undrain"): (1, kept)}), progress=lines.append)
    assert "app1: out of rotation on lb for blog" in lines
    assert "app1: on lb: blog kept (health check failed: HTTP 500)" in lines


# --------------------------------------------------------------------------- parallel and batches


def many(apps: int, fronts: int = 1) -> str:
    """An inventory of `apps` app servers (app1..) and `fronts` fronts (lb1..), one app."""
    lines = []
    for i in range(1, apps + 1):
        lines += [f"[servers.app{i}]", f'address = "10.0.1.{i}"']
    for i in range(1, fronts + 1):
        lines += [f"[servers.lb{i}]", f'address = "10.0.2.{i}"', 'role = "front"']
    lines += ["[apps.blog]", 'repo = "https://git.example.com/blog.git"',
              'domains = ["blog.example.com"]']
    return "\n".join(lines) + "\n"


class CountingSsh(FakeSsh):
    """FakeSsh that counts the hosts' calls in flight at once (not the fronts' drains). A
    `verb` call of one of the `hosts` waits, up to `patience` seconds, until `meet` calls are
    in flight: a bound that holds shows as exactly `meet`, one that does not as more, with no
    assumption about timing (the wait ends at the meeting, a timeout only where a bound holds
    fewer back)."""

    def __init__(self, *args, verb: str = "plan", hosts: tuple[str, ...] = (), meet: int = 1,
                 patience: float = 5.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.verb, self.hosts, self.meet, self.patience = verb, hosts, meet, patience
        self.in_flight = 0
        self.most = 0
        self.meetings = 0  # how often `meet` calls were in flight: each releases its waiters
        self.changed = threading.Condition()

    def run(self, server: Server, command: str, input: bytes | None = None,
            timeout: float | None = None) -> Result:
        verb = verb_of(command)
        if verb in ("drain", "undrain"):  # the fronts' calls for another host
            return super().run(server, command, input, timeout)
        with self.changed:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            if self.in_flight >= self.meet:
                self.meetings += 1
                self.changed.notify_all()
            elif verb == self.verb and server.name in self.hosts:
                since = self.meetings
                self.changed.wait_for(lambda: self.meetings != since, timeout=self.patience)
        try:
            return super().run(server, command, input, timeout)
        finally:
            with self.changed:
                self.in_flight -= 1


def names(first: int, last: int) -> tuple[str, ...]:
    return tuple(f"app{i}" for i in range(first, last + 1))


def run_many(ssh: FakeSsh, apps: int, fronts: int = 1, **kwargs):
    inventory, data = load_inventory("f.toml", many(apps, fronts))
    return push(inventory, data, ssh, PAYLOAD, **kwargs)


def unchanged(apps: int, fronts: int = 1) -> dict[str, tuple[int, object]]:
    names = [f"app{i}" for i in range(1, apps + 1)] + [f"lb{i}" for i in range(1, fronts + 1)]
    return {name: (0, report()) for name in names}


def test_a_no_op_push_handles_parallel_hosts_at_once_and_never_more() -> None:
    # five would meet if let: the bound of four holds them to a timeout, all four in flight
    ssh = CountingSsh(unchanged(9), verb="copy", hosts=names(2, 6), meet=5, patience=0.5)
    result = run_many(ssh, 9, parallel=4, batch=1)
    assert result.ok and [h.status for h in result.hosts] == ["ok"] * 10
    assert ssh.most == 4  # reached, never passed
    assert [w.name for w in result.waves] == ["canary", "app servers", "fronts"]
    assert result.waves[1].hosts == [f"app{i}" for i in range(2, 10)]
    assert ssh.order("drain") == []  # nothing changed: nothing left rotation


def test_parallel_one_is_one_host_at_a_time() -> None:
    ssh = CountingSsh(unchanged(4), verb="copy", hosts=names(2, 3), meet=2, patience=0.2)
    assert run_many(ssh, 4, parallel=1).ok and ssh.most == 1


def test_changing_servers_deploy_batch_at_a_time_and_out_of_rotation_at_most_batch() -> None:
    ssh = CountingSsh(verb="apply", hosts=names(2, 7), meet=2)  # every host would change
    result = run_many(ssh, 7, parallel=3, batch=2)
    assert result.ok and [h.status for h in result.hosts] == ["changed"] * 8
    assert [(w.name, w.hosts) for w in result.waves] == [
        ("canary", ["app1"]), ("app servers", [f"app{i}" for i in range(2, 8)]),
        ("batch 1", ["app2", "app3"]), ("batch 2", ["app4", "app5"]),
        ("batch 3", ["app6", "app7"]), ("fronts", ["lb1"]), ("fronts batch 1", ["lb1"])]
    out, most = 0, 0  # servers drained and not yet back, as the front saw them
    for name, verb in ssh.log:
        if name == "lb1" and verb in ("drain", "undrain"):
            out += 1 if verb == "drain" else -1
            most = max(most, out)
    assert out == 0 and most == 2
    applies = ssh.order()
    assert applies[0] == "app1" and applies[-1] == "lb1"
    assert [sorted(applies[i:i + 2]) for i in (1, 3, 5)] == [["app2", "app3"], ["app4", "app5"],
                                                            ["app6", "app7"]]
    assert ssh.most <= 3  # the check wave: at most --parallel at once


def test_within_a_batch_parallel_still_bounds_the_hosts_at_once() -> None:
    ssh = CountingSsh(verb="apply", hosts=names(2, 4), meet=3, patience=0.5)
    result = run_many(ssh, 5, fronts=0, parallel=2, batch=4)
    assert result.ok and ssh.most == 2
    assert [w.name for w in result.waves] == ["canary", "app servers", "batch 1"]


def test_a_failed_batch_stops_later_batches_and_says_they_were_not_deployed() -> None:
    ssh = FakeSsh({"app3": (1, report(failed=1, error="repo: boom"))})
    result = run_many(ssh, 6, batch=2, max_failures=0)
    states = {h.name: (h.status, h.error) for h in result.hosts}
    assert states["app2"] == ("changed", None) and states["app3"][0] == "failed"
    for name in ("app4", "app5", "app6"):  # planned in the check, never applied
        assert states[name] == ("skipped", "not deployed: stopped before its batch")
    assert states["lb1"] == ("skipped", "not started")
    assert sorted(ssh.order()) == ["app1", "app2", "app3"]
    assert "more than --max-failures 0" in (result.stopped or "")
    assert result.to_json()["counts"] == {"ok": 0, "changed": 2, "failed": 1,
                                          "unreachable": 0, "skipped": 4}


def test_max_failures_lets_later_batches_run_while_failures_stay_within_it() -> None:
    ssh = FakeSsh({"app3": (1, report(failed=1, error="repo: boom"))})
    result = run_many(ssh, 6, batch=2, max_failures=1)
    assert sorted(ssh.order()) == ["app1", "app2", "app3", "app4", "app5", "app6", "lb1"]
    assert result.stopped is None and not result.ok


def test_a_host_failing_its_no_op_apply_in_the_check_counts_against_max_failures() -> None:
    answers = unchanged(5)
    answers["app2"] = (0, report())  # plans clean
    ssh = FakeSsh(answers, verbs={("app2", "apply"): (1, report(failed=1, error="health: 502")),
                                  ("app4", "plan"): (0, report(changed=1))})
    result = run_many(ssh, 5, max_failures=0)
    states = {h.name: h.status for h in result.hosts}
    assert states["app2"] == "failed" and states["app4"] == "skipped"
    assert states["app3"] == states["app5"] == "ok"  # the check wave ran to its end


def test_each_wave_reports_its_time_in_progress_json_and_the_recap(monkeypatch, capsys,
                                                                  tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_many(FakeSsh(unchanged(3)), 3, progress=lines.append)
    timed = [line for line in lines if " host(s) in " in line]
    assert [line.split(":")[0] for line in timed] == ["canary", "app servers", "fronts"]
    assert timed[1].startswith("app servers: 2 host(s) in ") and timed[1].endswith(" s")
    waves = result.to_json()["waves"]
    assert [(w["name"], w["hosts"]) for w in waves] == [
        ("canary", ["app1"]), ("app servers", ["app2", "app3"]), ("fronts", ["lb1"])]
    assert all(isinstance(w["seconds"], float) and w["seconds"] >= 0 for w in waves)
    path = tmp_path / "fleet.toml"
    path.write_text(many(3))
    pyz = tmp_path / "fleet.pyz"
    pyz.write_bytes(b"PK")
    monkeypatch.setattr("fleet.cli.push.OpenSSH", lambda config: FakeSsh(unchanged(3)))
    monkeypatch.setattr("sys.argv", ["fleet", "push", str(path), "--pyz", str(pyz),
                                     "--parallel", "2"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    captured = capsys.readouterr()
    assert info.value.code == 0
    assert "waves: canary 1 host in " in captured.out
    assert ", app servers 2 hosts in " in captured.out
    for line in captured.err.splitlines():  # progress: whole lines, one host or wave each
        assert line.startswith(("canary: ", "app servers: ", "fronts: ")), line


def test_parallel_must_be_at_least_one(monkeypatch, capsys, tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FILE)
    monkeypatch.setattr("sys.argv", ["fleet", "push", str(path), "--parallel", "0"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2 and "--parallel" in capsys.readouterr().err
