"""fleet never makes a server worse: bad input touches nothing, a failing app fails alone, killed
runs and killed services recover, drift is repaired, apps are isolated and secrets stay secret.
One server for the module, in order; its first apply is SIGKILLed inside dpkg."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    describe,
    fleet,
    fleet_json,
    get,
    install_fleet,
    proc_table,
    service_pids,
    uwsgi_processes,
)
from tests.e2e.reliability_helpers import (
    BG_LOG,
    alive,
    changed_steps,
    failed_steps,
    kill_group,
    probe_source,
    snapshot,
    start_background,
    wait_for_cmdline,
    wait_for_comm,
)
from tests.harness.server import BareServer, NoResponse

APPS = Path(__file__).resolve().parents[1] / "apps"
SECRET = "tok-" + secrets.token_hex(12)
SECRETS_FILE = "/etc/fleet-secrets/one.env"
REQS = "flask==3.0.3\n"
STATE: dict[str, object] = {}


def fleet_toml(git_remote, extra: str = "") -> str:
    return f"""
[apps.one]
repo = "{git_remote.url('rel-one')}"
domains = ["one.test"]
env_file = "{SECRETS_FILE}"
[apps.one.env]
APP_LABEL = "one"
PUBLIC_SETTING = "public-value"
[apps.one.health]
timeout = 20

