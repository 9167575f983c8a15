"""The operator's view on a real bare Debian: a plan that changes nothing and hides secrets,
progress on a terminal, JSON with nothing else on stdout, status of a healthy and a
crash-looping app, check, logs, and remove-app. One server for the module, in order."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from fleet.host.layout import BASE_PACKAGES
from tests.e2e.helpers import fleet, get, install_fleet, service_pids, uwsgi_processes
from tests.harness.server import BareServer, NoResponse

APPS = Path(__file__).resolve().parents[1] / "apps"
GREETING = "hello from alpha"
# Runs a command under a new pseudo-terminal, as an operator's ssh session would.
PTY = "import os, pty, sys; sys.exit(os.waitstatus_to_exitcode(pty.spawn(sys.argv[1:])))"
SPINNER = re.compile("[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]")


def fleet_toml(git_remote) -> str:
    return f"""
[apps.alpha]
repo = "{git_remote.url('alpha')}"
domains = ["alpha.test"]
processes = 2
[apps.alpha.env]
GREETING = "{GREETING}"
[apps.alpha.health]
path = "/health"

[apps.beta]
repo = "{git_remote.url('beta')}"
domains = ["beta.test"]
[apps.beta.health]
path = "/health"
"""


def snapshot(box: BareServer) -> list[str]:
    """Every path under /etc and /srv with owner, mode, size and mtime."""
    out = box.run(["find", "/etc", "/srv", "-xdev", "-printf", r"%p %U %G %m %s %T@\n"],
                  check=True).stdout
    return sorted(out.splitlines())


def changed_steps(data: dict) -> list[tuple[str, str | None]]:
    return [(s["name"], s["app"]) for s in data["steps"] if s["status"] != "ok"]


def json_of(box: BareServer, *args: str) -> tuple[int, dict]:
    result = fleet(box, *args, "--json")
    text = result.stdout
    assert text.strip().startswith("{") and text.strip().endswith("}"), (args, text[:2000],
                                                                         result.stderr[-2000:])
    return result.returncode, json.loads(text)


def uwsgi_pids(pids: dict[str, set[str]], user: str) -> set[str]:
    """uWSGI PIDs of one user, whatever the binary's name (uwsgi, uwsgi-core)."""
    return set().union(*(v for k, v in pids.items()
                         if k.startswith("uwsgi") and k.endswith(f":{user}")))


def vassals_of(box: BareServer, name: str) -> list[str]:
    listing = box.run(["ls", "/etc/uwsgi/vassals"], check=True).stdout.split()
    return [f for f in listing if f == f"{name}.ini" or f.startswith(f"{name}@")]


