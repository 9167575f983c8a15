"""A private bridge for several bare servers, each with its own network namespace.

Servers on the bridge do not share the host's port 80, so they need no host lock and never
collide with other sessions' host-network servers. The host is .1 (the servers' gateway) and
masquerades the subnet with one nftables table, so apt and pip inside still reach the
registries. Everything (bridge, nft table, ip_forward) is undone by ``down()``, which also runs
at exit and on failure of ``up()``.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

from ._util import HarnessError

DEFAULT_SUBNET = os.environ.get("FLEET_TEST_BRIDGE_SUBNET", "10.213.47.0/24")
FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
TOOLS = {"ip": "iproute2", "nft": "nftables", "ssh": "openssh-client",
         "ssh-keygen": "openssh-client"}


def missing_tools() -> list[str]:
    """Host packages the bridged harness needs that are not installed."""
    return sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})


def host_nameserver() -> str:
    """The first nameserver of the host, handed to the servers (reached through the NAT)."""
    text = Path("/etc/resolv.conf").read_text(errors="replace")
    match = re.search(r"^nameserver\s+(\d+\.\d+\.\d+\.\d+)", text, re.M)
    if match is None or match.group(1).startswith("127."):
        return "1.1.1.1" if match is None else _upstream_of_stub(match.group(1))
    return match.group(1)


def _upstream_of_stub(local: str) -> str:
    """A 127.x stub resolver is not reachable from a server: use systemd-resolved's upstream."""
    upstream = Path("/run/systemd/resolve/resolv.conf")
    if upstream.is_file():
        match = re.search(r"^nameserver\s+(\d+\.\d+\.\d+\.\d+)", upstream.read_text(), re.M)
        if match:
            return match.group(1)
    raise HarnessError(f"the host's nameserver {local} is local; set one reachable from the "
                       "bridge in /etc/resolv.conf")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


class BridgeNetwork:
    """Linux bridge + address .1 + NAT for a private /24 (FLEET_TEST_BRIDGE_SUBNET)."""

    def __init__(self, subnet: str = DEFAULT_SUBNET, name: str | None = None) -> None:
        self.subnet = ipaddress.ip_network(subnet)
        if self.subnet.prefixlen != 24 or self.subnet.version != 4:
            raise HarnessError(f"bridge subnet {subnet} must be an IPv4 /24")
        self.name = name or f"fltbr{os.getpid() % 100000}"  # IFNAMSIZ: at most 15 characters
        self.table = f"fleet_{self.name}"
        self.gateway = str(self.subnet.network_address + 1)
        self.nameserver = host_nameserver()
        self._old_forward: str | None = None
        self._up = False

    def address(self, index: int) -> str:
        """Address of the index-th server (from .10 up)."""
        return str(self.subnet.network_address + 10 + index)

    def up(self) -> BridgeNetwork:
        missing = missing_tools()
        if missing:
            raise HarnessError("the bridged test servers need host packages: "
                               f"apt-get install {' '.join(missing)}")
        used = _run("ip", "-4", "-o", "addr", "show").stdout
        prefix = str(self.subnet.network_address).rsplit(".", 1)[0] + "."
        if f" {prefix}" in used:
            raise HarnessError(f"{self.subnet} is already in use on this host; choose another "
                               "with FLEET_TEST_BRIDGE_SUBNET")
        atexit.register(self.down)
        self._up = True
        try:
            _run("ip", "link", "add", self.name, "type", "bridge")
            _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.name)
            _run("ip", "link", "set", self.name, "up")
            self._old_forward = FORWARD.read_text().strip()
            FORWARD.write_text("1\n")
            rules = (f"table ip {self.table} {{\n"
                     "  chain postrouting {\n"
                     "    type nat hook postrouting priority srcnat; policy accept;\n"
                     f"    ip saddr {self.subnet} ip daddr != {self.subnet} masquerade\n"
                     "  }\n}\n")
            result = subprocess.run(["nft", "-f", "-"], input=rules, capture_output=True,
                                    text=True, check=False)
            if result.returncode != 0:
                raise HarnessError(f"nft could not add the masquerade rule: {result.stderr}")
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Remove the nft table and the bridge, restore ip_forward; safe to call twice."""
        atexit.unregister(self.down)
        if not self._up:
            return
        self._up = False
        _run("nft", "delete", "table", "ip", self.table, check=False)
        _run("ip", "link", "del", self.name, check=False)
        if self._old_forward is not None:
            FORWARD.write_text(self._old_forward + "\n")
            self._old_forward = None

    def network_file(self, address: str) -> str:
        """systemd-networkd config for the server's end of the veth (host0)."""
        return ("[Match]\nName=host0\n\n[Network]\n"
                f"Address={address}/24\nGateway={self.gateway}\nDNS={self.nameserver}\n"
                "LinkLocalAddressing=no\nIPv6AcceptRA=no\n")

    def __enter__(self) -> BridgeNetwork:
        return self.up()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()
