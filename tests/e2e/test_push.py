"""fleet push end to end: two app servers and a front on a private bridge, over real ssh
(tests/harness/cluster.py): provisioning, no-op re-runs, an unreachable host, a rolling push
under load with each server drained while it deploys, manual drain/undrain, a failing canary.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.load import Load, LoadResult
from tests.harness.cluster import DOMAIN, HOSTNAMES, Cluster, whoami_cluster


@pytest.fixture(scope="module")
def cluster(e2e_host: None, suite: str, fleet_pyz: Path, fixture_apps_dir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with whoami_cluster(suite, fleet_pyz, fixture_apps_dir,
                        tmp_path_factory.mktemp("push")) as booted:
        yield booted


def front_load(cluster: Cluster) -> Load:
    """Continuous requests to the front with the app's Host header, about 300 a second: as
    many again and the host's ports, held in TIME_WAIT, would run out over the module."""
    return Load(DOMAIN, address=cluster.front.address, threads=4, pause=0.01)


def statuses(report: dict) -> dict[str, str]:
    return {name: host["status"] for name, host in report["hosts"].items()}


def test_push_provisions_both_app_servers_and_the_front_balances_them(cluster: Cluster) -> None:
    code, report, stderr = cluster.push()
    assert code == 0, json.dumps(report, indent=1)[-6000:] + stderr[-2000:]
    assert statuses(report) == {"app1": "changed", "app2": "changed", "front": "changed"}
    assert [report["hosts"][n]["wave"] for n in ("app1", "app2", "front")] == [
        "canary", "batch 1", "fronts batch 1"]  # fronts: checked, then the changing ones
    for name in ("app1", "app2", "front"):
        assert report["hosts"][name]["apps"]["whoami"]["health"] == "passed", report
    served_by = {body.split()[1] for body in cluster.answers(20)}
    assert served_by == {"app-one", "app-two"}
    checked = json.loads(cluster.front.run("fleet check --json", check=True).stdout)
    assert checked["apps"]["whoami"]["health"] == "passed", checked  # through the front
    # App servers answer only their front (and themselves): not the host on the same bridge.
    for server in (cluster.app1, cluster.app2):
        assert server.http_at("/", host=DOMAIN).status == 403
        local = ("import http.client as h; c = h.HTTPConnection('127.0.0.1'); "
                 f"c.request('GET', '/health', headers={{'Host': '{DOMAIN}'}}); "
                 "print(c.getresponse().status)")
        assert server.run(f'python3 -c "{local}"').stdout.strip() == "200"


def test_a_second_push_changes_nothing_on_any_host(cluster: Cluster) -> None:
    code, report, stderr = cluster.push()
    assert code == 0, stderr[-2000:]
    assert statuses(report) == {"app1": "ok", "app2": "ok", "front": "ok"}
    assert all(host["changed"] == 0 for host in report["hosts"].values()), report
    # nothing to change: no batches, nobody out of rotation, each wave timed
    assert [(w["name"], w["hosts"]) for w in report["waves"]] == [
        ("canary", ["app1"]), ("app servers", ["app2"]), ("fronts", ["front"])], report["waves"]
    assert all(host["rotation"] is None for host in report["hosts"].values())
    # each host was decided and applied by one start of fleet: its audit log's last line
    for server in cluster.servers.values():
        last = json.loads(server.run("tail -n 1 /var/log/fleet/audit.log", check=True).stdout)
        assert last["command"][1:] == ["apply", "fleet.toml", "--json", "--hold-changes"], last
        assert last["result"] == "ok", last
        # its installed fleet was this zipapp already: the 9 MB were not sent again
        pushed = server.run("readlink /var/lib/fleet/push/fleet.pyz", check=True).stdout
        assert pushed.strip() == "/usr/local/bin/fleet"


def test_an_unreachable_app_server_is_reported_and_the_others_converge(cluster: Cluster) -> None:
    cluster.app2.run("systemctl stop ssh.service ssh.socket", check=True)
    try:
        code, report, _ = cluster.push("--max-failures", "1")
        assert code == 1
        assert statuses(report) == {"app1": "ok", "app2": "unreachable", "front": "ok"}
        assert report["hosts"]["app2"]["error"], report
        assert report["ok"] is False and report["counts"]["unreachable"] == 1
        assert all(body.startswith("whoami ") for body in cluster.answers(6))
    finally:
        cluster.app2.run("systemctl start ssh.service", check=True)


def while_out(load: LoadResult, rotation: dict) -> list:
    """Answers to requests sent after every front had drained the server and answered before
    the first was asked to put it back."""
    return [s for s in load.samples
            if s.start > rotation["out"][1] and s.end < rotation["back"][0]]


def test_a_rolling_push_under_load_drains_each_server_only_while_it_deploys(
        cluster: Cluster) -> None:
    cluster.git.commit("whoami", {"wsgi.py": cluster.source.replace('"v1"', '"v2"')})
    code, plan, stderr = cluster.push("--plan")
    assert code == 0, stderr[-2000:]
    assert any("whoami" in line for line in plan["hosts"]["app1"]["changes"]), plan
    assert plan["hosts"]["front"]["changes"] == [], plan["hosts"]["front"]
    assert all(body.endswith(" v1") for body in cluster.answers(4))  # a plan changes nothing
    with front_load(cluster) as load:
        code, report, stderr = cluster.push()
    assert code == 0, json.dumps(report, indent=1)[-6000:] + stderr[-2000:]
    assert load.failed == 0, load.failures[:5]
    assert statuses(report) == {"app1": "changed", "app2": "changed", "front": "ok"}
    windows = {}
    for name, hostname in HOSTNAMES.items():
        rotation = report["hosts"][name]["rotation"]
        start, end = rotation["applied"]
        assert rotation["out"][1] <= start < end <= rotation["back"][0], rotation
        assert rotation["fronts"]["front"]["whoami"]["state"] == "restored", rotation
        meanwhile = while_out(load, rotation)
        assert len(meanwhile) > 10, "too few requests while it deployed to prove anything"
        assert not [s for s in meanwhile if hostname in s.body], "served while drained"
        windows[name] = (rotation["out"][0], rotation["back"][1])
    assert windows["app1"][1] <= windows["app2"][0]  # one at a time: never both out
    served = [s.body for s in load.samples if s.start > windows["app2"][1]]
    assert {body.split()[1] for body in cluster.answers(20)} == set(HOSTNAMES.values())
    assert all(body.endswith(" v2") for body in cluster.answers(6)), served[-3:]
    drained = cluster.front.run("cat /var/lib/fleet/front-drained.json").stdout
    assert json.loads(drained) == {}


