"""Issue 16, background workers, scheduled jobs and `fleet run`, on a real bare Debian: the
Redis-backed queue app (tests/apps/queue) whose worker completes what its web side enqueues
and whose job writes into its persist directory every 5 s. Drift repair, kill -9, a deploy
under load, one that fails its gate, a rollback, `fleet run`, job timeout and overlap, removal
of jobs, a run missed while the server was off, a crash-looping worker, removal of all.
One server and one bootstrap apply for the module; the tests run in order and share it.

Not a provisioning test: its server starts from the provisioned tree (python3 and fleet's OS
packages preinstalled, tests/harness/rootfs.py); bare servers are provisioned in test_apply,
test_operator, test_reliability, test_trixie and the push modules."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    JsonRun,
    bootstrap_apply,
    describe,
    eventually,
    fleet,
    fleet_json,
    get,
    install_fleet,
    proc_table,
)
from tests.e2e.load import Load
from tests.harness import GitRemote
from tests.harness.server import BareServer

APPS = Path(__file__).resolve().parents[1] / "apps"
WSGI = (APPS / "queue" / "wsgi.py").read_text()
APP, HOST = "queue", "queue.test"
HOME = f"/srv/fleet/{APP}"
INSTANCE = f"{HOME}/shared/instance"
UNITS = "/etc/systemd/system"
ENV_FILE = "/etc/fleet/secrets/queue.env"
SECRET = "sec-" + secrets.token_hex(8)  # from the app's `env`
FROM_FILE = "file-" + secrets.token_hex(8)  # from its `env_file`
STEP = "workers and jobs"
DAY = 24 * 3600
RELEASES: dict[str, str] = {}  # version -> release id, as the tests deploy them

TASKS = """
[apps.queue.workers.tasks]
command = "python worker.py"
processes = 2
stop_timeout = 10
"""
TICK = """
[apps.queue.jobs.tick]
command = "python tick.py"
schedule = "*:*:0/5"
timeout = 60
"""


def app_toml(remote: GitRemote, *sections: str, ref: str | None = None) -> str:
    """The whole file: Redis from `server.packages`, the queue app, then `sections`."""
    pin = f'ref = "{ref}"\n' if ref else ""
    return f"""[server]
packages = ["redis-server"]

[apps.queue]
repo = "{remote.url(APP)}"
{pin}domains = ["{HOST}"]
env = {{ QUEUE_SECRET = "{SECRET}" }}
env_file = "{ENV_FILE}"

[apps.queue.health]
path = "/health"
timeout = 10
""" + "".join(sections)


def version_source(version: str) -> str:
    return (APPS / "queue" / "version.py").read_text().replace('"v1"', f'"{version}"')


# -- what the server says ------------------------------------------------------------------



def apply(box: BareServer, toml: str) -> JsonRun:
    box.write_file("/root/fleet.toml", toml)
    return fleet_json(box, "apply", "/root/fleet.toml")


def changed(run: JsonRun) -> list[tuple[str, str | None, str]]:
    return [(s["name"], s.get("app"), s["status"]) for s in run.data["steps"]
            if s["status"] != "ok"]


def background(box: BareServer) -> dict:
    return fleet_json(box, "status").data["apps"][APP]["background"]


def workers_running(box: BareServer, name: str = "tasks", processes: int = 2) -> dict:
    worker = background(box)["workers"][name]
    assert worker["state"] == "running", worker
    assert worker["processes"] == processes and worker["running"] == processes, worker
    assert len(worker["pids"]) == processes, worker
    return worker


def live_dir(box: BareServer) -> str:
    """The live release's directory (what `current` points to)."""
    return box.run(["readlink", "-f", f"{HOME}/current"], check=True).stdout.strip()


def unit(kind: str, name: str, suffix: str = "service") -> str:
    return f"fleet-{APP}.{kind}.{name}.{suffix}"


