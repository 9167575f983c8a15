"""Root never follows a path an app's repo controls, and apps only run as accounts fleet made.

Hostile repos (made from tests/apps/hostile-links with symbolic links added at creation):
`assets -> /etc` as a static directory, `app -> /` as the app's path, `instance -> /etc` as a
persist item, `data -> /etc` as a persist item's parent, and a static directory holding links
to /etc/passwd and /etc/shadow. One server for the module, one apply of all of them beside a
healthy app: each hostile app fails alone, naming the path; no mode changes anywhere outside
the apps' own directories; nginx serves no link; apps named root, www-data, nobody, ... are
refused with exit 2 before anything changes; a delete killed mid-way is swept, never used.

Not a provisioning test: its server starts from the provisioned tree (python3 and fleet's OS
packages preinstalled, tests/harness/rootfs.py); bare servers are provisioned in test_apply,
test_operator, test_reliability, test_trixie and the push modules.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.helpers import describe, fleet, fleet_json, get, install_fleet, uwsgi_processes
from tests.e2e.reliability_helpers import (
    MANAGED,
    changed_steps,
    modes,
    modes_changed,
    snapshot,
)
from tests.harness.server import BareServer, NoResponse

SOURCE = Path(__file__).resolve().parents[1] / "apps" / "hostile-links"
OUTSIDE = ("/etc", "/root", "/usr")
ACCOUNTS = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")
STATE: dict[str, object] = {}

# app -> (links committed in its repo, extra top-level keys, extra tables, expected error)
HOSTILE = {
    "h-static": ({"assets": "/etc"}, "", '[apps.h-static.static]\n"/assets" = "assets"\n',
                 "static 'assets': 'assets' is a symbolic link"),
    "h-path": ({"app": "/"}, 'path = "app"\n', "",
               "path 'app': 'app' is a symbolic link"),
    "h-persist": ({"instance": "/etc"}, "", "",
                  "persist 'instance': 'instance' is a symbolic link"),
    "h-parent": ({"data": "/etc"}, 'persist = ["data/uploads"]\n', "",
                 "persist 'data/uploads': 'data' is a symbolic link"),
}
LEAK_LINKS = {"static/leak": "/etc/passwd", "static/shadow": "/etc/shadow"}


def app_toml(git_remote, name: str, keys: str = "", tables: str = "") -> str:
    return (f'[apps.{name}]\nrepo = "{git_remote.url(name)}"\ndomains = ["{name}.test"]\n'
            f'{keys}[apps.{name}.env]\nAPP_LABEL = "{name}"\n'
            f"[apps.{name}.health]\ntimeout = 30\n{tables}")


def good_toml(git_remote) -> str:
    return app_toml(git_remote, "good", tables='[apps.good.static]\n"/static" = "static"\n')


def all_toml(git_remote) -> str:
    parts = [good_toml(git_remote),
             app_toml(git_remote, "leak", tables='[apps.leak.static]\n"/static" = "static"\n')]
    parts += [app_toml(git_remote, name, keys, tables)
              for name, (_links, keys, tables, _error) in HOSTILE.items()]
    return "\n".join(parts)


def status_of(box: BareServer, host: str, path: str) -> tuple[int, str]:
    try:
        return get(box, host, path)
    except NoResponse as exc:  # fleet's catch-all closes the connection of unknown hosts
        return 0, str(exc)


@pytest.fixture(scope="module")
def box(server_factory, git_remote, fleet_pyz):
    for name in ("good", "leak", *HOSTILE):
        if name in git_remote.repos_created:
            continue
        links = LEAK_LINKS if name == "leak" else HOSTILE.get(name, ({},))[0]
        git_remote.create_repo(name, source=SOURCE, links=links)
    server: BareServer = server_factory(provisioned=True)
    install_fleet(server, fleet_pyz)
    server.write_file("/root/good.toml", good_toml(git_remote))
    server.write_file("/root/all.toml", all_toml(git_remote))
    result = server.run(["sh", "/root/bootstrap", "/root/fleet.pyz", "apply", "/root/good.toml",
                         "--json"], timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return server


@pytest.fixture(scope="module")
def hostile(box: BareServer):
    """Listings before, one apply of every hostile app beside the healthy one, listings after."""
    before = {"modes": modes(box, OUTSIDE), "good": snapshot(box, ("/srv/fleet/good",))}
    run = fleet_json(box, "apply", "/root/all.toml")
    after = {"modes": modes(box, OUTSIDE), "good": snapshot(box, ("/srv/fleet/good",))}
    return before, run, after


def test_each_hostile_path_fails_its_app_alone_naming_the_path(box, hostile) -> None:
    _before, run, _after = hostile
    assert run.returncode == 1, describe(run)
    apps = run.data["apps"]
    for name, (_links, _keys, _tables, expected) in HOSTILE.items():
        assert apps[name]["health"] == "failed", (name, apps[name])
        assert "release" in apps[name]["error"] and expected in apps[name]["error"], apps[name]
        assert box.run(["sh", "-c", f"ls -A /srv/fleet/{name}/releases"]).stdout.strip() == ""
    assert apps["good"]["health"] == "passed" and apps["leak"]["health"] == "passed", \
        describe(run)
    assert get(box, "good.test") == (200, "good ok")


def test_no_mode_changed_outside_the_apps_and_the_healthy_app_is_untouched(box, hostile) -> None:
    before, _run, after = hostile
    assert modes_changed(before["modes"], after["modes"]) == {}
    # Everything but the git mirror, which every apply fetches into (fleet's cache of the repo).
    good_before, good_after = ({line for line in snap.splitlines() if "/repo.git" not in line}
                               for snap in (before["good"], after["good"]))
    assert good_after == good_before, (sorted(good_before - good_after),
                                       sorted(good_after - good_before))
    for path, expected in (("/etc/shadow", "root shadow 640"), ("/etc/gshadow", "root shadow 640"),
                           ("/etc/fleet/env", "root root 700")):
        assert box.run(["stat", "-c", "%U %G %a", path]).stdout.strip() == expected, path


def test_nginx_serves_no_link_and_no_link_target(box, hostile) -> None:
    assert get(box, "leak.test", "/static/ok.txt") == (200, "served as a static file\n")
    for path in ("/static/leak", "/static/shadow"):
        status, body = get(box, "leak.test", path)
        assert status in (403, 404) and "root:" not in body, (path, status, body[:200])
    for path in ("/assets/shadow", "/assets/passwd"):
        status, body = status_of(box, "h-static.test", path)
        assert status != 200 and "root:" not in body, (path, status, body[:200])
    site = box.run(["cat", "/etc/nginx/sites-enabled/fleet-leak.conf"]).stdout
    assert "disable_symlinks on;" in site
    # nginx got o+rX on the static directory only, and the links inside stayed links.
    static = "/srv/fleet/leak/current/static"
    assert box.run(["readlink", f"{static}/leak"]).stdout.strip() == "/etc/passwd"
    assert box.run(["stat", "-c", "%a", static, f"{static}/ok.txt"]).stdout.split() == [
        "755", "644"]


def test_a_rerun_changes_nothing_and_fails_the_same_apps(box, hostile) -> None:
    run = fleet_json(box, "apply", "/root/all.toml")
    assert run.returncode == 1
    assert changed_steps(run) == set(), describe(run)
    failed = {n for n, a in run.data["apps"].items() if a["health"] == "failed"}
    assert failed == set(HOSTILE)


def test_a_delete_killed_mid_way_is_swept_and_never_used(box, hostile) -> None:
    """remove() renames first: a killed prune, purge or failed-build cleanup leaves a trash
    name, never a half-deleted release or venv under its own name. Simulated here: half a copy
    of the live release and of its venv under trash names, and a purged app's home."""
    release = box.run(["readlink", "/srv/fleet/good/current"], check=True).stdout.strip()
    venv = box.run(["sh", "-c", "ls -d /srv/fleet/good/venvs/*"], check=True).stdout.split()[0]
    trash = ["/srv/fleet/good/releases/.fleet-trash-deadbeef",
             "/srv/fleet/good/venvs/.fleet-trash-0badf00d", "/srv/fleet/.fleet-trash-12345678"]
    box.run(["cp", "-a", release, trash[0]], check=True)
    box.run(["rm", "-rf", f"{trash[0]}/wsgi.py", f"{trash[0]}/static"], check=True)
    box.run(["cp", "-a", venv, trash[1]], check=True)
    box.run(["rm", "-rf", f"{trash[1]}/bin"], check=True)
    box.run(["mkdir", "-p", f"{trash[2]}/releases/abc"], check=True)
    run = fleet_json(box, "apply", "/root/all.toml")
    swept = [s for s in run.data["steps"] if s["name"] == "leftover temp files"]
    assert swept and all(any(t in a for a in swept[0]["actions"]) for t in trash), swept
    for path in trash:
        assert not box.run(["test", "-e", path]).ok, path
    assert run.data["apps"]["good"]["health"] == "passed", describe(run)
    assert box.run(["readlink", "/srv/fleet/good/current"]).stdout.strip() == release
    assert get(box, "good.test") == (200, "good ok")
    assert changed_steps(fleet_json(box, "apply", "/root/all.toml")) == set()


