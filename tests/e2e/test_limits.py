"""Issue 18, per-app limits, on a real bare Debian: a hostile app (tests/apps/hostile-limits)
beside a healthy neighbour under steady load. One server, one apply.

The test servers run under systemd-nspawn on a host with the legacy cgroup hierarchy: no
cgroup v2 controller is theirs, so MemoryMax=/CPUQuota=/TasksMax= are not enforced here. What
this module proves is what fleet enforces without them: uWSGI's per-worker RSS recycle for
`memory`, RLIMIT_NPROC for `tasks`, harakiri for `timeout`, and the honest warning for `cpu`.
The kernel log is the server's dmesg, or the host's where the server may not read it (they
share one kernel).

Not a provisioning test: its server starts from the provisioned tree (python3 and fleet's OS
packages preinstalled, tests/harness/rootfs.py); bare servers are provisioned in test_apply,
test_operator, test_reliability, test_trixie and the push modules.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.helpers import bootstrap_apply, fleet_json, install_fleet
from tests.e2e.load import Load, LoadResult
from tests.harness.server import BareServer, NoResponse

APPS = Path(__file__).resolve().parents[1] / "apps"
MEMORY, PROCESSES, CPU, TASKS, TIMEOUT = 128 << 20, 2, 50, 48, 5
SPINNING = 25  # percent of one core above which the hostile app is surely spinning
# One user's processes sampled every 20 ms for argv[2] seconds (0: once): peak tasks
# (threads), peak RSS of one process, cpu use in percent of one core (processes seen at the
# start) over the whole time.
SAMPLER = r"""
import json, os, pwd, sys, time
uid = pwd.getpwnam(sys.argv[1]).pw_uid
end = time.monotonic() + float(sys.argv[2])
peak_tasks = peak_rss = samples = 0
first, ticks, start = None, {}, time.monotonic()
while True:
    tasks = 0
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.stat("/proc/" + pid).st_uid == uid:
                tasks += len(os.listdir("/proc/" + pid + "/task"))
                with open("/proc/" + pid + "/status") as status:
                    rss = [l.split()[1] for l in status if l.startswith("VmRSS:")]
                peak_rss = max([peak_rss] + [int(r) * 1024 for r in rss])
                with open("/proc/" + pid + "/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[-1].split()
                ticks[pid] = int(fields[11]) + int(fields[12])
        except OSError:
            pass
    first = dict(ticks) if first is None else first
    peak_tasks, samples = max(peak_tasks, tasks), samples + 1
    if time.monotonic() >= end:
        break
    time.sleep(0.02)
used = sum(t - first[p] for p, t in ticks.items() if p in first)
cpu = 100 * used / os.sysconf("SC_CLK_TCK") / max(time.monotonic() - start, 0.01)
print(json.dumps({"tasks": peak_tasks, "rss": peak_rss, "samples": samples, "cpu": cpu}))
"""


@dataclass
class Box:
    server: BareServer
    applied: dict  # the bootstrap apply's --json summary


@pytest.fixture(scope="module")
def box(server_factory, git_remote, fleet_pyz) -> Box:
    for repo, app in (("pulse", "pulse"), ("hostile-limits", "hostile-limits")):
        if repo not in git_remote.repos_created:
            git_remote.create_repo(repo, APPS / app)
    server: BareServer = server_factory(provisioned=True)
    install_fleet(server, fleet_pyz)
    result = bootstrap_apply(server, f"""
[apps.calm]
repo = "{git_remote.url('pulse')}"
domains = ["calm.test"]

[apps.hog]
repo = "{git_remote.url('hostile-limits')}"
domains = ["hog.test"]
processes = {PROCESSES}
memory = "128M"
cpu = {CPU}
tasks = {TASKS}
timeout = {TIMEOUT}
[apps.hog.health]
path = "/health"
""")
    return Box(server, json.loads(result.stdout))


def app_status(box: Box, name: str) -> dict:
    run = fleet_json(box.server, "status")
    assert run.returncode == 0, run.result.stdout[-2000:] + run.result.stderr[-2000:]
    return run.data["apps"][name]


def events(box: Box) -> dict:
    return app_status(box, "hog")["limits"]["events"]


def sample(box: Box, seconds: float) -> dict:
    """Peak tasks and peak RSS of the hostile app's user over `seconds`."""
    out = box.server.run(["python3", "-c", SAMPLER, "hog", str(seconds)], check=True,
                         timeout=seconds + 60).stdout
    return json.loads(out)


def wait_for(what: str, condition: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - start


def timed(box: Box, path: str, timeout: float = 60) -> tuple[int | None, float]:
    """(HTTP status, or None when the connection closed without one; seconds) of one
    request to the hostile app."""
    start = time.monotonic()
    try:
        status = box.server.http(path, host="hog.test", timeout=timeout).status
    except NoResponse:
        status = None
    return status, time.monotonic() - start


def kernel_oom_lines(box: Box) -> tuple[str, list[str] | None]:
    """(where it was read, its OOM killer lines) of the kernel log: the server's dmesg, or
    the host's when the server may not read it (the servers share the host's kernel)."""
    inside = box.server.run(["dmesg"], timeout=60)
    if inside.returncode == 0 and inside.stdout.strip():
        return "the server's dmesg", oom_lines(inside.stdout)
    host = subprocess.run(["dmesg"], capture_output=True, text=True, errors="replace")
    if host.returncode == 0:
        why = inside.stderr.strip()[:80] or "empty"
        return f"the host's dmesg (the server's: {why})", oom_lines(host.stdout)
    return "nowhere", None


def oom_lines(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if "Out of memory" in line or "invoked oom-killer" in line]


def neighbour_load() -> Load:
    return Load("calm.test", threads=2, limit=120, pause=0.02)


def p99_ms(result: LoadResult) -> float:
    times = sorted((s.end - s.start) * 1000 for s in result.samples)
    return statistics.quantiles(times, n=100)[98] if len(times) > 1 else float("nan")


def test_limits_step_names_each_mechanism_and_status_shows_them(box) -> None:
    steps = [s for s in box.applied["steps"] if s["name"] == "limits"]
    assert [s["app"] for s in steps] == ["hog"], steps  # only an app that sets a key
    step = steps[0]
    assert step["status"] in ("ok", "changed"), step
    notes = step.get("notes", [])
    note = {key: next((n for n in notes if n.lower().startswith(key)), "")
            for key in ("memory", "cpu", "tasks", "timeout")}
    assert all(note.values()), notes
    assert "not enforced" in note["cpu"], notes
    # memory: the per-worker RSS recycle is enforced, the cap on the whole app is not here.
    assert "rss" in note["memory"].lower() and "not enforced" in note["memory"], notes
    assert "nproc" in note["tasks"].lower(), notes
    assert "harakiri" in note["timeout"].lower(), notes
    for key in ("tasks", "timeout"):
        assert "not enforced" not in note[key], notes

    plan = fleet_json(box.server, "plan", "/root/fleet.toml")
    assert plan.returncode == 0, plan.result.stderr[-2000:]
    planned = [s for s in plan.data["steps"] if s["name"] == "limits" and s["app"] == "hog"]
    assert len(planned) == 1 and planned[0]["status"] == "ok", planned
    assert any("not enforced" in n for n in planned[0].get("notes", [])), planned

    limits = app_status(box, "hog")["limits"]
    print(f"\nhog limits in fleet status: {json.dumps(limits)}")
    assert limits["memory"]["limit"] == MEMORY and 0 < limits["memory"]["used"] < MEMORY
    assert limits["cpu"]["limit"] == CPU and "not enforced" in limits["cpu"]["mechanism"]
    assert limits["tasks"]["limit"] == TASKS and 1 + PROCESSES <= limits["tasks"]["used"] < 20
    assert limits["timeout"]["limit"] == TIMEOUT
    assert "harakiri" in limits["timeout"]["mechanism"].lower()
    assert "rss" in limits["memory"]["mechanism"].lower()
    assert "nproc" in limits["tasks"]["mechanism"].lower()
    assert "not enforced" not in limits["tasks"]["mechanism"]
    assert limits["events"]["oom_kills"] is None  # no cgroup v2 here: not counted, not 0
    assert limits["events"]["timeouts"] >= 0 and limits["events"]["recycles"] >= 0


def test_hog_is_recycled_and_nothing_else_dies(box) -> None:
    before = app_status(box, "hog")
    calm_pids = app_status(box, "calm")["workers"]["pids"]
    _, oom_before = kernel_oom_lines(box)
    with neighbour_load() as load:
        peak: dict = {}
        sampler = threading.Thread(target=lambda: peak.update(sample(box, 6)))
        sampler.start()
        status, elapsed = timed(box, "/hog")
        sampler.join()
        wait_for("the hog's worker is replaced", lambda: (
            (w := app_status(box, "hog")["workers"])["total"] == PROCESSES
            and set(w["pids"]) != set(before["workers"]["pids"])), 30)
    print(f"\n/hog answered {status} after {elapsed:.1f} s; the app's peak RSS in one "
          f"process {peak['rss'] / 2**20:.0f} MiB ({peak['samples']} samples); "
          f"neighbour {load.ok} ok, p99 {p99_ms(load):.0f} ms")
    assert status is None or status >= 500, status  # its worker died under it
    # Recycled for its memory, well before the 5 s harakiri and the fixture's own 1 GiB cap.
    assert elapsed < TIMEOUT - 1, elapsed
    assert peak["rss"] < 900 << 20, peak
    assert load.failed == 0, load.failures[:5]
    assert app_status(box, "calm")["workers"]["pids"] == calm_pids  # no other process died
    wait_for("events.recycles grows", lambda: events(box)["recycles"]
             > before["limits"]["events"]["recycles"], 15)
    assert events(box)["timeouts"] == before["limits"]["events"]["timeouts"]
    source, oom_after = kernel_oom_lines(box)
    print(f"kernel log read from {source}")
    if oom_before is None or oom_after is None:
        print("the kernel log is not readable: only the neighbour's pids were checked")
    else:
        assert oom_after == oom_before, oom_after[len(oom_before):]
    assert timed(box, "/health")[0] == 200


def test_sleeping_request_is_killed_at_timeout_and_the_worker_returns(box) -> None:
    before = app_status(box, "hog")
    with neighbour_load() as load:
        status, elapsed = timed(box, "/sleep?s=600")
        wait_for("events.timeouts grows", lambda: events(box)["timeouts"]
                 > before["limits"]["events"]["timeouts"], 15)
        wait_for("the killed worker is replaced", lambda: (
            (w := app_status(box, "hog")["workers"])["total"] == PROCESSES
            and set(w["pids"]) != set(before["workers"]["pids"])), 30)
        answers = [timed(box, "/sleep?s=0.1", timeout=10)[0] for _ in range(2 * PROCESSES)]
    print(f"\n/sleep?s=600 answered {status} after {elapsed:.1f} s (timeout {TIMEOUT} s)")
    assert status is None or status >= 500, status
    assert 4 <= elapsed <= 30, elapsed
    assert answers == [200] * len(answers), answers
    assert load.failed == 0, load.failures[:5]


def test_spinning_app_is_warned_about_and_the_neighbour_answers(box) -> None:
    with neighbour_load() as alone:
        time.sleep(3)
    # Spinners asked again as soon as harakiri ends one (5 s): the app spins throughout,
    # also while `fleet status` (a second or more to start) takes its two /proc snapshots.
    with neighbour_load() as load, Load("hog.test", "/spin?s=10", threads=PROCESSES,
                                        limit=60) as spins:
        time.sleep(1)
        measured = sample(box, 1)["cpu"]
        start, cpus = time.monotonic(), []
        while len(cpus) < 3 and not any(cpu["used"] > SPINNING for cpu in cpus):
            cpus.append(app_status(box, "hog")["limits"]["cpu"])  # one may see a respawn gap
        took = (time.monotonic() - start) / len(cpus)
    print(f"\nhog cpu while spinning: fleet status {cpus} ({took:.1f} s per status), /proc "
          f"over 1 s {measured:.0f}%; {spins.sent} spins; neighbour p99 {p99_ms(load):.0f} ms "
          f"({load.ok} ok) vs {p99_ms(alone):.0f} ms alone ({alone.ok} ok)")
    assert measured > SPINNING, measured  # the spinners ran (the harness measured, not fleet)
    assert all("not enforced" in cpu["mechanism"] for cpu in cpus), cpus
    # Status sees the spinning (an idle app reads 0-4 %). Not asserted above the 50 % limit:
    # on 2 cores shared with other test runs the spinners got 43 % to 180 % here.
    assert max(cpu["used"] for cpu in cpus) > SPINNING, cpus
    assert load.failed == 0 and alone.failed == 0, (load.failures[:5], alone.failures[:5])


def test_fork_bomb_is_held_at_tasks_and_the_app_serves_after(box) -> None:
    with neighbour_load() as load:
        peak: dict = {}
        sampler = threading.Thread(target=lambda: peak.update(sample(box, 10)))
        sampler.start()
        time.sleep(0.5)
        answer = box.server.http("/fork", host="hog.test", timeout=30)
        time.sleep(2)
        during = app_status(box, "hog")["limits"]["tasks"]
        box.server.run(["true"], check=True, timeout=10)  # the server itself answers
        sampler.join()
    bomb = json.loads(answer.body) if answer.status == 200 else {}
    print(f"\n/fork answered {answer.status} {answer.body[:200]}; peak tasks {peak['tasks']} "
          f"({peak['samples']} samples); status during the bomb: {during}")
    assert answer.status == 200 and bomb["failed"] > 0, answer
    assert bomb["forked"] < TASKS, bomb
    assert TASKS // 2 < peak["tasks"] <= TASKS, peak
    assert during["used"] <= TASKS, during
    assert load.failed == 0, load.failures[:5]
    gone = wait_for("the bomb's processes exit", lambda: sample(box, 0)["tasks"] < 10, 60)
    print(f"the bomb's processes were gone {gone:.0f} s after the sampling ended")
    assert timed(box, "/health")[0] == 200
    assert timed(box, "/")[0] == 200