def worker_unit(instance: int, name: str = "tasks") -> str:
    return f"fleet-{APP}.worker.{name}@{instance}.service"


def is_active(box: BareServer, name: str) -> str:
    return box.run(["systemctl", "is-active", name]).stdout.strip()


def main_pid(box: BareServer, name: str) -> int:
    out = box.run(["systemctl", "show", "-p", "MainPID", "--value", name], check=True).stdout
    return int(out.strip() or 0)


def started_at(box: BareServer, name: str) -> float:
    """When systemd last started the unit's main process, as epoch seconds (the server shares
    the host's clocks: its monotonic clock is ours)."""
    out = box.run(["systemctl", "show", "-p", "ExecMainStartTimestampMonotonic", "--value",
                   name], check=True).stdout
    return int(out.strip()) / 1e6 + (time.time() - time.monotonic())


def our_units(box: BareServer) -> list[str]:
    """The app's unit files and the links that enable them."""
    out = box.run(["sh", "-c", f"cd {UNITS} && ls -d fleet-{APP}.* */fleet-{APP}.* "
                               "2>/dev/null"]).stdout
    return sorted(out.split())


def complete(box: BareServer, key: str, timeout: float = 30) -> dict:
    """Enqueue `key` through the web app and wait for a worker's report on it."""
    answer = box.http(f"/enqueue/{key}", host=HOST, method="POST")
    assert answer.status == 202, answer

    def done() -> dict:
        result = box.http(f"/result/{key}", host=HOST)
        assert result.status == 200, f"no worker completed {key!r} yet ({result.status})"
        return json.loads(result.body)

    return eventually(done, timeout)


def ticks(box: BareServer) -> list[tuple[float, str, str]]:
    """(time, release, version) of each run of the job `tick`."""
    try:
        text = box.read_file(f"{INSTANCE}/ticks.log").decode()
    except FileNotFoundError:
        return []
    return [(float(t), release, version)
            for t, release, version in (line.split() for line in text.splitlines() if line)]


def new_tick(box: BareServer, after: float, release: str, version: str,
             timeout: float = 15) -> tuple[float, str, str]:
    def seen() -> tuple[float, str, str]:
        fresh = [t for t in ticks(box) if t[0] > after]
        assert fresh, f"no tick since {after:.1f}: {ticks(box)[-3:]}"
        assert fresh[-1][1:] == (release, version), fresh
        return fresh[-1]

    return eventually(seen, timeout)


def calendar_in(box: BareServer, seconds: int) -> tuple[str, float]:
    """An exact `*-*-* HH:MM:SS` schedule `seconds` from now in the server's own timezone
    (systemd reads OnCalendar in it), and that moment in epoch seconds."""
    due = int(time.time()) + seconds
    hms = box.run(["date", "-d", f"@{due}", "+%H:%M:%S"], check=True).stdout.strip()
    return f"*-*-* {hms}", float(due)


def processes_of(box: BareServer, user: str) -> list[dict[str, str]]:
    return [p for p in proc_table(box) if p["user"] == user]


# -- the server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def box(server_factory, git_remote, fleet_pyz):
    if APP not in git_remote.repos_created:
        git_remote.create_repo(APP, APPS / "queue")
    server: BareServer = server_factory(provisioned=True)
    install_fleet(server, fleet_pyz)
    server.write_file(ENV_FILE, f"QUEUE_FROM_FILE={FROM_FILE}\n", mode=0o600)
    bootstrap_apply(server, app_toml(git_remote, TASKS, TICK))
    RELEASES["v1"] = git_remote.head(APP)[:12]
    return server


@pytest.fixture(autouse=True)
def diagnostics(request: pytest.FixtureRequest, box: BareServer) -> Iterator[None]:
    """On failure, what systemd says about the app's units (the journal's tail with it)."""
    yield
    report = getattr(request.node, "_fleet_rep_call", None)
    if report is not None and report.failed and box.booted:
        print(box.run(["systemctl", "list-units", "--all", "--no-pager", f"fleet-{APP}*"]).stdout)
        print(box.run(["journalctl", "--no-pager", "-n", "60", "-o", "short-precise",
                       "-u", f"fleet-{APP}*"]).stdout)


