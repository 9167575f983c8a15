"""The inventory: which servers exist ([servers.NAME]) and which apps run where (apps.X.servers).

`fleet push` reads it on the operator's machine and turns the one operator file into each
server's share: an app server gets only its apps; a front server gets a [front] table with one
upstream per app listing the app servers that run it. The servers never see the inventory.
When the inventory has fronts, an app server's share also sets [server] accept_from to the
fronts' addresses (host names resolved here, on the operator's machine), so its nginx answers
only the fronts (and itself).
"""

from __future__ import annotations

import copy
import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleet.config.checker import Checker
from fleet.config.parse import (
    APP_NAME_RE,
    build_config,
    parse_accept_from,
    parse_document,
    parse_toml,
)
from fleet.config.settings import DOOR_KEYS

ROLES = ("app", "front")
SERVER_KEYS = ["address", "user", "port", "role"]
# An app's keys that move to the fronts when there are any: HTTPS terminates there, and app
# servers behind a front (which only accept the fronts) serve plain HTTP to it.
# So do the door controls (issue 20): behind a front, an app server sees only the front's
# address (allow, rate_limit) and its health checks (maintenance, auth).
AT_FRONT_KEYS = ("tls", "hsts", *DOOR_KEYS)
# A host name, an IPv4 address, a bracket-free IPv6 address, or an ssh_config Host alias.
ADDRESS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:_-]*$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]*[$]?$")
APP_PORT = 80  # app servers' nginx: the front talks to it on the inventory address
EVERYONE = {"0.0.0.0/0", "::/0"}  # [server] accept_from with both: app servers take anyone


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    user: str = "root"
    port: int = 22
    role: str = "app"


@dataclass(frozen=True)
class Inventory:
    servers: tuple[Server, ...]
    placement: tuple[tuple[str, tuple[str, ...]], ...]  # (app, its app servers), sorted
    # (app, servers running its workers, the one server running its jobs), for apps with any
    processes: tuple[tuple[str, tuple[str, ...], str], ...] = ()
    # The fronts' IP addresses (host names resolved on the operator's machine): added to
    # every app server's accept_from. Empty without fronts, or when [server] accept_from
    # already lets everyone in.
    front_sources: tuple[str, ...] = ()

    def server(self, name: str) -> Server:
        return next(s for s in self.servers if s.name == name)

    @property
    def app_servers(self) -> list[Server]:
        return [s for s in self.servers if s.role == "app"]

    @property
    def fronts(self) -> list[Server]:
        return [s for s in self.servers if s.role == "front"]

    def apps_on(self, server: str) -> list[str]:
        return [app for app, names in self.placement if server in names]

    def servers_of(self, app: str) -> tuple[str, ...]:
        return dict(self.placement).get(app, ())

    def runs_workers(self, app: str, server: str) -> bool:
        found = next((p for p in self.processes if p[0] == app), None)
        return found is None or server in found[1]

    def runs_jobs(self, app: str, server: str) -> bool:
        found = next((p for p in self.processes if p[0] == app), None)
        return found is None or found[2] == server


def parse_server_entry(c: Checker, name: str) -> Server:
    if not APP_NAME_RE.fullmatch(name):
        c.fail("", f"invalid server name {name!r}: use lowercase letters, digits and dashes, "
                   "starting with a letter, at most 32 characters")
    c.check_known(SERVER_KEYS)
    address = c.get_str("address", required=True, pattern=ADDRESS_RE,
                        what="a host name, IP address or ssh Host alias")
    role = c.get_str("role", "app")
    if role not in ROLES:
        c.fail("role", f"must be one of {', '.join(ROLES)}, got {role!r}")
    user = c.get_str("user", "root", pattern=USER_RE, what="a user name")
    return Server(name, address, user, c.get_int("port", 22, 1, 65535), role)


