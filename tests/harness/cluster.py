"""Two app servers and a front on a private bridge, reachable over real ssh: what `fleet push`
is tested (tests/e2e/test_push.py) and measured (bench/push.py, which grows it to 20 app
servers and 2 fronts) against.

The host plays the operator's machine. The servers have their own network namespaces, so a
cluster needs no host-network lock and runs beside other sessions' servers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .bridged import SSHD_TREE, BridgedServer, make_ssh_identity
from .gitremote import GitRemote
from .network import BridgeNetwork

DOMAIN = "whoami.test"
HOSTNAMES = {"app1": "app-one", "app2": "app-two"}  # what whoami answers on each


@dataclass
class Cluster:
    network: BridgeNetwork
    app1: BridgedServer
    app2: BridgedServer
    front: BridgedServer
    git: GitRemote
    source: str  # the app's wsgi.py as first pushed
    config: Path
    ssh_config: Path
    pyz: Path
    shiv_root: Path
    servers: dict[str, BridgedServer]  # every server by inventory name: app1.., front, front2..

    @property
    def fronts(self) -> list[BridgedServer]:
        return [server for name, server in self.servers.items() if name.startswith("front")]

    def push_run(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        """`fleet push FILE --ssh-config ...` on the host, as the operator runs it."""
        env = {**os.environ, "SHIV_ROOT": str(self.shiv_root)}
        return subprocess.run(
            [sys.executable, str(self.pyz), "push", str(self.config),
             "--ssh-config", str(self.ssh_config), *args],
            capture_output=True, text=True, timeout=timeout, env=env, check=False)

    def push(self, *args: str, timeout: float = 1800) -> tuple[int, dict, str]:
        """`fleet push --json`: (exit status, report, stderr)."""
        proc = self.push_run("--json", *args, timeout=timeout)
        try:
            return proc.returncode, json.loads(proc.stdout), proc.stderr
        except ValueError:
            raise AssertionError(f"push printed no JSON (rc {proc.returncode}):\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}") from None

    def answers(self, count: int = 20) -> list[str]:
        """Bodies of `count` requests to the front with the app's Host header."""
        bodies = []
        for _ in range(count):
            response = self.front.http_at("/", host=DOMAIN)
            assert response.status == 200, response
            bodies.append(response.body)
        return bodies


def inventory(servers: dict[str, BridgedServer], repo: str, extra: str = "") -> str:
    """The operator's file; `extra` is TOML appended after [apps.whoami]: its lines before
    any table header are more keys of that app (e.g. tls), then tables of its own."""
    lines = []
    for name, server in servers.items():
        role = "front" if name.startswith("front") else "app"
        lines += [f"[servers.{name}]", f'address = "{server.address}"', f'role = "{role}"', ""]
    lines += ["[apps.whoami]", f'repo = "{repo}"', f'domains = ["{DOMAIN}"]',
              'health = { path = "/health" }', *([extra] if extra else []), ""]
    return "\n".join(lines)


def layout(apps: int, fronts: int) -> list[tuple[str, str]]:
    """(inventory name, hostname) of each server: fronts first (front, front2, ...), then the
    app servers app1, app2, ... (hostnames app-one, app-two, then app-3, ...)."""
    named = [("front" if i == 1 else f"front{i}", "front" if i == 1 else f"front-{i}")
             for i in range(1, fronts + 1)]
    return named + [(f"app{i}", HOSTNAMES.get(f"app{i}", f"app-{i}")) for i in range(1, apps + 1)]


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_PER_SERVER = 16  # a booted server's systemd, journald, logind...: about 6 seen here


def ensure_inotify_instances(servers: int) -> None:
    """Raise the host's inotify instances per user (default 128, shared by every root process
    and every server's systemd) when `servers` more would run out of them: a server's systemd
    then fails to start and its nspawn exits mid-boot (the 20 + 2 cluster did). Only ever
    raised, never lowered back: other sessions' servers may be counting on it meanwhile."""
    wanted = 128 + servers * INOTIFY_PER_SERVER
    if int(INOTIFY_INSTANCES.read_text()) < wanted:
        INOTIFY_INSTANCES.write_text(f"{wanted}\n")


@contextmanager
def whoami_cluster(suite: str, pyz: Path, apps_dir: Path, work: Path,
                   extra: str = "", apps: int = 2, fronts: int = 1,
                   provisioned: bool = False) -> Iterator[Cluster]:
    """Boot the servers (`apps` app servers, `fronts` fronts; three by default) with sshd and
    a key, serve tests/apps/whoami from a git daemon on the bridge, write the operator's
    fleet.toml (plus `extra`, see inventory); tear everything down after.

    `provisioned`: the servers start from the provisioned tree with sshd preinstalled
    (rootfs.py), so the first push skips apt and booting needs no apt-get per server: for
    what measures later pushes (bench/push.py), not the first one from bare."""
    servers: list[BridgedServer] = []
    with BridgeNetwork() as network, GitRemote(listen=("127.0.0.1", network.gateway)) as git:
        try:
            git.create_repo("whoami", apps_dir / "whoami")
            ssh_config, _, public_key = make_ssh_identity(work)
            named = {}
            ensure_inotify_instances(apps + fronts)
            for index, (name, hostname) in enumerate(layout(apps, fronts)):
                server = BridgedServer(network, index, hostname, suite,
                                       provisioned=provisioned,
                                       extra=SSHD_TREE if provisioned else ())
                servers.append(server)
                named[name] = server
            for server in servers:  # one at a time: parallel boots lost sshd here
                server.boot()
                server.install_sshd(public_key)
            config = work / "fleet.toml"
            in_order = {name: named[name] for name in sorted(
                named, key=lambda n: (n.startswith("front"), len(n), n))}  # app1.., fronts
            config.write_text(inventory(in_order, git.url("whoami", network.gateway), extra))
            source = (apps_dir / "whoami" / "wsgi.py").read_text()
            yield Cluster(network, named["app1"], named["app2"], named["front"], git, source,
                          config, ssh_config, pyz, work / "shiv", in_order)
        finally:
            for server in servers:
                server.destroy()