# -- the tests, in order -------------------------------------------------------------------


def test_worker_completes_a_task_as_the_app_user_on_the_live_release(box) -> None:
    release_dir = live_dir(box)
    release = RELEASES["v1"]
    assert release_dir == f"{HOME}/releases/{release}", release_dir
    done = complete(box, "first")
    assert done["version"] == "v1" and done["release"] == release, done
    assert done["user"] == APP and done["uid"] != 0, done
    assert done["cwd"] == release_dir, done
    assert done["secret"] == SECRET and done["from_file"] == FROM_FILE, done
    assert done["process"] == "tasks" and done["home"] == f"{HOME}/shared", done
    assert done["prefix"].startswith(f"{HOME}/venvs/"), done  # the app's venv, first on PATH
    # The process that did it belongs to one of the worker's units.
    cgroup = box.read_file(f"/proc/{done['pid']}/cgroup").decode()
    assert "fleet-queue.worker.tasks@" in cgroup, cgroup
    assert [is_active(box, worker_unit(n)) for n in (1, 2, 3)] == ["active", "active",
                                                                   "inactive"]
    tasks = eventually(lambda: workers_running(box))
    assert tasks["release"] == release and tasks["restarts"] == 0, tasks
    for pid in tasks["pids"]:
        assert box.proc_user(pid) == APP
    for name in (worker_unit(1).replace("@1", "@"), unit("job", "tick"),
                 unit("job", "tick", "timer")):
        assert box.exists(f"{UNITS}/{name}"), name
    assert box.exists(f"{UNITS}/timers.target.wants/{unit('job', 'tick', 'timer')}")
    for n in (1, 2):
        assert box.exists(f"{UNITS}/multi-user.target.wants/{worker_unit(n)}"), n

    def tick_ran() -> dict:
        tick = background(box)["jobs"]["tick"]
        assert tick["last_run"] is not None and tick["last_result"] == "success", tick
        return tick

    tick = eventually(tick_ran, 20)
    now = time.time()
    assert tick["schedule"] == "*:*:0/5" and tick["state"] in ("waiting", "running"), tick
    assert now - 15 < tick["last_run"] <= now + 1, (now, tick)
    assert now - 2 <= tick["next_run"] <= now + 7, (now, tick)
    assert tick["release"] == release, tick


def test_job_writes_into_the_persist_directory_every_five_seconds(box) -> None:
    before = len(ticks(box))

    def two_more() -> list[tuple[float, str, str]]:
        lines = ticks(box)
        assert len(lines) - before >= 2, lines
        return lines

    lines = eventually(two_more, 16)  # polled, not slept: two runs take 5-10 s
    fresh = lines[before:]
    gaps = [b[0] - a[0] for a, b in pairwise(lines[max(before - 1, 0):])]
    assert all(3 <= gap <= 7.5 for gap in gaps), gaps
    assert {(r, v) for _, r, v in fresh} == {(RELEASES["v1"], "v1")}, fresh
    owner = box.run(["stat", "-c", "%U", f"{INSTANCE}/ticks.log"], check=True).stdout.strip()
    assert owner == APP


def test_logs_show_worker_and_job_lines_and_filter_them(box) -> None:
    worker_line, tick_line = "worker v1 done first", re.compile(r"tick \d+\.\d+ ")
    every = fleet(box, "logs", APP, "-n", "500")
    assert every.returncode == 0, every.stderr
    assert worker_line in every.stdout and tick_line.search(every.stdout), every.stdout[-3000:]
    tasks = fleet(box, "logs", APP, "--process", "tasks", "-n", "500")
    assert tasks.returncode == 0, tasks.stderr
    assert worker_line in tasks.stdout and not tick_line.search(tasks.stdout), tasks.stdout
    tick = fleet(box, "logs", APP, "--job", "tick", "-n", "500")
    assert tick.returncode == 0, tick.stderr
    assert tick_line.search(tick.stdout) and worker_line not in tick.stdout, tick.stdout


