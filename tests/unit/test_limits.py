"""Per-app limits (issue 18): the keys, what each vassal, unit and transient run gets, the
slice a cgroup v2 server enforces, the mechanism named for each server, and usage. Hostile
apps on a booted server: tests/e2e/test_limits.py."""

from __future__ import annotations

import zlib

import pytest

from fleet.host.machine import ProcessInfo
from fleet.server.resource_limits import mechanisms, slice_name
from fleet.server.usage import Snapshot, limits_status
from tests.unit.fakehost import FakeHost
from tests.unit.support import config, error_of, parse, run, server

pytestmark = pytest.mark.usefixtures("healthy")

UNITS = "/etc/systemd/system"
V2 = b"cpuset cpu io memory hugetlb pids rdma misc\n"
LIMITED = """
[apps.alpha]
repo = "git://remote/alpha.git"
domains = ["alpha.test"]
memory = "512M"
cpu = 50
tasks = 64
timeout = 30
[apps.alpha.workers.queue]
command = "rq worker"
[apps.beta]
repo = "git://remote/beta.git"
domains = ["beta.test"]
"""


def vassal(host: FakeHost, app: str, release: str) -> str:
    return host.read(f"/etc/uwsgi/vassals/{app}@{release}.ini").decode()


def test_limits_are_parsed_and_checked() -> None:
    _, _, apps = parse(LIMITED)
    alpha, beta = apps["alpha"], apps["beta"]
    assert (alpha.memory, alpha.cpu, alpha.tasks, alpha.timeout) == (512 * 2**20, 50, 64, 30)
    assert (beta.memory, beta.cpu, beta.tasks, beta.timeout) == (None, None, None, 55)
    assert alpha.recycle_mb == 256 and beta.recycle_mb == 256  # 512M over 2 workers; default
    assert not beta.limited and alpha.limited


@pytest.mark.parametrize(("line", "key", "problem"), [
    ('memory = "512MB"', "memory", "not a size"),
    ('memory = "16M"', "memory", "below 32M"),
    ("memory = 512", "memory", "expected a string"),
    ("cpu = 0", "cpu", "between 1 and 6400"),
    ("tasks = 10", "tasks", "needs at least 12"),
    ("timeout = 0", "timeout", "between 1 and 86400"),
])
def test_bad_limits_name_the_key(line: str, key: str, problem: str) -> None:
    message = error_of(f'[apps.a]\nrepo = "x"\ndomains = ["a.test"]\n{line}\n')
    assert f": apps.a.{key}: " in message and problem in message, message


def test_vassal_site_units_and_builds_get_the_limits() -> None:
    host = server()
    run(host, config(host, LIMITED))
    ini = vassal(host, "alpha", "aaaaaaaaaaaa")
    assert "harakiri = 30\n" in ini and "limit-nproc = 64\n" in ini
    assert "evil-reload-on-rss = 256\n" in ini and "mem-collector-freq = 1\n" in ini
    other = vassal(host, "beta", "cccccccccccc")  # defaults protect without any key
    assert "harakiri = 55\n" in other and "evil-reload-on-rss = 256\n" in other
    assert "limit-nproc" not in other
    assert "uwsgi_read_timeout 35s;" in host.read(
        "/etc/nginx/sites-enabled/fleet-alpha.conf").decode()
    sliced = host.read(f"{UNITS}/fleet-alpha.slice").decode()
    assert "MemoryMax=536870912\n" in sliced and "MemorySwapMax=0\n" in sliced
    assert "CPUQuota=50%\n" in sliced and "TasksMax=64\n" in sliced
    assert host.read(f"{UNITS}/fleet-beta.slice") is None  # no limit: no slice
    worker = host.read(f"{UNITS}/fleet-alpha.worker.queue@.service").decode()
    assert "Slice=fleet-alpha.slice\n" in worker and "LimitNPROC=64\n" in worker
    builds = [limits for (argv, user, *_), limits in zip(host.contained,
                                                          host.contained_limits, strict=True)
              if user == "alpha"]
    assert builds and all(limits == ("Slice=fleet-alpha.slice", "LimitNPROC=64")
                          for limits in builds)


