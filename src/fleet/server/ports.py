"""Before anything changes: is the TCP address an app's vassal should bind already taken on
this server by something other than that app? Read from /proc/net/tcp{,6} (a minimal Debian
has no ss), so a port conflict is one clear error instead of a crash-looping vassal."""

from __future__ import annotations

import socket
import struct

from fleet.config.routes import addresses_overlap
from fleet.config.settings import Config
from fleet.errors import ConfigError
from fleet.host import layout
from fleet.host.layout import AppPaths
from fleet.host.machine import Host
from fleet.server.emperor import ini_value

LISTEN = "0A"


def parse_listeners(text: str, ipv6: bool = False) -> set[str]:
    """HOST:PORT of every listening socket in /proc/net/tcp (or tcp6: IPv6 wildcards and
    IPv4-mapped addresses, the ones an IPv4 bind can collide with)."""
    found = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != LISTEN:
            continue
        address, _, port_hex = fields[1].partition(":")
        port = int(port_hex, 16)
        if not ipv6:
            found.add(f"{socket.inet_ntoa(struct.pack('<I', int(address, 16)))}:{port}")
            continue
        words = struct.pack("<4I", *(int(address[i:i + 8], 16) for i in range(0, 32, 8)))
        if words == bytes(16):
            found.add(f"0.0.0.0:{port}")
        elif words[:12] == b"\0" * 10 + b"\xff\xff":
            found.add(f"{socket.inet_ntoa(words[12:])}:{port}")
    return found


def listeners(host: Host) -> set[str]:
    found = set()
    for path, ipv6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        data = host.read(path)
        if data is not None:
            found |= parse_listeners(data.decode(errors="replace"), ipv6)
    return found


def own_addresses(host: Host, name: str) -> set[str]:
    """Addresses the app's own vassals bind (a running release, about to be replaced)."""
    found = set()
    for entry in host.listdir(layout.VASSALS_DIR):
        owner = layout.vassal_app(entry)
        if owner and owner[0] == name:
            text = (host.read(f"{layout.VASSALS_DIR}/{entry}") or b"").decode(errors="replace")
            found.add(ini_value(text, "socket") or "")
    return found


def check_ports(host: Host, config: Config) -> None:
    """Refuse (exit 2, nothing touched) a TCP address something else on the server holds."""
    apps = [a for a in config.apps if a.tcp_address]
    if not apps:
        return
    bound = listeners(host)
    for app in apps:
        address = app.tcp_address or ""
        own = own_addresses(host, app.name)
        taken = sorted(b for b in bound if addresses_overlap(address, b) and b not in own)
        if taken:
            raise ConfigError(AppPaths(app.name).config_file, "socket",
                              f"tcp:{address} is already in use on this server "
                              f"(something listens on {', '.join(taken)})")