def test_rerun_of_apply_changes_nothing(box) -> None:
    pids = sorted(workers_running(box)["pids"])
    again = fleet_json(box, "apply")
    assert again.returncode == 0, describe(again)
    assert changed(again) == [], changed(again)
    assert any(s["name"] == STEP and s.get("app") == APP for s in again.data["steps"])
    assert sorted(workers_running(box)["pids"]) == pids  # nothing restarted


def test_drift_is_repaired_and_reported(box) -> None:
    timer = unit("job", "tick", "timer")
    box.run(["systemctl", "stop", timer], check=True)
    box.run(["rm", f"{UNITS}/{timer}"], check=True)
    box.run(["systemctl", "daemon-reload"], check=True)
    box.run(["systemctl", "stop", worker_unit(2)], check=True)
    assert is_active(box, worker_unit(2)) == "inactive"
    time.sleep(1)  # a run the timer started just before it stopped may still write its line
    since = time.time()
    time.sleep(6)
    assert not [t for t in ticks(box) if t[0] > since], "the timer still runs the job"
    repaired = fleet_json(box, "apply")
    assert repaired.returncode == 0, describe(repaired)
    assert (STEP, APP, "changed") in changed(repaired), changed(repaired)
    assert box.exists(f"{UNITS}/{timer}")
    assert is_active(box, timer) == "active"
    assert is_active(box, worker_unit(1)) == is_active(box, worker_unit(2)) == "active"
    new_tick(box, time.time(), RELEASES["v1"], "v1")
    eventually(lambda: workers_running(box))
    assert complete(box, "after-drift")["version"] == "v1"
    again = fleet_json(box, "apply")
    assert again.returncode == 0 and changed(again) == [], changed(again)


def test_killed_worker_is_restarted(box) -> None:
    before = workers_running(box)
    name = worker_unit(1)
    pid = main_pid(box, name)  # /bin/sh -c COMMAND: the worker's main process
    box.run(["sh", "-c", f"kill -9 {pid}"], check=True)

    def restarted() -> None:
        new = main_pid(box, name)
        assert new not in (0, pid) and is_active(box, name) == "active", new

    eventually(restarted, 20)
    after = eventually(lambda: workers_running(box), 15)
    assert pid not in after["pids"] and set(after["pids"]) != set(before["pids"]), after
    assert after["restarts"] > before["restarts"], (before, after)
    assert complete(box, "after-kill")["version"] == "v1"


def test_deploy_under_load_moves_workers_and_jobs_after_the_web(box, git_remote) -> None:
    old = workers_running(box)
    git_remote.commit(APP, {"version.py": version_source("v2")}, "v2")
    release = RELEASES["v2"] = git_remote.head(APP)[:12]
    begin = time.time()
    with Load(HOST, path="/", threads=2) as load:
        run = fleet_json(box, "deploy", APP)
    assert run.returncode == 0, describe(run)
    assert load.failed == 0, load.failures[:5]
    assert load.ok > 20 and load.bodies <= {"queue v1", "queue v2"}, load.bodies
    assert live_dir(box) == f"{HOME}/releases/{release}"
    done = complete(box, "v2-task")
    assert done["version"] == "v2" and done["release"] == release, done
    assert done["cwd"] == f"{HOME}/releases/{release}", done
    tasks = eventually(lambda: workers_running(box))
    assert tasks["release"] == release, tasks
    assert not set(tasks["pids"]) & set(old["pids"]), (old, tasks)
    # The workers moved only once nginx served the new release (0.5 s: the first answer of
    # the new release came at most one request's time after the switch).
    first_v2 = min(s.start for s in load.samples if s.body == "queue v2")
    for n in (1, 2):
        assert started_at(box, worker_unit(n)) >= first_v2 - 0.5, (n, first_v2)
    tick = new_tick(box, time.time(), release, "v2")
    assert background(box)["jobs"]["tick"]["release"] == release
    # The job kept its schedule through the deploy: no run missed, none twice.
    during = [t for t, _, _ in ticks(box) if begin - 6 <= t <= tick[0]]
    gaps = [b - a for a, b in pairwise(during)]
    assert gaps and all(2.5 <= gap <= 8 for gap in gaps), (during, gaps)