def test_an_operator_drains_and_undrains_an_app_server_on_the_front(cluster: Cluster) -> None:
    def front_status() -> dict:
        return json.loads(cluster.front.run("fleet status --json", check=True).stdout)["front"]

    app1 = f"{cluster.app1.address}:80"
    assert front_status()["whoami"]["out"] == []
    drained = json.loads(cluster.front.run(f"fleet drain {cluster.app1.address} --json",
                                           check=True).stdout)
    assert drained["apps"] == {"whoami": {"state": "drained"}}
    assert front_status()["whoami"]["out"] == [app1]
    assert {body.split()[1] for body in cluster.answers(12)} == {"app-two"}
    # The last server in rotation is never taken out.
    kept = json.loads(cluster.front.run(f"fleet drain {cluster.app2.address} --json",
                                        check=True).stdout)
    assert kept["apps"]["whoami"]["state"] == "kept"
    back = cluster.front.run(f"fleet undrain {cluster.app1.address} --json", check=True)
    assert json.loads(back.stdout)["apps"] == {"whoami": {"state": "restored"}}
    assert front_status()["whoami"]["out"] == []
    assert {body.split()[1] for body in cluster.answers(20)} == set(HOSTNAMES.values())


def test_apps_sharing_the_domain_under_a_prefix_are_served_through_the_front(
        cluster: Cluster) -> None:
    text = cluster.config.read_text()
    repo = re.search(r'^repo = "(.*)"$', text, re.M)
    assert repo
    cluster.config.write_text(text + (
        f'\n[apps.whoami-two]\nrepo = "{repo[1]}"\ndomains = ["{DOMAIN}"]\nprefix = "/two"\n'
        'env = { WHOAMI_VERSION = "two" }\nhealth = { path = "/health" }\n'))
    code, report, stderr = cluster.push()
    assert code == 0, json.dumps(report, indent=1)[-6000:] + stderr[-2000:]
    front = json.loads(cluster.front.run("fleet status --json", check=True).stdout)["front"]
    assert list(front) == ["whoami"]  # one server block for the domain: no nginx conflict
    two = set()
    for _ in range(12):
        response = cluster.front.http_at("/two/", host=DOMAIN)
        assert response.status == 200 and response.body.endswith(" two"), response
        two.add(response.body.split()[1])
    assert two == set(HOSTNAMES.values())
    assert all(body.endswith(" v2") for body in cluster.answers(6))  # the root app, as before


def test_door_controls_of_a_fronted_app_apply_at_the_front_only(cluster: Cluster) -> None:
    """Behind a front the app servers see only the front's address: the app's door controls
    move to the front, where the visitor's address is real, and its share keeps none."""
    cluster.config.write_text(cluster.config.read_text()
                              + '\n[apps.whoami.headers]\nX-Door = "at-the-front"\n')
    code, report, stderr = cluster.push()
    assert code == 0, json.dumps(report, indent=1)[-6000:] + stderr[-2000:]
    for _ in range(4):  # both app servers, through the front
        response = cluster.front.http_at("/", host=DOMAIN)
        assert response.status == 200, response
        assert response.headers.get("x-door") == "at-the-front", response.headers
    front_site = cluster.front.run("cat /etc/nginx/conf.d/fleet-front-whoami.conf").stdout
    assert "X-Door" in front_site, front_site[-2000:]
    for server in (cluster.app1, cluster.app2):
        share = server.run("cat /etc/fleet/apps/whoami.toml", check=True).stdout
        assert "X-Door" not in share and "headers" not in share, share


def test_a_canary_that_fails_to_import_stops_the_push_and_the_front_keeps_serving(
        cluster: Cluster) -> None:
    stamp = "stat -c %Y /var/lib/fleet/push/fleet.toml; readlink /srv/fleet/whoami/current"
    app2_before = cluster.app2.run(stamp, check=True).stdout
    cluster.git.commit("whoami", {"wsgi.py": "import does_not_exist_fleet  # noqa\n"})
    with front_load(cluster) as load:
        code, report, _ = cluster.push("--max-failures", "1")
    assert code == 1
    assert statuses(report) == {"app1": "failed", "app2": "skipped", "front": "skipped"}
    assert "canary" in report["stopped"]
    error = report["hosts"]["app1"]["error"]
    assert error.startswith("whoami: ") and "health check" in error, error
    assert "No module named 'does_not_exist_fleet'" in error, error
    assert report["hosts"]["app1"]["rotation"]["fronts"]["front"]["whoami"]["state"] == \
        "restored"  # its previous release still serves: back into rotation
    assert load.failed == 0, load.failures[:5]
    assert load.ok > 20 and all(body.endswith(" v2") for body in load.bodies), load.bodies
    assert cluster.app2.run(stamp, check=True).stdout == app2_before  # never touched
