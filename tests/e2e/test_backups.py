"""Backups that restore (issue 17), on bridged servers, in order, one server shared:

1. `fleet backup` while a WAL-mode SQLite app takes writes under load: the snapshot, restored
   into a scratch directory, passes integrity_check and holds every row acknowledged before
   the backup began;
2. the data destroyed, `fleet restore` brings it back and the app serves it; links the app
   planted to root's files are backed up and restored as links, never followed;
3. a freshly booted second server (fleet apply of the same config, its repository the first
   server's over sftp:, the password file kept off-site) restores it;
4. the timer-driven backup runs, keep last = 2 prunes, status shows it, and check fails when
   the last scheduled backup failed;
5. a restore from a corrupted repository fails and leaves the current data serving.

Not a provisioning test: its servers start from the provisioned tree (python3 and fleet's OS
packages preinstalled, tests/harness/rootfs.py); bare servers are provisioned in test_apply,
test_operator, test_reliability, test_smoke, test_trixie and the push modules.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import bootstrap_apply, fleet, fleet_json, install_fleet
from tests.harness.bridged import BridgedServer, make_ssh_identity
from tests.harness.gitremote import GitRemote
from tests.harness.network import BridgeNetwork

DOMAIN = "ledger.test"
REPO = "/var/backups/fleet/restic"
RESTIC_ENV = f"RESTIC_REPOSITORY={REPO} RESTIC_PASSWORD_FILE=/etc/fleet/backup.password"


def config(repo_url: str, backup: str = "") -> str:
    return (f"[server.backup]\n{backup}\n"
            f'[apps.ledger]\nrepo = "{repo_url}"\ndomains = ["{DOMAIN}"]\n'
            'health = { path = "/health" }\n')


class Setup:
    def __init__(self, network: BridgeNetwork, git: GitRemote, server: BridgedServer,
                 pyz: Path, url: str) -> None:
        self.network, self.git, self.server, self.pyz, self.url = network, git, server, pyz, url


def request(server: BridgedServer, method: str, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection(server.address, 80, timeout=30)
    try:
        conn.request(method, path, headers={"Host": DOMAIN})
        reply = conn.getresponse()
        return reply.status, reply.read().decode()
    finally:
        conn.close()


def rows(server: BridgedServer) -> tuple[int, int]:
    status, body = request(server, "GET", "/rows")
    assert status == 200, (status, body)
    total, top = body.split()
    return int(total), int(top)


@pytest.fixture(scope="module")
def setup(e2e_host: None, suite: str, fleet_pyz: Path, fixture_apps_dir: Path) -> Iterator[Setup]:
    with BridgeNetwork() as network, GitRemote(listen=("127.0.0.1", network.gateway)) as git:
        git.create_repo("ledger", fixture_apps_dir / "ledger")
        url = git.url("ledger", network.gateway)
        server = BridgedServer(network, 0, "backup-one", suite, provisioned=True)
        try:
            server.boot()
            install_fleet(server, fleet_pyz)
            bootstrap_apply(server, config(url))
            yield Setup(network, git, server, fleet_pyz, url)
        finally:
            server.destroy()


@pytest.fixture(scope="module")
def acked(setup: Setup) -> dict[str, object]:
    """Rows written continuously by 4 clients while `fleet backup` runs; the ids acknowledged
    before it started."""
    server = setup.server
    done: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[str] = []

    def writer() -> None:
        while not stop.is_set():
            try:
                status, body = request(server, "POST", "/rows")
            except OSError as exc:
                errors.append(str(exc))
                continue
            if status == 201:
                with lock:
                    done.add(int(body))
            else:
                errors.append(f"{status} {body[:100]}")

    threads = [threading.Thread(target=writer, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(done) < 300 and time.monotonic() < deadline:
        time.sleep(0.1)
    with lock:
        before = set(done)
    run = fleet_json(server, "backup", "ledger")
    with lock:
        during = len(done) - len(before)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert run.returncode == 0, run.result.stdout + run.result.stderr
    return {"before": before, "during": during, "run": run.data, "errors": errors}


def test_a_backup_under_write_load_holds_every_acknowledged_row(setup: Setup, acked) -> None:
    server = setup.server
    result = acked["run"]["apps"]["ledger"]
    assert result["result"] == "ok" and result["snapshot"], acked["run"]
    assert len(acked["before"]) >= 300 and acked["during"] > 0, acked["during"]
    assert not acked["errors"], acked["errors"][:5]
    server.run(f"rm -rf /tmp/scratch && {RESTIC_ENV} restic restore {result['snapshot']} "
               "--target /tmp/scratch", check=True, timeout=600)
    base = "/tmp/scratch/var/lib/fleet/backup-staging/ledger"
    script = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
              "print(c.execute('PRAGMA integrity_check').fetchone()[0]); "
              "print(' '.join(str(r[0]) for r in c.execute('SELECT id FROM rows')))")
    out = server.run(["python3", "-c", script, f"{base}/data/instance/ledger.db"],
                     check=True).stdout.splitlines()
    assert out[0] == "ok"
    held = {int(x) for x in out[1].split()}
    assert acked["before"] <= held, sorted(acked["before"] - held)[:10]
    manifest = json.loads(server.read_file(f"{base}/manifest.json"))
    assert manifest["app"] == "ledger" and manifest["commit"] and manifest["release"]
    db = next(f for f in manifest["files"] if f["path"] == "instance/ledger.db")
    assert db["sqlite"] is True and len(db["sha256"]) == 64
    assert not any(f["path"].endswith(("-wal", "-shm")) for f in manifest["files"])
    state = json.loads(server.read_file("/var/lib/fleet/backups/ledger.json"))
    assert state["last_result"] == "ok" and state["snapshot"] == result["snapshot"]
    assert state["error"] is None and state["bytes"] == result["bytes"]
    mode = server.run("stat -c %a/%U /var/lib/fleet/backups/ledger.json /etc/fleet/"
                      "backup.password", check=True).stdout.split()
    assert mode == ["600/root", "600/root"]
    listing = fleet_json(server, "backups", "ledger")
    assert [s["id"] for s in listing.data["snapshots"]] == [result["snapshot"]]
    server.run("rm -rf /tmp/scratch", check=True)


def test_restore_brings_back_destroyed_data(setup: Setup, acked) -> None:
    server = setup.server
    total, _ = rows(server)
    server.run("rm -rf /srv/fleet/ledger/shared/instance/*", check=True)
    assert rows(server)[0] == 0  # the app made itself an empty database
    run = fleet_json(server, "restore", "ledger")
    assert run.returncode == 0, run.result.stdout + run.result.stderr
    restored, _ = rows(server)
    assert len(acked["before"]) <= restored <= total
    owner = server.run("stat -c %U /srv/fleet/ledger/shared/instance "
                       "/srv/fleet/ledger/shared/instance/ledger.db", check=True).stdout.split()
    assert owner == ["ledger", "ledger"]
    assert request(server, "POST", "/rows")[0] == 201  # writable by the app again
    leftovers = server.run("ls -a /srv/fleet/ledger /srv/fleet/ledger/shared",
                           check=True).stdout
    assert ".fleet-aside" not in leftovers and ".fleet-restore" not in leftovers
    assert request(server, "GET", "/health")[0] == 200  # maintenance is off again


def test_links_the_app_plants_are_kept_as_links_and_never_followed(setup: Setup,
                                                                  acked) -> None:
    """Root takes the app's copy over and later puts a restore in place: links the app's code
    planted in its data (to root's secrets) are stored and restored as links; root never
    reads or re-owns what they point at."""
    server = setup.server
    instance = "/srv/fleet/ledger/shared/instance"
    for target, name in (("/etc/shadow", "leak"), ("/root", "rootdir")):
        server.run(["runuser", "-u", "ledger", "--", "ln", "-s", target, f"{instance}/{name}"],
                   check=True)
    before = server.run("stat -c %a:%U:%G /etc/shadow /root", check=True).stdout
    run = fleet_json(server, "backup", "ledger")
    assert run.returncode == 0, run.result.stdout + run.result.stderr
    snapshot = run.data["apps"]["ledger"]["snapshot"]
    server.run(f"rm -rf /tmp/scratch && {RESTIC_ENV} restic restore {snapshot} "
               "--target /tmp/scratch", check=True, timeout=600)
    data = "/tmp/scratch/var/lib/fleet/backup-staging/ledger/data/instance"
    assert server.run(["readlink", f"{data}/leak"]).stdout.strip() == "/etc/shadow"
    assert server.run(["readlink", f"{data}/rootdir"]).stdout.strip() == "/root"
    # grep -r follows no links: no file of the snapshot holds a line of /etc/shadow
    assert server.run("grep -rl '^root:' /tmp/scratch").stdout == ""
    restored = fleet_json(server, "restore", "ledger")
    assert restored.returncode == 0, restored.result.stdout + restored.result.stderr
    links = server.run(["stat", "-c", "%F %U", f"{instance}/leak", f"{instance}/rootdir"],
                       check=True).stdout.splitlines()
    assert links == ["symbolic link ledger", "symbolic link ledger"], links
    assert server.run("stat -c %a:%U:%G /etc/shadow /root", check=True).stdout == before
    server.run(f"rm -rf /tmp/scratch {instance}/leak {instance}/rootdir", check=True)


def test_a_fresh_server_restores_from_the_first_ones_repository_over_sftp(
        setup: Setup, acked, tmp_path: Path) -> None:
    """Disaster recovery as README tells it: a new server, `fleet apply` of the same config with
    the repository named by its off-site URL (here sftp: to the first server, root's ssh key
    and host-key policy in /root/.ssh as an operator sets them up) and the password file
    kept off-site, then `fleet restore`."""
    assert fleet(setup.server, "backup", "ledger").ok
    total, _ = rows(setup.server)
    _, key, public_key = make_ssh_identity(tmp_path)
    setup.server.install_sshd(public_key)
    second = BridgedServer(setup.network, 1, "backup-two", setup.server.suite,
                           provisioned=True)
    try:
        second.boot()
        second.install_packages("openssh-client")
        second.write_file("/root/.ssh/id_ed25519", key.read_text(), 0o600)
        second.write_file("/root/.ssh/config", f"Host {setup.server.address}\n"
                          "  IdentityFile /root/.ssh/id_ed25519\n"
                          "  StrictHostKeyChecking accept-new\n", 0o600)
        second.run(["chmod", "700", "/root/.ssh"], check=True)
        install_fleet(second, setup.pyz)
        second.write_file("/etc/fleet/backup.password",
                          setup.server.read_file("/etc/fleet/backup.password"), 0o600)
        offsite = f'repository = "sftp:root@{setup.server.address}:{REPO}"'
        bootstrap_apply(second, config(setup.url, offsite))
        assert rows(second)[0] == 0
        listed = fleet_json(second, "backups", "ledger")
        assert listed.returncode == 0 and listed.data["snapshots"], listed.result.stderr
        run = fleet_json(second, "restore", "ledger")
        assert run.returncode == 0, run.result.stdout + run.result.stderr
        assert rows(second)[0] == total
    finally:
        second.destroy()


def wait_for(predicate, timeout: float, interval: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {timeout} s")


def state(server: BridgedServer) -> dict:
    return json.loads(server.read_file("/var/lib/fleet/backups/ledger.json"))


def test_the_timer_backs_up_prunes_and_check_sees_a_failure(setup: Setup, acked) -> None:
    server = setup.server
    schedule = 'schedule = "*:*:0/20"\nkeep = { last = 2 }\n'
    applied = time.time()  # the servers share the host's clock
    bootstrap_apply(server, config(setup.url, schedule))
    assert server.run("systemctl is-active fleet-backup.timer").stdout.strip() == "active"
    seen: set[float] = set()

    def third_run() -> bool:
        current = state(server)
        if current["last_attempt"] > applied and current["last_result"] == "ok":
            seen.add(current["last_attempt"])
        return len(seen) >= 3 and server.run(
            "systemctl is-active fleet-backup.service").stdout.strip() != "activating"

    wait_for(third_run, 150)
    snapshots = fleet_json(server, "backups", "ledger").data["snapshots"]
    assert 1 <= len(snapshots) <= 2, snapshots
    status = fleet_json(server, "status").data["apps"]["ledger"]["backup"]
    assert status["last_result"] == "ok" and status["problem"] is None, status
    assert fleet(server, "check").returncode == 0
    # A wrong password: the next scheduled backup fails, status and check say so.
    password = server.read_file("/etc/fleet/backup.password")
    server.write_file("/etc/fleet/backup.password", "wrong\n", 0o600)
    try:
        wait_for(lambda: state(server)["last_result"] == "failed", 60)
        checked = fleet_json(server, "check")
        assert checked.returncode == 1
        assert "backup: last backup failed" in checked.data["apps"]["ledger"]["detail"]
    finally:
        server.write_file("/etc/fleet/backup.password", password, 0o600)
    bootstrap_apply(server, config(setup.url))  # no schedule: the timer goes
    assert not server.exists("/etc/systemd/system/fleet-backup.timer")
    assert server.run("systemctl is-active fleet-backup.timer").stdout.strip() != "active"


def test_a_corrupt_snapshot_fails_the_restore_and_the_data_stays(setup: Setup,
                                                                 acked) -> None:
    server = setup.server
    assert fleet(server, "backup", "ledger").ok
    before = rows(server)
    server.run(f"for f in {REPO}/data/*/*; do head -c 4096 /dev/urandom | "
               "dd of=$f bs=4096 seek=0 conv=notrunc status=none; done", check=True)
    run = fleet(server, "restore", "ledger")
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet: "), run.stderr
    assert rows(server) == before
    assert request(server, "GET", "/health")[0] == 200  # no maintenance page left on
    assert request(server, "POST", "/rows")[0] == 201