def test_deploy_that_fails_its_gate_leaves_workers_on_the_serving_release(box,
                                                                       git_remote) -> None:
    git_remote.tag(APP, "v2")  # later applies pin the app here, away from the bad commit
    before = workers_running(box)
    git_remote.commit(APP, {"version.py": version_source("v3"),
                            "wsgi.py": WSGI.replace("HEALTHY = True", "HEALTHY = False")},
                      "v3, unhealthy")
    run = fleet_json(box, "apply")
    assert run.returncode != 0, run.data
    failed = [s for s in run.data["steps"] if s["status"] == "failed"]
    assert failed and failed[0]["app"] == APP, failed
    assert get(box, HOST)[1] == "queue v2"
    done = complete(box, "after-bad-deploy")
    assert done["version"] == "v2" and done["release"] == RELEASES["v2"], done
    after = workers_running(box)
    assert sorted(after["pids"]) == sorted(before["pids"]), (before, after)  # not restarted
    assert after["release"] == RELEASES["v2"], after
    new_tick(box, time.time(), RELEASES["v2"], "v2")
    pinned = apply(box, app_toml(git_remote, TASKS, TICK, ref="v2"))
    assert pinned.returncode == 0, describe(pinned)
    assert sorted(workers_running(box)["pids"]) == sorted(before["pids"])


def test_rollback_moves_workers_with_the_web_app(box) -> None:
    back = fleet_json(box, "rollback", APP)
    assert back.returncode == 0, describe(back)
    assert get(box, HOST)[1] == "queue v1"
    done = complete(box, "after-rollback")
    assert done["version"] == "v1" and done["release"] == RELEASES["v1"], done
    assert workers_running(box)["release"] == RELEASES["v1"]
    forth = fleet_json(box, "deploy", APP, "--ref", "v2")  # the file's pin again
    assert forth.returncode == 0, describe(forth)
    assert get(box, HOST)[1] == "queue v2"
    done = complete(box, "after-deploy-ref")
    assert done["version"] == "v2" and done["release"] == RELEASES["v2"], done
    assert workers_running(box)["release"] == RELEASES["v2"]


def test_fleet_run_passes_exit_code_environment_and_stdin(box) -> None:
    release = RELEASES["v2"]

    def run(*argv: str, input: str | None = None):
        return fleet(box, "run", APP, "--", *argv, input=input)

    assert run("sh", "-c", "exit 7").returncode == 7
    assert run("true").returncode == 0
    who = run("id", "-un")
    assert (who.returncode, who.stdout) == (0, f"{APP}\n"), who
    where = run("pwd")
    assert where.stdout == f"{HOME}/releases/{release}\n", where
    env = run("sh", "-c", 'echo "$QUEUE_SECRET|$QUEUE_FROM_FILE|$FLEET_APP|$FLEET_PROCESS|'
                          '$FLEET_RELEASE|$HOME|$LANG"')
    assert env.stdout == f"{SECRET}|{FROM_FILE}|{APP}|run|{release}|{HOME}/shared|C.UTF-8\n", \
        env
    path = run("sh", "-c", "command -v python")
    assert path.stdout.startswith(f"{HOME}/venvs/"), path  # the venv first on PATH
    echo = run("sh", "-c", "read first; echo got:$first; cat", input="hello\nworld\n")
    assert (echo.returncode, echo.stdout) == (0, "got:hello\nworld\n"), echo
    oops = run("sh", "-c", "echo oops >&2; exit 3")
    assert oops.returncode == 3 and "oops" in oops.stderr and "oops" not in oops.stdout, oops
    wrote = run("sh", "-c", "echo ran > instance/run.txt")
    assert wrote.returncode == 0, wrote.stderr
    owner = box.run(["stat", "-c", "%U", f"{INSTANCE}/run.txt"], check=True).stdout.strip()
    assert owner == APP
    unknown = fleet(box, "run", "nosuch", "--", "true")
    assert unknown.returncode == 2, unknown
    assert not [p for p in processes_of(box, APP) if p["comm"] == "cat"]  # nothing left


