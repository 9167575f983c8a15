"""Untrusted app code never runs as root (issue 14, item 1): builds, pip, the venv check and
`init` run contained as the app's user. One server; one apply of a healthy app beside three
hostile ones: a project whose setup.py writes outside its venv and installs a .pth file, a
repo with a pip.py beside requirements.txt whose init leaves processes behind, and an init
that outlives its init_timeout. Last, the healthy app's requirements change: uv builds the
new venv from a copy of the live one (issue 19), installing and compiling only what changed.

Not a provisioning test: its server starts from the provisioned tree (python3 and fleet's OS
packages preinstalled, tests/harness/rootfs.py); bare servers are provisioned in test_apply,
test_operator, test_reliability, test_trixie and the push modules."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import describe, fleet_json, get, install_fleet, proc_table
from tests.e2e.reliability_helpers import changed_steps, failed_steps, probe_source
from tests.harness.server import BareServer

APPS = Path(__file__).resolve().parents[1] / "apps"
HOSTILE = ("hbuild", "hreqs", "hslow")
MARKERS = "/root/pwned-* /etc/pwned-* /usr/pwned-* /srv/fleet/calm/pwned-* " \
          "/srv/fleet/calm/shared/pwned-*"
# What no hostile app may change: the system, root's home and the healthy app. The files
# fleet itself manages (its config, nginx, uWSGI, units, users) change by design.
WATCHED = "/etc /root /usr /srv/fleet/calm"
SKIP = ("/etc/fleet", "/etc/nginx", "/etc/uwsgi", "/etc/systemd", "/etc/tmpfiles.d",
        "/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/subuid",
        "/etc/subgid", "/etc/passwd-", "/etc/group-", "/etc/shadow-", "/etc/gshadow-",
        "/etc/subuid-", "/etc/subgid-", "/etc/.pwd.lock", "/etc/ld.so.cache", "/root/.cache",
        "/srv/fleet/calm/repo.git")  # fleet fetches the healthy app on every apply
STATE: dict[str, object] = {}
# The healthy app's requirements, then after its requirements change: six goes, idna comes.
CALM_V1 = "flask==3.0.3\nsix==1.16.0\n"
CALM_V2 = "flask==3.0.3\nidna==3.10\n"


def fleet_toml(git_remote, hostile: bool) -> str:
    text = f"""
[apps.calm]
repo = "{git_remote.url('cb-calm')}"
domains = ["calm.test"]
[apps.calm.env]
APP_LABEL = "calm"
"""
    if hostile:
        text += f"""
[apps.hbuild]
repo = "{git_remote.url('hostile-build')}"
domains = ["hbuild.test"]

[apps.hreqs]
repo = "{git_remote.url('hostile-reqs')}"
domains = ["hreqs.test"]
init = "setsid sleep 1000 & nohup sleep 999 >/dev/null 2>&1 & id -un > instance/init-whoami"

[apps.hslow]
repo = "{git_remote.url('hostile-reqs')}"
domains = ["hslow.test"]
init = "sleep 1000"
init_timeout = 5
"""
    return text


def snapshot(box: BareServer) -> str:
    """Path, owner, mode, size, mtime and type of everything watched (sha256 of /etc and
    /root files too): equal snapshots mean nothing there was touched. Directories without
    mtime and size: fleet's own files (skipped) and users come and go in /etc."""
    prune = " -o ".join(f"-path {p}" for p in SKIP)
    script = (rf"find {WATCHED} \( {prune} \) -prune -o -type d -printf '%p %U %G %m d\n' "
              rf"-o -printf '%p %U %G %m %s %T@ %y %l\n' 2>/dev/null | sort; "
              rf"find /etc /root \( {prune} \) -prune -o -type f -print0 2>/dev/null "
              rf"| sort -z | xargs -0 -r sha256sum")
    return box.run(["sh", "-c", script], check=True).stdout


def world_readable(box: BareServer) -> set[str]:
    script = "find /etc /root /srv/fleet -perm -o=r -type f 2>/dev/null | sort"
    return set(box.run(["sh", "-c", script], check=True).stdout.split())


def markers(box: BareServer) -> str:
    return box.run(["sh", "-c", f"ls -d {MARKERS} 2>/dev/null; true"]).stdout.strip()