def test_a_new_commit_linking_its_static_dir_fails_and_the_live_release_keeps_serving(
        box, git_remote, hostile) -> None:
    live = box.run(["readlink", "/srv/fleet/leak/current"], check=True).stdout.strip()
    git_remote.commit("leak", {}, "static is now a link to /etc", links={"static": "/etc"})
    before = modes(box, OUTSIDE)
    run = fleet_json(box, "apply", "/root/all.toml")
    assert run.returncode == 1
    leak = run.data["apps"]["leak"]
    assert leak["health"] == "failed", leak
    assert "static 'static': 'static' is a symbolic link" in leak["error"], leak
    assert run.data["apps"]["good"]["health"] == "passed", describe(run)
    assert modes_changed(before, modes(box, OUTSIDE)) == {}
    assert box.run(["readlink", "/srv/fleet/leak/current"]).stdout.strip() == live
    assert get(box, "leak.test", "/static/ok.txt") == (200, "served as a static file\n")
    status, body = get(box, "leak.test", "/static/shadow")
    assert status in (403, 404) and "root:" not in body


def test_an_earlier_fleets_account_is_adopted_without_a_restart(box, hostile) -> None:
    """Servers set up before accounts were marked keep working: fleet adds its mark."""
    box.run(["usermod", "--comment", "", "good"], check=True)
    pids = {p["pid"] for p in uwsgi_processes(box) if p["user"] == "good"}
    run = fleet_json(box, "apply", "/root/all.toml")
    assert ("user", "good") in changed_steps(run), describe(run)
    assert not {s for s in changed_steps(run) if s[1] == "good"} - {("user", "good")}
    assert box.run(["getent", "passwd", "good"]).stdout.split(":")[4] == "fleet app good"
    assert pids and {p["pid"] for p in uwsgi_processes(box) if p["user"] == "good"} == pids
    assert get(box, "good.test") == (200, "good ok")
    assert changed_steps(fleet_json(box, "apply", "/root/all.toml")) == set()