def parse_inventory(source: str, data: Mapping[str, Any]) -> Inventory:
    """Validate [servers.NAME] and every app's `servers`; each problem is a ConfigError."""
    top = Checker(source, "", data)
    table = top.sub("servers")
    if not table.table:
        top.fail("servers", "fleet push needs at least one [servers.NAME] table")
    servers = tuple(parse_server_entry(table.sub(str(n)), str(n)) for n in table.table)
    seen: dict[tuple[str, int], str] = {}
    for server in servers:
        where = (server.address, server.port)
        if where in seen:
            table.fail(f"{server.name}.address", f"{server.address}:{server.port} is already "
                                                 f"server {seen[where]!r}")
        seen[where] = server.name
    app_names = [s.name for s in servers if s.role == "app"]
    apps = top.sub("apps")
    placement = []
    processes: list[tuple[str, tuple[str, ...], str]] = []
    for name in sorted(apps.table):
        app = apps.sub(str(name))
        wanted = app.get_str_list("servers", tuple(app_names))
        if not wanted:
            app.fail("servers", "must name at least one app server"
                     if "servers" in app.table else "there are no app servers to run it on")
        for index, server_name in enumerate(wanted):
            match = next((s for s in servers if s.name == server_name), None)
            if match is None:
                app.fail(f"servers[{index}]", f"no server {server_name!r} in [servers]")
            elif match.role != "app":
                app.fail(f"servers[{index}]", f"server {server_name!r} has role "
                                              f"{match.role!r}; apps run on app servers")
        if len(set(wanted)) != len(wanted):
            app.fail("servers", "names the same server twice")
        placement.append((str(name), tuple(wanted)))
        processes.append((str(name), *process_placement(app, tuple(wanted))))
    if any(s.role == "front" for s in servers):
        check_shared_domains(apps, dict(placement))
    everyone = set(parse_accept_from(top.sub("server"))) >= EVERYONE
    sources = () if everyone else front_sources(table, servers)
    return Inventory(servers, tuple(placement), front_sources=sources, processes=tuple(processes))


