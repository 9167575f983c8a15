"""Bare servers on a private bridge (tests/harness/network.py), reachable by address and ssh.

Each has its own network namespace (`nspawn --network-bridge`), a static address from
systemd-networkd (enabled in this server's copy, never in the cached base), its own hostname,
and, after ``install_sshd()``, OpenSSH's server with a test key in root's authorized_keys.
"""

from __future__ import annotations

import http.client
import subprocess
import threading
import time
from pathlib import Path

from .network import BridgeNetwork
from .server import BareServer, CommandFailed, HttpResponse, NoResponse

NETWORKD = "/usr/lib/systemd/system/systemd-networkd"
SSHD_TREE = ("openssh-server",)  # `extra=SSHD_TREE`: a provisioned tree with sshd installed
_APT_LOCK = threading.Lock()


class BridgedServer(BareServer):
    """A BareServer with its own network on *network*, at address .10 + index."""

    shares_host_network = False

    def __init__(self, network: BridgeNetwork, index: int, hostname: str,
                 suite: str | None = None, *, provisioned: bool = False,
                 extra: tuple[str, ...] = ()) -> None:
        super().__init__(suite, provisioned=provisioned, extra=extra)
        self.network = network
        self.address = network.address(index)
        self.hostname = hostname
        try:
            self._configure_network()
        except BaseException:
            self.destroy()
            raise

    def _configure_network(self) -> None:
        # Same name as systemd's own DHCP default for host0, so this file replaces it.
        self.write_file("/etc/systemd/network/80-container-host0.network",
                        self.network.network_file(self.address))
        self.write_file("/etc/hostname", self.hostname + "\n")
        self.write_file("/etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {self.hostname}\n")
        self.write_file("/etc/resolv.conf", f"nameserver {self.network.nameserver}\n")
        for unit, target in (("service", "multi-user.target"), ("socket", "sockets.target")):
            wants = self.host_path(f"/etc/systemd/system/{target}.wants")
            wants.mkdir(parents=True, exist_ok=True)
            link = wants / f"systemd-networkd.{unit}"
            if not link.is_symlink():
                link.symlink_to(f"{NETWORKD}.{unit}")

    def _network_args(self) -> list[str]:
        return [f"--network-bridge={self.network.name}", f"--hostname={self.hostname}"]

    def install_packages(self, *packages: str) -> None:
        """apt-get install *packages* inside (through the NAT).

        Every server binds the same apt archive cache, whose lock apt does not wait for: one
        install at a time here, and retries while another session's server holds it.
        """
        command = ("DEBIAN_FRONTEND=noninteractive apt-get update -q && "
                   "DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                   "--no-install-recommends " + " ".join(packages))
        with _APT_LOCK:
            for _ in range(60):
                result = self.run(command, timeout=900)
                if result.ok or "Could not get lock" not in result.stderr:
                    break
                time.sleep(5)
        if not result.ok:
            raise CommandFailed(result)

    def install_sshd(self, public_key: str) -> None:
        """Install OpenSSH's server inside (unless the tree has it: SSHD_TREE) with host keys
        of its own, and trust *public_key* for root."""
        if not self.host_path("/usr/sbin/sshd").exists():
            self.install_packages("openssh-server")
        self.write_file("/root/.ssh/authorized_keys", public_key, 0o600)
        self.run("chmod 700 /root/.ssh && ssh-keygen -A && systemctl enable --now ssh",
                 check=True)

    def http_at(self, path: str = "/", host: str = "localhost",
                timeout: float = 10) -> HttpResponse:
        """One request to this server's bridge address (from the host, as a visitor would)."""
        conn = http.client.HTTPConnection(self.address, 80, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Host": host})
            resp = conn.getresponse()
            return HttpResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                                resp.read().decode(errors="replace"))
        except (ConnectionError, TimeoutError, http.client.HTTPException) as exc:
            raise NoResponse("closed", f"{self.address} {host}{path}: {exc}") from exc
        finally:
            conn.close()


def make_ssh_identity(directory: Path) -> tuple[Path, Path, str]:
    """A fresh key pair and an ssh config using it (-F: OpenSSH reads ~ from passwd, not
    $HOME). Returns (config file, private key, public key text)."""
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleet-tests",
                    "-f", str(key)], check=True, capture_output=True)
    config = directory / "ssh_config"
    config.write_text(
        "Host *\n"
        f"  IdentityFile {key}\n"
        "  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n"
        "  LogLevel ERROR\n"
    )
    return config, key, (directory / "id_ed25519.pub").read_text()