@pytest.fixture(scope="module")
def box(server_factory, git_remote, fleet_pyz):
    for name, source in (("alpha", "alpha"), ("beta", "beta"), ("broken-import", "broken-import")):
        if name not in git_remote.repos_created:
            git_remote.create_repo(name, APPS / source)
    server: BareServer = server_factory()
    install_fleet(server, fleet_pyz)
    server.write_file("/root/fleet.toml", fleet_toml(git_remote))
    # bootstrap installs python3 and fleet; everything else must come from fleet apply.
    result = server.run(["sh", "/root/bootstrap", "/root/fleet.pyz", "--version"], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return server


@pytest.fixture(scope="module")
def applied(box: BareServer):
    """The first apply, run under a pseudo-terminal: it has the long steps (apt, clone, pip)."""
    result = box.run(["python3", "-c", PTY, "/usr/local/bin/fleet", "apply", "/root/fleet.toml"],
                     env={"TERM": "xterm-256color", "COLUMNS": "120"}, timeout=1500)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    return result


def test_plan_on_bare_server_lists_provisioning_and_changes_nothing(box, git_remote) -> None:
    before = snapshot(box)
    result = fleet(box, "plan", "/root/fleet.toml")
    code, data = json_of(box, "plan", "/root/fleet.toml")
    after = snapshot(box)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert code == 0 and data["failed"] == 0
    assert before == after, sorted(set(before) ^ set(after))[:40]
    out = result.stdout
    for expected in (f"install {' '.join(BASE_PACKAGES)}", "create user alpha",
                     "create user beta", f"clone {git_remote.url('alpha')}",
                     "start fleet-emperor.service", "start nginx",
                     "create /etc/fleet/apps/alpha.toml"):
        assert expected in out, (expected, out[-6000:])
    # The commit cannot be known before git is installed: said so, never "ok" or "skipped".
    assert re.search(r"^unknown +\w+ alpha \(decided when the steps before it have run\)",
                     out, re.M), out[-6000:]
    assert f"resolve HEAD of {git_remote.url('alpha')} (decided when" in out
    assert not re.search(r"^skipped", out, re.M)
    assert GREETING not in out and 'GREETING = "********"' in out


def test_progress_is_live_on_a_terminal(applied) -> None:
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", applied.stdout)
    assert SPINNER.search(out), out[-3000:]
    # The live line counts seconds while a long step runs, e.g. "virtualenv alpha 3.4 s".
    assert re.search(r"virtualenv alpha \d+\.\d s", out), out[-3000:]
    assert "\x1b[" in applied.stdout  # drawn with terminal control sequences
    assert re.search(r"\d+ ok, \d+ changed, 0 failed", out), out[-3000:]


def test_json_output_is_json_and_nothing_else(box, applied) -> None:
    for args in (["apply"], ["plan"], ["status"], ["check"]):
        code, data = json_of(box, *args)
        assert code == 0, (args, data)
    assert json_of(box, "apply")[1]["changed"] == 0


def test_plan_after_apply_has_nothing_to_do(box, applied) -> None:
    result = fleet(box, "plan")
    assert result.returncode == 0
    assert "Nothing would change" in result.stdout, result.stdout[-4000:]


def test_editing_processes_plans_exactly_that_vassal(box, applied) -> None:
    path = "/etc/fleet/apps/alpha.toml"
    original = box.read_file(path).decode()
    assert "processes = 2" in original
    box.write_file(path, original.replace("processes = 2", "processes = 3"), 0o600)
    try:
        before = snapshot(box)
        code, data = json_of(box, "plan")
        result = fleet(box, "plan")
        assert snapshot(box) == before
    finally:
        box.write_file(path, original, 0o600)
    assert code == 0 and changed_steps(data) == [("vassal", "alpha")], changed_steps(data)
    out = result.stdout
    assert re.search(r"^\+\+\+ /etc/uwsgi/vassals/alpha@\w+\.ini$", out, re.M), out
    assert len(re.findall(r"^\+\+\+ ", out, re.M)) == 1, out
    assert "-processes = 2\n+processes = 3\n" in out
    assert "reloads" in out  # the consequence is named: the Emperor reloads that vassal


def test_plan_and_verbose_output_mask_env_values(box, applied, git_remote) -> None:
    changed = fleet_toml(git_remote).replace(GREETING, "s3cret-new-value")
    box.write_file("/root/changed.toml", changed, 0o600)
    before = snapshot(box)
    result = fleet(box, "-v", "plan", "/root/changed.toml")
    assert snapshot(box) == before
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout + result.stderr
    assert "s3cret" not in text and GREETING not in text
    # The stored app file's diff is shown with the value masked; the env file is hidden.
    assert "+++ /etc/fleet/apps/alpha.toml\n(only masked values change)" in result.stdout
    assert "+++ /etc/fleet/env/alpha.env\n(secret content" in result.stdout
    assert re.search(r"^\$ git .*ls-remote", result.stderr, re.M), result.stderr[-3000:]


def test_check_passes_when_every_app_is_healthy(box, applied) -> None:
    code, data = json_of(box, "check")
    assert code == 0 and data["failed"] == 0
    assert {n: a["health"] for n, a in data["apps"].items()} == {"alpha": "passed",
                                                                  "beta": "passed"}


def test_logs_show_and_follow_an_apps_lines(box, applied) -> None:
    result = fleet(box, "logs", "alpha", "-n", "5")
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and 1 <= len(lines) <= 5, result
    assert not any(line.startswith("[beta") for line in lines)
    unknown = fleet(box, "logs", "nosuch")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr
    nginx = fleet(box, "logs", "alpha", "--nginx")
    assert nginx.returncode == 0 or "no nginx logs for alpha" in nginx.stderr, nginx
    # Follow: new lines appear as the vassal reloads; Ctrl-C ends it cleanly.
    follow = box.run("(sleep 2; touch /etc/uwsgi/vassals/beta@*.ini) & "
                     "timeout -s INT --preserve-status 10 fleet logs beta -f -n 0",
                     timeout=60)
    assert follow.returncode == 0, follow
    assert follow.stdout.strip(), follow
    assert "Traceback" not in follow.stderr


@pytest.fixture(scope="module")
def broken(box, applied, git_remote):
    """beta crash-loops (its live code stops importing) and a new app fails its first deploy."""
    release = box.run(["readlink", "/srv/fleet/beta/current"], check=True).stdout.strip()
    wsgi = f"{release}/wsgi.py"
    box.write_file(wsgi, "import does_not_exist_xyz  # noqa\n" + box.read_file(wsgi).decode())
    box.run("touch /etc/uwsgi/vassals/beta@*.ini", check=True)
    added = fleet(box, "add-app", "broken", "--repo", git_remote.url("broken-import"),
                  "--domain", "broken.test")
    assert added.returncode == 1, added
    return added


def test_status_reports_healthy_and_crash_looping_apps(box, broken) -> None:
    deadline = time.monotonic() + 60
    while True:
        code, data = json_of(box, "status")
        beta = data["apps"]["beta"]
        # The state turns as soon as the Emperor sees the exit; the cause is in the journal
        # once journald has the vassal's lines (it lags under load): wait for both.
        problem = beta.get("problem") or ""
        named = "does_not_exist_xyz" in problem or "failed starts" in problem
        if (beta["state"] in ("throttled", "failing") and named) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert code == 0
    assert beta["state"] in ("throttled", "failing") and beta["health"] == "failed", beta
    assert "does_not_exist_xyz" in beta["problem"] or "failed starts" in beta["problem"], beta
    assert data["apps"]["broken"]["health"] == "failed"
    assert data["apps"]["broken"]["problem"], data["apps"]["broken"]
    alpha = data["apps"]["alpha"]
    assert alpha["state"] == "running" and alpha["health"] == "passed", alpha
    procs = {p["pid"] for p in uwsgi_processes(box) if p["user"] == "alpha"}
    assert alpha["workers"]["total"] == 2 and len(procs) == 3  # master + 2 workers
    assert {str(p) for p in alpha["workers"]["pids"]} < procs
    text = fleet(box, "status")
    assert text.returncode == 0 and "beta" in text.stdout, text
    assert "throttled" in text.stdout or "failing" in text.stdout, text.stdout


def test_check_fails_when_an_app_is_broken(box, broken) -> None:
    code, data = json_of(box, "check", "--timeout", "2")
    assert code == 1 and data["failed"] == 2, data
    assert data["apps"]["alpha"]["health"] == "passed"
    assert data["apps"]["beta"]["health"] == "failed"


def test_remove_app_stops_it_keeps_its_data_and_leaves_others_alone(box, broken) -> None:
    before = service_pids(box)
    code, data = json_of(box, "remove-app", "beta")
    assert code == 0 and data["failed"] == 0, data
    assert vassals_of(box, "beta") == []
    for gone in ("/etc/nginx/sites-enabled/fleet-beta.conf", "/etc/fleet/apps/beta.toml",
                 "/etc/fleet/env/beta.env"):
        assert not box.exists(gone), gone
    assert box.exists("/srv/fleet/beta/shared/instance")
    assert box.run(["getent", "passwd", "beta"]).returncode == 0
    with pytest.raises(NoResponse):
        box.http("/", host="beta.test")
    after = service_pids(box)
    assert uwsgi_pids(after, "alpha") == uwsgi_pids(before, "alpha")
    assert uwsgi_pids(after, "root") == uwsgi_pids(before, "root")  # the Emperor
    assert after["nginx:root"] == before["nginx:root"]  # reloaded, not restarted
    assert get(box, "alpha.test")[0] == 200
    assert "beta" not in json_of(box, "status")[1]["apps"]
    plan = json_of(box, "plan")[1]  # the store and the files agree: nothing stale is left
    assert not [s for s in changed_steps(plan) if s[0] in ("fleet config", "remove stale apps")]


def test_remove_app_purge_deletes_data_and_user(box, broken) -> None:
    before = service_pids(box)
    result = fleet(box, "remove-app", "broken", "--purge")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert not box.exists("/srv/fleet/broken")
    assert not box.exists("/var/lib/fleet/apps/broken.json")
    assert box.run(["getent", "passwd", "broken"]).returncode != 0
    assert box.run(["getent", "group", "broken"]).returncode != 0
    assert uwsgi_pids(service_pids(box), "alpha") == uwsgi_pids(before, "alpha")
    again = fleet(box, "remove-app", "broken")
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