def process_placement(app: Checker, servers: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
    """Where an app's workers run (`workers_on`, default all its servers) and the one server
    that runs its jobs (`jobs_on`, default its first): a job never runs twice."""
    workers_on = app.get_str_list("workers_on", servers)
    for index, server_name in enumerate(workers_on):
        if server_name not in servers:
            app.fail(f"workers_on[{index}]", f"{server_name!r} is not one of the app's "
                                             f"servers ({', '.join(servers)})")
    jobs_on = app.get_str("jobs_on", servers[0])
    if jobs_on not in servers:
        app.fail("jobs_on", f"{jobs_on!r} is not one of the app's servers "
                            f"({', '.join(servers)})")
    return tuple(workers_on), jobs_on


def check_shared_domains(apps: Checker, placement: dict[str, tuple[str, ...]]) -> None:
    """Apps sharing a domain (under prefixes) reach the front as one site: the front sends the
    domain to one upstream and the app servers route by prefix, so every app on the domain
    must run on the same app servers."""
    owner: dict[str, str] = {}
    for name in sorted(apps.table, key=lambda n: (has_prefix(apps.table[n]), str(n))):
        for domain in apps.table[name].get("domains", []):
            first = owner.setdefault(domain, str(name))
            if set(placement[str(name)]) != set(placement[first]):
                apps.fail(f"{name}.servers", f"shares domain {domain!r} with app {first!r}, "
                                             "which runs on other app servers: behind a front, "
                                             "apps on one domain must run on the same servers")


def has_prefix(raw: Mapping[str, Any]) -> bool:
    return raw.get("prefix", "/") not in ("", "/")


def front_domains(inventory: Inventory, apps: Mapping[str, Any]) -> dict[str, list[str]]:
    """The domains each app answers for on a front: a shared domain goes to one app (the one
    at its root, else the first by name), whose upstream reaches them all."""
    claimed: dict[str, list[str]] = {}
    seen: set[str] = set()
    for name, _ in sorted(inventory.placement, key=lambda p: (has_prefix(apps[p[0]]), p[0])):
        claimed[name] = [d for d in apps[name].get("domains", []) if d not in seen]
        seen.update(claimed[name])
    return claimed


def front_health(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """The app's health table as the front requests it: under the app's prefix."""
    if not has_prefix(raw):
        return copy.deepcopy(raw["health"]) if "health" in raw else None
    health = copy.deepcopy(raw.get("health", {}))
    health["path"] = str(raw["prefix"]).rstrip("/") + str(health.get("path", "/"))
    return health


def resolve(address: str) -> list[str]:
    """The IP addresses `address` stands for: itself when it is one, else every address the
    operator's machine resolves it to. OSError (or UnicodeError) when it does not resolve."""
    try:
        return [str(ipaddress.ip_address(address))]
    except ValueError:
        pass
    infos = socket.getaddrinfo(address, None, proto=socket.IPPROTO_TCP)
    found = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    return [str(a) for a in sorted(found, key=lambda a: (a.version, int(a)))]


def front_sources(table: Checker, servers: tuple[Server, ...]) -> tuple[str, ...]:
    """Where the fronts' requests to app servers come from: each front's inventory address.
    A name that does not resolve is refused here, before any host is touched."""
    result: list[str] = []
    for server in servers:
        if server.role != "front":
            continue
        try:
            addresses = resolve(server.address)
        except (OSError, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            table.fail(f"{server.name}.address",
                       f"cannot restrict app servers to this front: {server.address!r} does "
                       f"not resolve on this machine ({reason}); give its IP address, or "
                       'set [server] accept_from = ["0.0.0.0/0", "::/0"] to opt out')
        result += [a for a in addresses if a not in result]
    return tuple(result)


def load_inventory(source: str, text: str) -> tuple[Inventory, dict[str, Any]]:
    """The inventory and the raw file, all of it validated before any host is touched."""
    data = parse_toml(source, text)
    server, emperor, apps = parse_document(source, data)
    build_config(source, server, emperor, apps)
    return parse_inventory(source, data), data


# --------------------------------------------------------------------------- each host's share


def host_document(inventory: Inventory, data: Mapping[str, Any], server: str
                  ) -> dict[str, Any]:
    """The operator file cut down to what `server` applies: no inventory, only its apps; a
    front gets [front.apps.NAME] instead of apps. With fronts, an app's `tls` and `hsts` go to
    the fronts (HTTPS terminates there) and leave the app servers' shares, and an app server's
    [server] accept_from gets the fronts' addresses added (after the operator's own)."""
    target = inventory.server(server)
    doc: dict[str, Any] = {k: copy.deepcopy(v) for k, v in data.items()
                           if k in ("server", "emperor")}
    apps = data.get("apps", {})
    if target.role == "app":
        mine = inventory.apps_on(server)
        dropped = {"servers", "workers_on", "jobs_on"}
        dropped |= set(AT_FRONT_KEYS) if inventory.fronts else set()
        doc["apps"] = {name: {k: copy.deepcopy(v) for k, v in apps[name].items()
                              if k not in dropped
                              and (k != "workers" or inventory.runs_workers(name, server))
                              and (k != "jobs" or inventory.runs_jobs(name, server))}
                       for name in mine}
        if inventory.front_sources:
            settings = doc.setdefault("server", {})
            own = list(settings.get("accept_from", []))
            settings["accept_from"] = own + [a for a in inventory.front_sources if a not in own]
        return doc
    front: dict[str, Any] = {}
    domains = front_domains(inventory, apps)
    for name, names in inventory.placement:
        raw = apps[name]
        if not domains[name]:  # its domains reach it through another app's front site
            continue
        entry: dict[str, Any] = {
            "domains": domains[name],
            "upstreams": [upstream(inventory.server(n)) for n in names],
        }
        health = front_health(raw)
        if health is not None:
            entry["health"] = health
        for key in AT_FRONT_KEYS:
            if key in raw:
                entry[key] = copy.deepcopy(raw[key])
        front[name] = entry
    doc["front"] = {"apps": front}
    return doc


def upstream(server: Server) -> str:
    address = f"[{server.address}]" if ":" in server.address else server.address
    return f"{address}:{APP_PORT}"
