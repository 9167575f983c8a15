"""Root never follows a repo-controlled path; apps only run as accounts fleet made.

The real filesystem (a temp directory) for the fd-based walkers, the in-memory host for plans.
The end-to-end proof with hostile repos is tests/e2e/test_contained_paths.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fleet.config.parse import parse_app_document
from fleet.converge.apply import converge
from fleet.errors import ConfigError, FleetError
from fleet.host import machine as host_mod
from fleet.host.machine import LocalHost, RunResult, is_trash_name
from fleet.host.session import Session
from fleet.server.release import check_repo_paths, plan_release, secure
from fleet.server.users import check_identities, creates_user, identity_problem, plan_user
from tests.unit.fakehost import FakeHost
from tests.unit.support import SHA_A1, Quiet, config, server

pytestmark = pytest.mark.usefixtures("healthy")  # no real health checks, gates or waits

ME = "root"  # the unit tests run as root, like fleet on the server


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file standing for /etc/shadow: no walker may change its mode."""
    secret = tmp_path / "shadow"
    secret.write_text("root:x\n")
    secret.chmod(0o600)
    return secret


def tree(tmp_path: Path, outside: Path) -> Path:
    root = tmp_path / "release"
    (root / "static").mkdir(parents=True)
    (root / "static" / "ok.txt").write_text("ok")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o4755)
    (root / "static" / "leak").symlink_to(outside)
    (root / "etc").symlink_to(outside.parent)
    return root


def mode(path: Path) -> int:
    return path.lstat().st_mode & 0o7777


def test_own_tree_sets_modes_through_fds_and_never_follows_a_link(tmp_path, outside) -> None:
    root = tree(tmp_path, outside)
    LocalHost().own_tree(str(root), ME, ME, "private")
    assert mode(root) == 0o750 and mode(root / "static") == 0o750
    assert mode(root / "static" / "ok.txt") == 0o640
    assert mode(root / "run.sh") == 0o750  # set-uid cleared, execute kept
    assert mode(outside) == 0o600 and mode(tmp_path) != 0o750
    assert os.readlink(root / "static" / "leak") == str(outside)


def test_expose_tree_refuses_a_link_on_the_way_and_skips_links_inside(tmp_path, outside) -> None:
    root = tree(tmp_path, outside)
    LocalHost().own_tree(str(root), ME, ME, "private")
    LocalHost().expose_tree(str(tmp_path), str(root / "static"))
    assert mode(root) == 0o751 and mode(root / "static") == 0o755
    assert mode(root / "static" / "ok.txt") == 0o644
    assert mode(outside) == 0o600
    with pytest.raises(FleetError, match="etc is a symbolic link"):
        LocalHost().expose_tree(str(tmp_path), str(root / "etc"))
    assert mode(outside) == 0o600 and mode(outside.parent) == mode(tmp_path)
    with pytest.raises(FleetError, match="missing does not exist"):
        LocalHost().expose_tree(str(tmp_path), str(root / "missing"))


def test_secure_is_one_fd_based_action_with_the_same_signature() -> None:
    (action,) = secure("/srv/fleet/a/venvs/k", "a")
    assert "links not followed" in action.describe()


def test_mkdir_and_chown_below_srv_fleet_never_follow_a_link(tmp_path, outside,
                                                            monkeypatch) -> None:
    srv = tmp_path / "srv"
    monkeypatch.setattr(host_mod, "UNTRUSTED_ROOT", str(srv))
    (srv / "app" / "shared").mkdir(parents=True)
    (srv / "app" / "shared" / "data").symlink_to(tmp_path)  # the app swapped its dir for a link
    host = LocalHost()
    with pytest.raises(FleetError, match="data is a symbolic link"):
        host.mkdir(str(srv / "app" / "shared" / "data" / "uploads"), 0o700, ME, ME)
    with pytest.raises(FleetError, match="symbolic link"):
        host.chown(str(srv / "app" / "shared" / "data"), 0o777, ME, ME)
    assert not (tmp_path / "uploads").exists() and mode(tmp_path) != 0o777
    host.mkdir(str(srv / "app" / "releases" / "x"), 0o751, ME, ME)
    assert mode(srv / "app" / "releases" / "x") == 0o751


def test_remove_renames_to_a_trash_name_first(tmp_path, monkeypatch) -> None:
    release = tmp_path / "releases" / "abc123"
    (release / "static").mkdir(parents=True)

    def killed(path: str, *args, **kwargs) -> None:
        raise KeyboardInterrupt  # the run is killed mid-delete

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        LocalHost().remove(str(release))
    left = os.listdir(tmp_path / "releases")
    assert len(left) == 1 and is_trash_name(left[0]), left
    monkeypatch.undo()
    LocalHost().remove(str(tmp_path / "releases" / left[0]))
    assert os.listdir(tmp_path / "releases") == []


@pytest.mark.usefixtures("healthy")
def test_converge_sweeps_trash_names() -> None:
    host = server()
    cfg = config(host)
    session = Session(host, Quiet())
    converge(cfg, session)
    for path in ("/srv/fleet/alpha/releases/.fleet-trash-deadbeef",
                 "/srv/fleet/alpha/venvs/.fleet-trash-0badf00d",
                 "/srv/fleet/.fleet-trash-12345678"):
        host.mkdir(f"{path}/bin", 0o755, "root", "root")
    session = Session(host, Quiet())
    converge(cfg, session)
    swept = [a.describe() for s in session.steps if s.name == "leftover temp files"
             for a in s.actions]
    assert len(swept) == 3 and not any(".fleet-trash-" in p for p in host.files), swept


