"""What every benchmark does first: boot a bare server (tests/harness, same host lock as the
e2e tests), serve the fixture app from a local git daemon and install fleet on it."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.helpers import build_pyz, install_fleet  # noqa: E402
from tests.harness import BareServer, GitRemote, install_signal_handlers  # noqa: E402
from tests.harness.bridged import BridgedServer  # noqa: E402
from tests.harness.network import BridgeNetwork  # noqa: E402

APPS = ROOT / "tests" / "apps"


def machine() -> str:
    """Cores and memory of the host (the server shares them)."""
    mem = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal:"))
    model = next((line.split(":", 1)[1].strip()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    return f"{os.cpu_count()} cores ({model}), {int(mem) / 2**20:.1f} GiB RAM"


def start(remote: GitRemote, tmp: Path) -> BareServer:
    """A booted server with fleet installed (/root/fleet.pyz, /root/bootstrap)."""
    install_signal_handlers()
    if "pulse" not in remote.repos_created:
        remote.create_repo("pulse", APPS / "pulse")
    pyz = build_pyz(tmp / "fleet.pyz")
    server = BareServer()
    server.boot()
    install_fleet(server, pyz)
    return server


def apply(server: BareServer, toml: str, timeout: float = 1800) -> None:
    server.write_file("/root/fleet.toml", toml)
    result = server.run(["sh", "/root/bootstrap", "/root/fleet.pyz", "apply",
                         "/root/fleet.toml"], timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"fleet apply failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")


@contextlib.contextmanager
def bridged(tmp: Path, hostname: str, *,
            provisioned: bool = False) -> Iterator[tuple[BridgedServer, str]]:
    """A booted server with fleet installed on a private bridge (FLEET_TEST_BRIDGE_SUBNET):
    no host lock, no port shared with other sessions' servers; and the URL of the pulse repo
    as the server sees it. Everything is torn down after. *provisioned* boots the tree that
    already has python3 and fleet's OS packages (tests/harness/rootfs.py): for benches whose
    claims are not about provisioning, it saves bootstrap's apt-get runs."""
    install_signal_handlers()
    with BridgeNetwork() as network, \
            GitRemote(listen=("127.0.0.1", network.gateway)) as remote:
        remote.create_repo("pulse", APPS / "pulse")
        pyz = build_pyz(tmp / "fleet.pyz")
        server = BridgedServer(network, 0, hostname, provisioned=provisioned)
        try:
            server.boot()
            install_fleet(server, pyz)
            yield server, remote.url("pulse", network.gateway)
        finally:
            server.destroy()