def test_the_limits_step_names_each_mechanism_and_flags_what_is_not_enforced() -> None:
    host = server()
    session, _ = run(host, config(host, LIMITED))
    step = next(s for s in session.steps if s.name == "limits" and s.app == "alpha")
    notes = " | ".join(step.notes)
    assert "cpu 50%: not enforced" in notes and "memory 512M: only per web worker" in notes
    assert "tasks 64: RLIMIT_NPROC of user alpha" in notes and "harakiri" in notes
    assert not [s for s in session.steps if s.name == "limits" and s.app == "beta"]
    assert "emperor-wrapper" not in host.read("/etc/uwsgi/emperor.ini").decode()


def test_a_cgroup_v2_server_enforces_them_on_the_slice_with_the_vassal_in_it() -> None:
    host = server()
    host.mkdir("/sys", 0o755, "root", "root")
    host.mkdir("/sys/fs", 0o755, "root", "root")
    host.mkdir("/sys/fs/cgroup", 0o755, "root", "root")
    host.write("/sys/fs/cgroup/cgroup.controllers", V2, 0o444, "root", "root")
    session, _ = run(host, config(host, LIMITED))
    notes = " | ".join(next(s for s in session.steps if s.name == "limits").notes)
    assert "not enforced" not in notes
    assert "cgroup v2 MemoryMax on fleet-alpha.slice" in notes
    assert "cgroup v2 CPUQuota" in notes and "TasksMax" in notes
    emperor = host.read("/etc/uwsgi/emperor.ini").decode()
    assert "emperor-wrapper = /usr/local/lib/fleet/vassal-wrapper\n" in emperor
    wrapper = host.files["/usr/local/lib/fleet/vassal-wrapper"]
    assert wrapper.mode == 0o755
    script = host.read("/usr/local/lib/fleet/vassal-wrapper").decode()
    assert 'systemd-run --scope --quiet --collect --slice="$slice"' in script
    assert script.rstrip().endswith('exec /usr/bin/uwsgi-core "$@"')


def test_dropped_limits_and_removed_apps_lose_their_slice() -> None:
    host = server()
    run(host, config(host, LIMITED))
    plain = LIMITED.replace('memory = "512M"\ncpu = 50\ntasks = 64\n', "")
    run(host, config(host, plain))
    assert host.read(f"{UNITS}/fleet-alpha.slice") is None
    run(host, config(host, LIMITED))
    host.remove("/etc/fleet/apps/alpha.toml")
    run(host, config(host, LIMITED[LIMITED.index("[apps.beta]"):]))
    assert host.read(f"{UNITS}/fleet-alpha.slice") is None


def test_slice_names_escape_dashes() -> None:
    assert slice_name("shop") == "fleet-shop.slice"
    assert slice_name("my-app") == "fleet-my\\x2dapp.slice"  # not a child of fleet-my


def test_usage_adds_up_the_app_users_processes() -> None:
    host = server()
    app = config(host, LIMITED).app("alpha")
    uid = 1000 + zlib.crc32(b"alpha") % 50000
    before = Snapshot(10.0, [ProcessInfo(1, uid, b"", 0, 1, 100), ProcessInfo(2, 0, b"", 0, 1, 0)])
    after = Snapshot(10.5, [ProcessInfo(1, uid, b"", 30 * 2**20, 3, 125),
                            ProcessInfo(3, uid, b"", 10 * 2**20, 1, 7),
                            ProcessInfo(2, 0, b"", 99 * 2**20, 9, 900)])
    status = limits_status(host, app, uid, before, after, frozenset(), timeouts=2, recycles=1)
    data = status.to_json()
    assert data["memory"]["used"] == 40 * 2**20 and data["tasks"]["used"] == 4
    assert data["cpu"]["used"] == 50.0  # 25 ticks of 100 Hz in 0.5 s; the new process: 0
    assert data["events"] == {"timeouts": 2, "recycles": 1, "oom_kills": None}
    assert "not enforced" in data["cpu"]["mechanism"]
    assert set(mechanisms(app, frozenset({"memory", "cpu", "pids"}))) == {
        "memory", "cpu", "tasks", "timeout"}