def leftovers(box: BareServer) -> list[dict[str, str]]:
    """Processes of a hostile app's user other than its uWSGI vassal."""
    return [p for p in proc_table(box) if p["user"] in HOSTILE
            and not p["comm"].startswith("uwsgi")]


@pytest.fixture(scope="module")
def box(server_factory, git_remote, fleet_pyz):
    for name in ("hostile-build", "hostile-reqs"):
        if name not in git_remote.repos_created:
            git_remote.create_repo(name, source=APPS / name)
    if "cb-calm" not in git_remote.repos_created:
        git_remote.create_repo("cb-calm", files={"wsgi.py": probe_source("v1"),
                                                 "requirements.txt": CALM_V1})
    STATE["commit_calm"] = lambda files: git_remote.commit("cb-calm", files)
    server: BareServer = server_factory(provisioned=True)
    install_fleet(server, fleet_pyz)
    server.write_file("/root/calm.toml", fleet_toml(git_remote, hostile=False))
    server.write_file("/root/fleet.toml", fleet_toml(git_remote, hostile=True))
    result = server.run(["sh", "/root/bootstrap", "/root/fleet.pyz", "apply", "/root/calm.toml"],
                        timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return server


def test_uv_is_one_binary_fleet_unpacked_without_pip(box) -> None:
    """The first apply installed uv with fleet's own download (FetchWheel): the directory
    holds the binary alone, root-owned. pip --target, as before, would have left the wheel's
    package, uvx and dist-info beside it."""
    uv_dir = "/usr/local/lib/fleet/uv-0.13.9"
    listing = box.run(["find", uv_dir, "-printf", "%P %U %m %y\n"], check=True).stdout
    assert sorted(listing.splitlines()) == [" 0 755 d", "bin 0 755 d", "bin/uv 0 755 f"], \
        listing
    leftovers = box.run(["sh", "-c", "ls -a /usr/local/lib/fleet"], check=True).stdout
    assert ".uv-0.13.9.tmp" not in leftovers.split(), leftovers
    version = box.run(["runuser", "-u", "nobody", "--", f"{uv_dir}/bin/uv", "--version"])
    assert version.returncode == 0 and version.stdout.startswith("uv 0.13.9"), version


@pytest.fixture(scope="module")
def hostile_apply(box: BareServer):
    before, readable = snapshot(box), world_readable(box)
    started = time.monotonic()
    run = fleet_json(box, "apply", "/root/fleet.toml")
    STATE["apply_seconds"] = time.monotonic() - started
    return before, readable, run


def test_builds_run_as_the_app_user_and_write_nothing_outside(box, hostile_apply) -> None:
    before, readable, run = hostile_apply
    assert run.returncode == 1, describe(run)
    status, body = get(box, "hbuild.test")
    assert status == 200, body
    assert "built-by=hbuild" in body and "uid=0" not in body, body
    assert "written" not in body, body  # every write outside the venv was refused
    assert "OSError" in body or "Error" in body, body
    assert get(box, "hreqs.test") == (200, "hreqs ok local")
    assert get(box, "calm.test")[1].startswith("calm v1")
    assert markers(box) == ""
    after = snapshot(box)
    assert after == before, sorted(set(after.splitlines()) ^ set(before.splitlines()))
    new = {p for p in world_readable(box) - readable if not p.startswith(SKIP)}  # not fleet's
    assert all(p.startswith(tuple(f"/srv/fleet/{a}/" for a in HOSTILE)) for p in new), new
    venvs = box.run(["sh", "-c", "find /srv/fleet/h*/venvs /var/cache/fleet -perm -o=r "
                     "-type f | head -5"], check=True).stdout
    assert venvs == "", venvs  # what the build wrote is readable by its app only


def test_pth_runs_only_as_the_app_user(box, hostile_apply) -> None:
    ran = box.run(["cat", "/srv/fleet/hbuild/shared/instance/pth-ran"]).stdout.split()
    uid = box.run(["id", "-u", "hbuild"], check=True).stdout.strip()
    assert ran and set(ran) == {uid}, ran  # the .pth is live, and never ran as root


def test_init_is_contained_and_leaves_nothing(box, hostile_apply) -> None:
    _, _, run = hostile_apply
    who = box.run(["cat", "/srv/fleet/hreqs/shared/instance/init-whoami"]).stdout.strip()
    assert who == "hreqs"
    assert leftovers(box) == []
    failed = failed_steps(run)
    assert set(failed) == {"hslow"}, describe(run)
    assert "timed out after 5 s" in failed["hslow"]["error"] + (failed["hslow"].get("log")
                                                              or ""), failed["hslow"]
    assert run.data["apps"]["calm"]["health"] == "passed", describe(run)


def test_rerun_changes_nothing_and_never_runs_the_pth_as_root(box, hostile_apply) -> None:
    plan = fleet_json(box, "plan", "/root/fleet.toml")
    run = fleet_json(box, "apply", "/root/fleet.toml")
    assert {app for _, app in changed_steps(run)} <= {"hslow"}, describe(run)
    assert markers(box) == "", describe(plan)
    assert leftovers(box) == []
    ran = set(box.run(["cat", "/srv/fleet/hbuild/shared/instance/pth-ran"]).stdout.split())
    assert "0" not in ran
    print(f"hostile apply took {STATE['apply_seconds']:.1f} s")


def live_venv(box: BareServer, app: str) -> str:
    """The venv of the app's live release, from its root-only history."""
    live = box.run(["readlink", f"/srv/fleet/{app}/current"], check=True).stdout.strip()
    history = json.loads(box.run(["cat", f"/var/lib/fleet/apps/{app}.json"], check=True).stdout)
    (venv,) = [r["venv"] for r in history["releases"] if r["id"] == live.rsplit("/", 1)[-1]]
    return venv


# For each file given: the mtime of its .pyc, and whether that .pyc's recorded source mtime
# and size are the .py's (what Python checks before it uses the .pyc).
PYC_FACTS = r"""
import importlib.util, os, sys
for source in sys.argv[1:]:
    pyc = importlib.util.cache_from_source(source)
    with open(pyc, "rb") as f:
        header = f.read(16)
    st = os.stat(source)
    valid = (int.from_bytes(header[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
             and int.from_bytes(header[12:16], "little") == st.st_size & 0xFFFFFFFF)
    print(os.stat(pyc).st_mtime_ns, valid)
"""


def pyc_facts(box: BareServer, venv: str, *modules: str) -> list[str]:
    sources = box.run(["sh", "-c", f"ls -d {venv}/lib/python3*/site-packages"],
                      check=True).stdout.strip()
    result = box.run(["python3", "-I", "-c", PYC_FACTS, *(f"{sources}/{m}" for m in modules)],
                     check=True)
    return result.stdout.splitlines()


def test_a_requirements_change_builds_from_a_copy_of_the_live_venv(box, hostile_apply) -> None:
    """The new venv starts as a copy of the live one (relocatable, built by uv): it gains
    idna, loses six, its entry point runs, and the files it kept keep their compiled
    bytecode (the .pyc not rewritten, still valid for the new path's source)."""
    old = live_venv(box, "calm")
    kept = ("flask/app.py", "werkzeug/routing/map.py")
    before = pyc_facts(box, old, *kept)
    git_remote_commit = STATE["commit_calm"]
    assert callable(git_remote_commit)
    git_remote_commit({"requirements.txt": CALM_V2})
    run = fleet_json(box, "deploy", "calm")
    assert run.returncode == 0, describe(run)
    new = live_venv(box, "calm")
    assert new != old
    (step,) = [s for s in run.data["steps"] if s["name"] == "virtualenv" and s["app"] == "calm"]
    assert any("into a copy of the previous venv" in a for a in step["actions"]), step
    site = box.run(["sh", "-c", f"ls {new}/lib/python3*/site-packages"], check=True).stdout
    assert "idna" in site.split() and "six.py" not in site.split(), site
    assert not [n for n in site.split() if n.startswith("six-")], site
    assert pyc_facts(box, new, *kept) == before, (before, "compiled again")
    assert all(line.endswith(" True") for line in before), before
    assert pyc_facts(box, new, "idna/core.py")[0].endswith(" True")  # the new one compiled
    flask = box.run(["runuser", "-u", "calm", "--", f"{new}/bin/flask", "--version"])
    assert flask.returncode == 0 and "Flask 3.0.3" in flask.stdout, flask
    assert get(box, "calm.test")[1].startswith("calm v1")