[apps.two]
repo = "{git_remote.url('rel-two')}"
domains = ["two.test"]
[apps.two.env]
APP_LABEL = "two"
[apps.two.health]
timeout = 20
{extra}"""


def serves(box: BareServer, host: str, prefix: str, attempts: int = 1) -> None:
    """GET / until it answers 200 with `prefix` (one try a second), else fail with the last."""
    for attempt in range(attempts):
        try:
            status, body = get(box, host)
        except NoResponse as exc:
            status, body = 0, str(exc)
        if status == 200 and body.startswith(prefix):
            return
        if attempt < attempts - 1:
            time.sleep(1)
    raise AssertionError((host, status, body[:300]))


def apply_ok(box: BareServer, *args: str):
    run = fleet_json(box, "apply", *args)
    assert run.returncode == 0, describe(run)
    return run


@pytest.fixture(scope="module")
def box(server_factory, git_remote, fleet_pyz):
    for name in ("rel-one", "rel-two"):
        if name not in git_remote.repos_created:
            git_remote.create_repo(name, files={"wsgi.py": probe_source("v1"),
                                                "requirements.txt": REQS})
    server: BareServer = server_factory()
    install_fleet(server, fleet_pyz)
    server.write_file("/root/fleet.toml", fleet_toml(git_remote))
    server.write_file(SECRETS_FILE, f"# secrets of app one\nSECRET_TOKEN={SECRET}\n", 0o600)
    server.run(["chmod", "700", "/etc/fleet-secrets"], check=True)
    # bootstrap installs python3 and /usr/local/bin/fleet; the apply itself runs below.
    result = server.run(["sh", "/root/bootstrap", "/root/fleet.pyz", "--version"], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return server


@pytest.fixture(scope="module")
def provisioned(box: BareServer):
    """First apply SIGKILLed (with apt-get and dpkg) while dpkg installs packages, then
    `fleet apply` again: it must finish what dpkg left and converge."""
    pid = start_background(box, "apply", "/root/fleet.toml")
    saw_dpkg = wait_for_comm(box, "dpkg", timeout=300)
    time.sleep(1.5)  # well inside the unpacking
    assert kill_group(box, pid)
    STATE["killed_log"] = box.run(["cat", BG_LOG]).stdout
    run = fleet_json(box, "apply", "/root/fleet.toml")
    STATE["recovery"] = run
    return saw_dpkg, run


def test_apply_killed_inside_dpkg_then_apply_converges(box, provisioned) -> None:
    saw_dpkg, run = provisioned
    assert saw_dpkg, STATE["killed_log"]
    assert run.returncode == 0, describe(run)
    assert {n: a["health"] for n, a in run.data["apps"].items()} == {
        "one": "passed", "two": "passed"}
    serves(box, "one.test", "one v1")
    serves(box, "two.test", "two v1")
    assert box.run(["dpkg", "--audit"]).stdout.strip() == ""
    assert box.run(["sh", "-c", "ls -A /var/lib/dpkg/updates"]).stdout.strip() == ""


# ----------------------------------------------------------------------------- bad input

BAD_APP = 'repo = "git://127.0.0.1:1/x.git"\ndomains = ["new.test"]\n'
BAD_FILES = {
    "invalid TOML": ("[apps.x\nrepo = 1\n", "invalid TOML"),
    "unknown key": (f"[apps.x]\n{BAD_APP}procesess = 2\n",
                    "apps.x.procesess: unknown key (did you mean 'processes'?)"),
    "missing key": ('[apps.x]\ndomains = ["new.test"]\n', "apps.x.repo: required key is missing"),
    "wrong type": (f"[apps.x]\n{BAD_APP}processes = \"4\"\n",
                   "apps.x.processes: expected an integer"),
    "name ../x": (f'[apps."../x"]\n{BAD_APP}', "invalid app name '../x'"),
    "uppercase name": (f"[apps.Shop]\n{BAD_APP}", "invalid app name 'Shop'"),
    "name too long": (f"[apps.{'a' * 33}]\n{BAD_APP}", "at most 32 characters"),
    "invalid domain": ('[apps.x]\nrepo = "r"\ndomains = ["bad_domain..test"]\n',
                       "apps.x.domains[0]: 'bad_domain..test' is not a valid"),
    "domain of a stored app": ('[apps.x]\nrepo = "r"\ndomains = ["one.test"]\n',
                               "one.test"),
    "path escaping the repo": (f'[apps.x]\n{BAD_APP}path = "../../etc"\n',
                               "apps.x.path: '../../etc' must be a relative path"),
    "static escaping the app": (f'[apps.x]\n{BAD_APP}[apps.x.static]\n"/s" = "../../../etc"\n',
                                "apps.x.static./s: '../../../etc' must be a relative path"),
    "relative env_file": (f'[apps.x]\n{BAD_APP}env_file = "secrets.env"\n',
                          "apps.x.env_file: 'secrets.env' must be an absolute path"),
    "missing env_file": (f'[apps.x]\n{BAD_APP}env_file = "/nope.env"\n',
                         "/nope.env: apps.x.env_file: no such file"),
    "world-readable env_file": (f'[apps.x]\n{BAD_APP}env_file = "/etc/hostname"\n',
                                "apps.x.env_file: must be owned by root and readable by nobody"),
    "nginx directive in static": (f'[apps.x]\n{BAD_APP}[apps.x.static]\n"/s" = "s;x"\n',
                                  "apps.x.static./s: 's;x' may only use letters"),
    "vassal_set uid": ('[emperor.vassal_set]\nuid = "root"\n',
                       "emperor.vassal_set.uid: is not a uWSGI tuning option"),
    "health.path with a space": (f'[apps.x]\n{BAD_APP}[apps.x.health]\npath = "/a b"\n',
                                 "apps.x.health.path: '/a b' is not a URL path"),
}
BAD_ARGS = {
    "unknown option": (["apply", "--frobnicate"], "No such option: --frobnicate"),
    # A value on the command line is refused, naming the key only (issue 14).
    "--env pair": (["add-app", "x", "--repo", "r", "--domain", "x.test", "--env", "NOPE=v"],
                   "--env: NOPE: a value on the command line is readable by every local user"),
    "bad --env file line": (["add-app", "x", "--repo", "r", "--domain", "x.test",
                             "--env-file", "/etc/hostname"],
                            "/etc/hostname: line 1: expected KEY=VALUE"),
}


@pytest.fixture(scope="module")
def pristine(box, provisioned) -> str:
    return snapshot(box)


@pytest.mark.parametrize("case", [*BAD_FILES, *BAD_ARGS])
def test_bad_input_exits_2_with_one_line_and_touches_nothing(box, pristine, case) -> None:
    if case in BAD_FILES:
        text, expected = BAD_FILES[case]
        box.write_file("/root/bad.toml", text)
        result = fleet(box, "apply", "/root/bad.toml")
        source = "/etc/hostname" if "world-readable" in case else "/root/bad.toml"
        assert f"fleet: {source}: " in result.stderr or expected.startswith("/"), result.stderr
    else:
        args, expected = BAD_ARGS[case]
        result = fleet(box, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("fleet: ") and expected in result.stderr, result.stderr
    assert snapshot(box) == pristine


# ----------------------------------------------------------------------------- isolation


def test_vassals_never_run_as_root_and_their_inis_are_root_only(box, provisioned) -> None:
    procs = uwsgi_processes(box)
    root = [p for p in procs if p["user"] == "root"]
    assert len(root) == 1 and root[0]["pid"] == box.run(
        ["systemctl", "show", "-p", "MainPID", "--value", "fleet-emperor"]).stdout.strip()
    assert {p["user"] for p in procs} == {"root", "one", "two"}, procs
    stat = box.run("stat -c '%U:%G %a %n' /etc/uwsgi/vassals/*.ini /etc/uwsgi/vassals "
                   "/etc/uwsgi/emperor.ini", check=True).stdout.splitlines()
    assert all(line.split()[0] == "root:root" for line in stat), stat
    assert all(line.split()[1] in ("600", "644", "755") for line in stat), stat
    for user in ("one", "two"):
        ini = box.run(f"ls /etc/uwsgi/vassals/{user}@*.ini", check=True).stdout.split()[0]
        denied = box.run(["runuser", "-u", user, "--", "sh", "-c", f"echo x >> {ini}"])
        assert denied.returncode != 0, ini


@pytest.mark.parametrize("path", ["/srv/fleet/{o}/current/wsgi.py", "/srv/fleet/{o}/venvs",
                                  "/srv/fleet/{o}/shared/instance", "/srv/fleet/{o}/repo.git",
                                  "/etc/fleet/env/{o}.env", "/etc/fleet/apps/{o}.toml",
                                  SECRETS_FILE])
def test_one_app_user_cannot_read_another_apps_files(box, provisioned, path) -> None:
    for user, other in (("two", "one"), ("one", "two")):
        target = path.format(o=other)
        if user == "one" and target == SECRETS_FILE:
            continue
        assert box.exists(target), target
        cmd = f"cat {target} || ls {target}"
        result = box.run(["runuser", "-u", user, "--", "sh", "-c", cmd])
        assert result.returncode != 0 and "Permission denied" in result.stderr, (user, target)
    # ...while its own user can run its code.
    own = box.run(["runuser", "-u", "one", "--", "cat", "/srv/fleet/one/current/wsgi.py"])
    assert own.returncode == 0


def test_sockets_accept_nginx_only(box, provisioned) -> None:
    out = box.run("stat -c '%U:%G %a %F %n' /run/fleet/one/*.sock /run/fleet/one",
                  check=True).stdout.splitlines()
    sock, run_dir = out[0].split(), out[1].split()
    assert sock[:2] == ["one:www-data", "660"], out
    assert run_dir[:2] == ["one:www-data", "750"], out
    name = sock[-1]
    denied = box.run(["runuser", "-u", "two", "--", "python3", "-c",
                      f"import socket; s = socket.socket(socket.AF_UNIX); s.connect('{name}')"])
    assert denied.returncode != 0 and "PermissionError" in denied.stderr
    allowed = box.run(["runuser", "-u", "www-data", "--", "python3", "-c",
                       f"import socket; s = socket.socket(socket.AF_UNIX); s.connect('{name}')"])
    assert allowed.returncode == 0, allowed.stderr


def test_nginx_hides_its_version_and_drops_unknown_hosts(box, provisioned) -> None:
    response = box.http("/", host="one.test")
    assert response.headers.get("server") == "nginx", response.headers
    missing = box.http("/nope-404", host="one.test")
    assert "nginx/" not in missing.body and "nginx/" not in missing.headers.get("server", "")
    with pytest.raises(NoResponse) as info:
        box.http("/", host="unknown.example")
    assert info.value.reason in ("closed", "reset")


# ----------------------------------------------------------------------------- secrets


def test_env_and_env_file_reach_the_app_but_never_fleets_output(box, provisioned) -> None:
    assert get(box, "one.test", "/env/SECRET_TOKEN") == (200, SECRET)
    assert get(box, "one.test", "/env/PUBLIC_SETTING") == (200, "public-value")
    assert get(box, "two.test", "/env/SECRET_TOKEN") == (200, "<unset>")
    outputs = [STATE["killed_log"], STATE["recovery"].result.stdout,  # type: ignore[union-attr]
               STATE["recovery"].result.stderr]  # type: ignore[union-attr]
    for args in (["-v", "apply"], ["plan"], ["apply", "--json"], ["status"], ["status", "--json"],
                 ["releases", "one"], ["check"]):
        result = fleet(box, *args)
        outputs += [result.stdout, result.stderr]
    outputs.append(box.journal(lines=5000))
    leaks = [text[:2000] for text in outputs if SECRET in text]
    assert not leaks, leaks
    # No file anyone but root (or app one) could read holds it.
    for user in ("nobody", "two"):
        found = box.run(["runuser", "-u", user, "--", "grep", "-rlsF", SECRET, "/etc", "/srv",
                         "/var", "/run", "/tmp", "/home", "/usr/local"])
        assert found.stdout.strip() == "", (user, found.stdout)


def test_changed_secret_reloads_only_that_app(box, provisioned) -> None:
    before = service_pids(box)
    box.write_file(SECRETS_FILE, "SECRET_TOKEN=rotated-value-1\n", 0o600)
    run = apply_ok(box)
    # A new environment is served by the commit's twin release, gated beside the live vassal
    # (issue 20: a vassal reloaded in place drops requests).
    assert changed_steps(run) == {("release", "one"), ("deploy", "one"), ("nginx site", "one"),
                                  ("nginx", None), ("retire", "one")}, changed_steps(run)
    assert get(box, "one.test", "/env/SECRET_TOKEN") == (200, "rotated-value-1")
    after = service_pids(box)
    def of(pids: dict[str, set[str]], user: str) -> set[str]:
        return {p for key, found in pids.items() if key.endswith(f":{user}") for p in found
                if key.startswith("uwsgi")}

    assert of(after, "two") == of(before, "two") and of(before, "two")
    assert of(after, "one") != of(before, "one")
    assert after.get("nginx:root") == before.get("nginx:root")
    assert "rotated-value-1" not in run.result.stdout + run.result.stderr


# ----------------------------------------------------------------------------- drift

DRIFTS = {
    "vassal ini deleted": ("rm /etc/uwsgi/vassals/one@*.ini", {("vassal", "one")}),
    "vassal ini edited": ("sed -i 's/^processes = .*/processes = 1/' /etc/uwsgi/vassals/two@*.ini",
                          {("vassal", "two")}),
    "nginx site edited": ("echo '# edited' >> /etc/nginx/sites-enabled/fleet-one.conf",
                          {("nginx site", "one"), ("nginx", None)}),
    "emperor unit edited": ("sed -i 's/^Restart=.*/Restart=no/' "
                            "/etc/systemd/system/fleet-emperor.service", {("emperor", None)}),
    "catch-all removed": ("rm /etc/nginx/conf.d/fleet.conf",
                          {("nginx config", None), ("nginx", None)}),
    "nginx stopped": ("systemctl stop nginx", {("nginx", None)}),
    "nginx disabled": ("systemctl disable --quiet nginx", {("nginx", None)}),
    "emperor stopped": ("systemctl stop fleet-emperor", {("emperor", None)}),
    "emperor disabled": ("systemctl disable --quiet fleet-emperor", {("emperor", None)}),
    "venv deleted": ("rm -rf /srv/fleet/two/venvs/*", {("virtualenv", "two")}),
    "python link broken": ("ln -sfn /nonexistent /srv/fleet/one/venvs/*/bin/python",
                           {("virtualenv", "one")}),
    "app dir mode": ("chmod 755 /srv/fleet/one", {("app directories", "one")}),
    "app dir owner": ("chown two /srv/fleet/one/shared", {("app directories", "one")}),
    "run dir owner": ("chown root:root /run/fleet/two", {("runtime directories", None)}),
    "run dir removed": ("rm -rf /run/fleet/two",
                        {("runtime directories", None), ("vassal", "two")}),
    "stale app": ("cp /etc/nginx/sites-enabled/fleet-two.conf /etc/nginx/sites-enabled/"
                  "fleet-ghost.conf && sed -i 's/two.test/ghost.test/' "
                  "/etc/nginx/sites-enabled/fleet-ghost.conf && "
                  "echo 'A=1' > /etc/fleet/env/ghost.env && systemctl reload nginx",
                  {("remove stale apps", None)}),
}


@pytest.mark.parametrize("drift", list(DRIFTS))
def test_drift_is_repaired_and_reported_for_the_exact_item(box, provisioned, drift) -> None:
    command, expected = DRIFTS[drift]
    box.run(command, check=True)
    run = apply_ok(box)
    assert changed_steps(run) == expected, json.dumps(run.data["steps"])[:4000]
    serves(box, "one.test", "one ", attempts=10)
    serves(box, "two.test", "two ", attempts=10)
    again = fleet_json(box, "apply")
    assert again.returncode == 0 and changed_steps(again) == set(), changed_steps(again)


def test_deleted_app_user_is_recreated_and_the_app_serves_again(box, provisioned) -> None:
    box.run(["userdel", "-f", "one"], check=True)
    assert box.run(["getent", "passwd", "one"]).returncode != 0
    run = apply_ok(box)
    steps = changed_steps(run)
    assert {("user", "one"), ("app directories", "one"), ("vassal", "one")} <= steps, steps
    assert not any(app == "two" for _, app in steps), steps
    serves(box, "one.test", "one ", attempts=10)
    users = {p["user"] for p in uwsgi_processes(box)}
    assert "one" in users and not any(u.isdigit() for u in users), users
    owner = box.run(["stat", "-c", "%U:%G", "/srv/fleet/one/shared/instance"]).stdout.strip()
    assert owner == "one:one", owner
    again = fleet_json(box, "apply")
    assert again.returncode == 0 and changed_steps(again) == set(), changed_steps(again)


# ----------------------------------------------------------------------------- failing apps


def test_a_failing_app_fails_alone(box, git_remote) -> None:
    for name, source in (("rel-broken-reqs", "broken-reqs"),
                         ("rel-broken-import", "broken-import")):
        if name not in git_remote.repos_created:
            git_remote.create_repo(name, APPS / source)
    git_remote.commit("rel-two", {"wsgi.py": "import does_not_exist_two  # noqa\n"})
    extra = f"""