def ls_tree(links: dict[str, str]):
    def handler(_host, argv: list[str]):
        if "ls-tree" in argv:
            path = argv[-1]
            if path in links:
                return RunResult(0, f"{links[path]} blob {'0' * 40}\t{path}\n", "")
            return RunResult(0, f"040000 tree {'0' * 40}\t{path}\n", "")
        return None
    return handler


@pytest.mark.parametrize("doc, links, expected", [
    ({"static": {"/s": "assets"}}, {"assets": "120000"}, "static 'assets': 'assets' is a symbolic"),
    ({"path": "app"}, {"app": "120000"}, "path 'app': 'app' is a symbolic link"),
    ({}, {"instance": "120000"}, "persist 'instance': 'instance' is a symbolic link"),
    ({"persist": ["data/up"]}, {"data": "120000"}, "persist 'data/up': 'data' is a symbolic"),
    ({"path": "app", "static": {"/s": "st"}}, {"app/st": "120000"}, "static 'app/st': 'app/st'"),
    ({"static": {"/s": "st"}}, {"st": "100644"}, "static 'st': 'st' is not a directory"),
])
def test_a_link_in_a_path_root_acts_on_fails_the_release(doc, links, expected) -> None:
    host = FakeHost()
    host.handlers.append(ls_tree(links))
    app = parse_app_document("t", "alpha", {"repo": "r", "domains": ["a.test"], **doc})
    with pytest.raises(FleetError, match=expected):
        plan_release(host, app, SHA_A1)


def test_plain_directories_and_a_persist_file_pass() -> None:
    host = FakeHost()
    host.handlers.append(ls_tree({"instance": "100644"}))
    app = parse_app_document("t", "alpha", {"repo": "r", "domains": ["a.test"],
                                            "static": {"/s": "a/b"}})
    check_repo_paths(host, app, SHA_A1)


def accounts(passwd: dict[str, str], groups: dict[str, str]):
    def handler(_host, argv: list[str]):
        if argv[0] == "getent":
            table = passwd if argv[1] == "passwd" else groups
            line = table.get(argv[2])
            return RunResult(0, line + "\n", "") if line else RunResult(2, "", "")
        return None
    return handler


PASSWD = {"root": "root:x:0:0:root:/root:/bin/bash",
          "www-data": "www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin",
          "nobody": "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
          "toor": "toor:x:0:0:fleet app toor:/srv/fleet/toor:/usr/sbin/nologin",
          "blog": "blog:x:990:990:fleet app blog:/srv/fleet/blog:/usr/sbin/nologin",
          "old": "old:x:991:991::/srv/fleet/old:/usr/sbin/nologin",
          "shop": "shop:x:992:992:fleet app shop:/srv/fleet/shop:/usr/sbin/nologin"}
GROUPS = {"root": "root:x:0:", "www-data": "www-data:x:33:", "nobody": "nogroup:x:65534:",
          "blog": "blog:x:990:", "old": "old:x:991:", "shop": "shop:x:992:mallory",
          "staff": "staff:x:50:"}


@pytest.mark.parametrize("name, user, expected", [
    ("root", "", "apps never run as root"),
    ("toor", "", "uid 0"),
    ("www-data", "", "account www-data exists and was not created by fleet"),
    ("nobody", "", "account nobody exists and was not created by fleet"),
    ("wiki", "blog", "account blog belongs to app blog"),
    ("staff", "", "group staff already exists"),
    ("shop", "", "group shop has other members (mallory)"),
    ("blog", "", None),
    ("old", "", None),  # an earlier fleet's account: adopted
    ("new", "", None),
])
def test_identity_problems(name, user, expected) -> None:
    host = FakeHost()
    host.handlers.append(accounts(PASSWD, GROUPS))
    doc = {"repo": "r", "domains": ["a.test"], **({"user": user} if user else {})}
    problem = identity_problem(host, parse_app_document("t", name, doc))
    assert problem is None if expected is None else expected in (problem or ""), problem


def test_check_identities_names_the_file_and_key() -> None:
    host = FakeHost()
    host.handlers.append(accounts(PASSWD, GROUPS))
    cfg = config(host, '[apps.wiki]\nrepo = "r"\ndomains = ["w.test"]\nuser = "www-data"\n')
    with pytest.raises(ConfigError) as exc:
        check_identities(host, cfg)
    assert exc.value.exit_code == 2 and str(exc.value) == (
        "/etc/fleet/apps/wiki.toml: apps.wiki.user: account www-data exists and was not created "
        "by fleet for app wiki")


def test_an_earlier_fleets_account_is_marked_as_fleets() -> None:
    host = FakeHost()
    host.handlers.append(accounts(PASSWD, GROUPS))
    actions = plan_user(host, "old", "/srv/fleet/old", "old")
    assert [a.argv for a in actions] == [("usermod", "--comment", "fleet app old", "old")]
    assert not creates_user(actions)  # same ids: nothing to give back, no restart
    assert creates_user(plan_user(host, "new", "/srv/fleet/new", "new"))
    assert plan_user(host, "blog", "/srv/fleet/blog", "blog") == []