# ----------------------------------------------------------------------------- identities

def bad_app(git_remote, name: str, user: str = "") -> str:
    keys = f'user = "{user}"\n' if user else ""
    return good_toml(git_remote) + "\n" + (
        f'[apps.{name}]\nrepo = "{git_remote.url("good")}"\ndomains = ["{name}.test"]\n{keys}')


IDENTITIES = {
    "root": ("root", "", "apps never run as root"),
    "www-data": ("www-data", "", "account www-data exists and was not created by fleet"),
    "nobody": ("nobody", "", "account nobody exists and was not created by fleet"),
    "backup": ("backup", "", "account backup exists and was not created by fleet"),
    "user daemon": ("svc", "daemon", "apps.svc.user: account daemon exists and was not created"),
    "an existing group": ("sneaky", "", "group sneaky already exists"),
    "another app's user": ("intruder", "good", "'good'"),
}


@pytest.fixture(scope="module")
def pristine(box, hostile) -> str:
    box.run(["groupadd", "sneaky"], check=True)  # a group someone else made: not the app's
    return snapshot(box, (*MANAGED, *ACCOUNTS))


@pytest.mark.parametrize("case", [*IDENTITIES, "plan nobody", "add-app www-data"])
def test_an_account_fleet_did_not_make_is_refused_with_exit_2(box, git_remote, pristine,
                                                              case) -> None:
    if case == "plan nobody":
        box.write_file("/root/bad.toml", bad_app(git_remote, "nobody"))
        result, expected = fleet(box, "plan", "/root/bad.toml"), "account nobody exists"
    elif case == "add-app www-data":
        result = fleet(box, "add-app", "www-data", "--repo", git_remote.url("good"),
                       "--domain", "w.test")
        expected = "account www-data exists and was not created by fleet"
    else:
        name, user, expected = IDENTITIES[case]
        box.write_file("/root/bad.toml", bad_app(git_remote, name, user))
        result = fleet(box, "apply", "/root/bad.toml")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("fleet: ") and expected in result.stderr, result.stderr
    assert snapshot(box, (*MANAGED, *ACCOUNTS)) == pristine
    assert get(box, "good.test") == (200, "good ok")