[apps.bad-repo]
repo = "git://127.0.0.1:1/unreachable.git"
domains = ["bad-repo.test"]
[apps.bad-ref]
repo = "{git_remote.url('rel-one')}"
ref = "no-such-branch"
domains = ["bad-ref.test"]
[apps.bad-reqs]
repo = "{git_remote.url('rel-broken-reqs')}"
domains = ["bad-reqs.test"]
[apps.bad-import]
repo = "{git_remote.url('rel-broken-import')}"
domains = ["bad-import.test"]
[apps.bad-import.health]
timeout = 20
"""
    box.write_file("/root/bad-apps.toml", fleet_toml(git_remote, extra))
    run = fleet_json(box, "apply", "/root/bad-apps.toml")
    assert run.returncode == 1, describe(run)
    health = {n: a["health"] for n, a in run.data["apps"].items()}
    assert health == {"one": "passed", "two": "failed", "bad-repo": "failed",
                      "bad-ref": "failed", "bad-reqs": "failed", "bad-import": "failed"}, health
    failed = failed_steps(run)
    assert failed["bad-repo"]["name"] == "repo" and "unreachable" in json.dumps(failed["bad-repo"])
    assert "ref 'no-such-branch' not found" in failed["bad-ref"]["error"]
    assert failed["bad-reqs"]["name"] == "virtualenv"
    assert "this-package-does-not-exist" in json.dumps(failed["bad-reqs"])
    assert "health check" in failed["bad-import"]["error"]
    assert "does_not_exist_xyz" in (failed["bad-import"].get("log") or "")
    assert "previous release keeps serving" in failed["two"]["error"]
    serves(box, "one.test", "one v1")
    serves(box, "two.test", "two v1")  # the last good release of two keeps serving
    # Put it right: the failing apps go, two gets a good commit again.
    git_remote.commit("rel-two", {"wsgi.py": probe_source("v2")})
    apply_ok(box, "--prune", "/root/fleet.toml")
    serves(box, "two.test", "two v2")


# ----------------------------------------------------------------------------- faults


def test_second_run_waits_for_the_first_and_names_its_pid(box, git_remote) -> None:
    git_remote.commit("rel-one", {"wsgi.py": probe_source("v2")})
    box.run(["truncate", "-s", "0", "/run/fleet.host.lock"], check=True)
    pid = start_background(box, "apply")
    for _ in range(100):
        if box.run(["cat", "/run/fleet.host.lock"]).stdout.strip() == str(pid):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(box.run(["cat", BG_LOG]).stdout)
    second = fleet(box, "apply")
    assert f"waiting for the fleet run with PID {pid} to finish" in second.stderr, second.stderr
    assert second.returncode == 0, second.stdout[-3000:]
    assert not alive(box, pid)
    serves(box, "one.test", "one v2")


# Where a code-only deploy is killed, as fractions of how long one takes on this machine
# (measured just before): they fall in the fetch, the release export, the vassal start and
# gate, the nginx switch and the retirement. Fixed delays went stale as deploys got faster.
KILL_POINTS = [("venv build (pip)", None), ("at 25%", 0.25), ("at 45%", 0.45),
               ("at 65%", 0.65), ("at 85%", 0.85)]


def code_deploy_seconds(box: BareServer, git_remote, version: str) -> float:
    """Wall time of an uninterrupted code-only deploy of one, started as the killed ones are."""
    git_remote.commit("rel-one", {"wsgi.py": probe_source(version)})
    start = time.monotonic()
    pid = start_background(box, "apply")
    while alive(box, pid):
        time.sleep(0.02)
    seconds = time.monotonic() - start
    serves(box, "one.test", f"one {version}")
    return seconds


@pytest.mark.parametrize(("point", "fraction"), KILL_POINTS, ids=[p for p, _ in KILL_POINTS])
def test_deploy_killed_then_apply_converges(box, git_remote, point, fraction) -> None:
    index = KILL_POINTS.index((point, fraction))
    delay = None if fraction is None else fraction * code_deploy_seconds(box, git_remote,
                                                                         f"k{index}-timed")
    for attempt in range(3):  # a run faster than the last measured one: kill earlier
        version = f"k{index}-{attempt}"
        files = {"wsgi.py": probe_source(version)}
        if delay is None:
            files["requirements.txt"] = REQS + f"# {version}\n"  # a new venv: pip runs
        git_remote.commit("rel-one", files)
        pid = start_background(box, "apply")
        if delay is None:
            assert wait_for_cmdline(box, "pip install", timeout=120), \
                box.run(["cat", BG_LOG]).stdout
            time.sleep(0.5)
        else:
            time.sleep(delay)
            delay *= 0.7
        if kill_group(box, pid):
            break
    else:
        raise AssertionError(f"three runs finished before {point}")
    killed_log = box.run(["cat", BG_LOG]).stdout
    run = fleet_json(box, "apply")
    assert run.returncode == 0, f"killed {point}:\n{killed_log}\n{describe(run)}"
    serves(box, "one.test", f"one {version}")
    serves(box, "two.test", "two ")
    vassals = box.run(["ls", "-A", "/etc/uwsgi/vassals"]).stdout.split()
    assert len([v for v in vassals if v.startswith("one@")]) == 1, vassals
    assert not [v for v in vassals if not v.endswith(".ini")], vassals
    assert box.run(["nginx", "-t"]).ok
    assert changed_steps(fleet_json(box, "apply")) == set()


SHIM = "/usr/local/sbin/systemctl"  # before /usr/bin on the PATH fleet gives its commands
KILL_FLAG = "/run/fleet-test-kill-at"


def kill_fleet_at(box: BareServer, command: str) -> None:
    """The next fleet run is SIGKILLed as it starts `systemctl COMMAND`: deterministically
    after the files before that action were written, before the action itself."""
    box.write_file(KILL_FLAG, command + "\n")


def emperor_pid(box: BareServer) -> str:
    return box.run(["systemctl", "show", "-p", "MainPID", "--value", "fleet-emperor"],
                   check=True).stdout.strip()


def needs_daemon_reload(box: BareServer) -> str:
    return box.run(["systemctl", "show", "-p", "NeedDaemonReload", "--value", "fleet-emperor"],
                   check=True).stdout.strip()


def killed_apply(box: BareServer, *args: str) -> None:
    run = fleet(box, "apply", *args)
    assert run.returncode != 0 and box.run(["test", "-e", KILL_FLAG]).returncode != 0, \
        run.stdout[-3000:]


def test_a_unit_or_emperor_ini_written_by_a_killed_run_gets_its_action_from_the_next(
        box, git_remote) -> None:
    """A run killed after it rewrote the Emperor's unit, before `systemctl daemon-reload`; one
    killed after it wrote a new emperor.ini, before the Emperor's restart: the files are right,
    so the next run used to change nothing. It does the action it was owed, and only that."""
    box.write_file(SHIM, f"""#!/bin/sh