def test_fleet_run_finds_the_venv_commands_by_name(box) -> None:
    # What `fleet run shop -- flask db upgrade` needs: the command name found on the
    # environment's PATH (the venv first), as `sh -c` above finds it.
    python = fleet(box, "run", APP, "--", "python", "-c",
                   "import flask, sys, version; print(sys.prefix, version.VERSION)")
    assert python.returncode == 0, python.stderr
    prefix, version = python.stdout.split()
    assert prefix.startswith(f"{HOME}/venvs/") and version == "v2", python.stdout
    flask = fleet(box, "run", APP, "--", "flask", "--app", "wsgi", "routes")
    assert flask.returncode == 0 and "/enqueue/<key>" in flask.stdout, flask


def test_job_timeout_kills_its_tree_and_runs_never_overlap(box, git_remote) -> None:
    hang_at, due = calendar_in(box, 25)
    jobs = f"""
[apps.queue.jobs.hang]
command = "sleep 300 & sleep 300"
schedule = "{hang_at}"
timeout = 2

[apps.queue.jobs.slow]
command = "echo start $(date +%s.%N) >> instance/slow.log; sleep 8; echo end $(date +%s.%N) >> instance/slow.log"
schedule = "*:*:0/5"
"""  # noqa: E501 - one command line
    run = apply(box, app_toml(git_remote, TASKS, TICK, jobs, ref="v2"))
    assert run.returncode == 0, describe(run)
    assert (STEP, APP, "changed") in changed(run), changed(run)
    assert time.time() < due - 3, "apply took too long: the hang job's time already passed"

    def timed_out() -> dict:
        hang = background(box)["jobs"]["hang"]
        assert hang["last_result"] == "timeout" and hang["state"] != "running", hang
        return hang

    hang = eventually(timed_out, due - time.time() + 20)
    assert due - 1 <= hang["last_run"] <= due + 3, (due, hang)
    assert hang["next_run"] > time.time() + DAY - 120, hang  # same time tomorrow
    assert box.pids_of("sleep 300") == [], "the job's process tree outlived its timeout"

    def two_runs() -> list[tuple[str, float]]:
        text = box.read_file(f"{INSTANCE}/slow.log").decode()
        marks = [(kind, float(at)) for kind, at in (line.split() for line in text.splitlines())]
        assert [kind for kind, _ in marks].count("end") >= 2, marks
        return marks

    marks = eventually(two_runs, 30)
    kinds = [kind for kind, _ in marks]
    assert kinds[: len(kinds) // 2 * 2] == ["start", "end"] * (len(kinds) // 2), marks
    times = [at for _, at in marks]
    assert times == sorted(times), marks  # each run began after the one before had ended
    starts = times[::2]
    assert all(b - a >= 8 for a, b in pairwise(starts)), marks  # due ones skipped
    slow = background(box)["jobs"]["slow"]
    assert slow["last_result"] == "success", slow
    assert slow["skipped"] >= 1 and slow["last_skipped"] is not None, slow  # recorded


def test_run_missed_while_off_runs_once_after_boot(box, git_remote) -> None:
    late_at, due = calendar_in(box, 40)
    late = f"""
[apps.queue.jobs.late]
command = "date +%s >> instance/late.log"
schedule = "{late_at}"
"""
    run = apply(box, app_toml(git_remote, TASKS, TICK, late, ref="v2"))
    assert run.returncode == 0, describe(run)
    gone = [u for u in our_units(box) if ".job.hang." in u or ".job.slow." in u]
    assert gone == [], gone  # jobs removed from the file are removed from the server
    assert time.time() < due - 10, "apply took too long: no time left to power off"
    box.poweroff()
    assert time.time() < due, "the server was still up when the job was due"
    time.sleep(max(0.0, due + 3 - time.time()))
    box.boot()

    def ran() -> list[str]:
        try:
            runs = box.read_file(f"{INSTANCE}/late.log").decode().split()
        except FileNotFoundError:
            runs = []
        assert runs, "the missed run did not happen after boot"
        return runs

    eventually(ran, 30)
    done = complete(box, "after-boot", timeout=60)
    assert done["release"] == RELEASES["v2"] and done["version"] == "v2", done
    eventually(lambda: workers_running(box), 20)
    time.sleep(5)
    runs = ran()
    assert len(runs) == 1 and int(runs[0]) >= due, runs  # once, after boot
    job = background(box)["jobs"]["late"]
    assert job["last_result"] == "success" and job["last_run"] >= due, job
    assert job["next_run"] > time.time() + DAY - 120, job  # tomorrow
    new_tick(box, time.time(), RELEASES["v2"], "v2")


def test_crash_looping_worker_is_failed_and_reported_without_touching_the_web(
        box, git_remote) -> None:
    crashy = '\n[apps.queue.workers.crashy]\ncommand = "echo crashing; exit 3"\n'
    run = apply(box, app_toml(git_remote, TASKS, TICK, crashy, ref="v2"))
    others = [s for s in run.data["steps"] if s["status"] == "failed" and s["name"] != STEP]
    assert others == [], others

    def failed() -> dict:
        worker = background(box)["workers"]["crashy"]
        assert worker["state"] == "failed", worker
        return worker

    eventually(failed, 120, every=2)  # 10 starts within 5 min, 5 s apart
    check = fleet(box, "check")
    assert check.returncode != 0, check.stdout
    assert "crashy" in check.stdout + check.stderr, check.stdout + check.stderr
    assert get(box, HOST)[1] == "queue v2"
    workers_running(box)
    assert complete(box, "beside-crashy")["version"] == "v2"


def test_removed_workers_and_jobs_are_stopped_and_deleted(box, git_remote) -> None:
    run = apply(box, app_toml(git_remote, ref="v2"))
    assert run.returncode == 0, describe(run)
    assert (STEP, APP, "changed") in changed(run), changed(run)
    assert our_units(box) == []

    def only_the_vassal() -> None:
        left = [p for p in processes_of(box, APP) if not p["comm"].startswith("uwsgi")]
        assert left == [], left

    eventually(only_the_vassal, 20)
    assert [p for p in processes_of(box, APP) if p["comm"].startswith("uwsgi")]
    assert get(box, HOST)[1] == "queue v2"
    check = fleet_json(box, "check")
    assert check.returncode == 0, check.data
    rest = fleet_json(box, "status").data["apps"][APP].get("background") or {}
    assert not rest.get("workers") and not rest.get("jobs"), rest
    again = fleet_json(box, "apply")
    assert again.returncode == 0 and changed(again) == [], changed(again)
    # Nor does systemd keep them: a removed unit left `failed` (the crash-looping worker, a
    # job stopped mid-run) stays in `systemctl --failed` and the server "degraded" until reboot.
    loaded = box.run(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                      "--state=active,activating,deactivating,failed", f"fleet-{APP}*"]).stdout
    state = box.run(["systemctl", "is-system-running"]).stdout.strip()
    assert loaded.strip() == "", f"{loaded}system: {state}"