if [ -e {KILL_FLAG} ] && [ "$*" = "$(cat {KILL_FLAG})" ]; then
    rm -f {KILL_FLAG}
    kill -KILL $PPID
    exit 137
fi
exec /usr/bin/systemctl "$@"
""", 0o755)
    try:
        # As an older fleet left it: its unit differs (and systemd loaded that one).
        box.run(["sh", "-c", "echo '# an older unit' >> /etc/systemd/system/fleet-emperor.service"
                 " && systemctl daemon-reload"], check=True)
        before = emperor_pid(box)
        kill_fleet_at(box, "daemon-reload")
        killed_apply(box)
        assert needs_daemon_reload(box) == "yes" and emperor_pid(box) == before
        run = apply_ok(box)
        assert changed_steps(run) == {("systemd units", None), ("emperor", None)}
        assert needs_daemon_reload(box) == "no" and emperor_pid(box) not in ("0", before)

        before = emperor_pid(box)
        box.write_file("/root/fleet-vassal-set.toml", fleet_toml(
            git_remote, "[emperor.vassal_set]\nmax-requests = 5000\n"))
        kill_fleet_at(box, "restart fleet-emperor.service")
        killed_apply(box, "/root/fleet-vassal-set.toml")
        assert "vassal-set = max-requests=5000" in box.run(["cat", "/etc/uwsgi/emperor.ini"]).stdout
        assert emperor_pid(box) == before
        run = apply_ok(box)
        assert changed_steps(run) == {("emperor", None)}
        assert emperor_pid(box) not in ("0", before)
        serves(box, "one.test", "one ", attempts=30)
        serves(box, "two.test", "two ", attempts=30)
        assert changed_steps(apply_ok(box)) == set()
        assert box.run(["test", "-e", "/run/fleet.pending"]).returncode != 0
    finally:
        box.run(["rm", "-f", SHIM, KILL_FLAG])


def test_killed_workers_are_respawned(box) -> None:
    masters = {p["pid"] for p in uwsgi_processes(box) if p["user"] == "root"}
    workers = [p for p in proc_table(box)
               if p["user"] == "one" and p["comm"].startswith("uwsgi")
               and p["ppid"] not in masters]
    assert workers, uwsgi_processes(box)
    box.run(["sh", "-c", "kill -KILL " + " ".join(p["pid"] for p in workers)], check=True)
    start = time.monotonic()
    serves(box, "one.test", "one ", attempts=10)
    assert time.monotonic() - start < 10
    alive_now = {p["pid"] for p in uwsgi_processes(box) if p["user"] == "one"}
    assert not alive_now & {p["pid"] for p in workers}


def test_killed_emperor_is_restarted_by_systemd(box) -> None:
    show = ["systemctl", "show", "-p", "MainPID", "--value", "fleet-emperor"]
    old = box.run(show, check=True).stdout.strip()
    box.run(["sh", "-c", f"kill -KILL {old}"], check=True)
    serves(box, "one.test", "one ", attempts=30)
    serves(box, "two.test", "two ", attempts=30)
    new = box.run(show, check=True).stdout.strip()
    assert new not in ("0", old)


def test_everything_serves_after_reboot_without_fleet(box) -> None:
    box.reboot()
    serves(box, "one.test", "one ", attempts=30)
    serves(box, "two.test", "two ", attempts=30)
    assert get(box, "one.test", "/env/SECRET_TOKEN") == (200, "rotated-value-1")
