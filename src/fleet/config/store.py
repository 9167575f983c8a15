"""The desired state kept on the server in /etc/fleet, and merging an operator's file into it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tomli_w import dumps

from fleet.config.checker import Checker
from fleet.config.parse import (
    build_config,
    parse_app_document,
    parse_document,
    parse_emperor,
    parse_front,
    parse_server,
    parse_toml,
)
from fleet.config.schedules import check_schedules
from fleet.config.settings import AppConfig, Config, EmperorConfig, ServerConfig
from fleet.errors import ConfigError
from fleet.host import layout
from fleet.host.actions import Action
from fleet.host.files import plan_absent, plan_dir, plan_file
from fleet.host.layout import AppPaths
from fleet.host.machine import Host


@dataclass
class Desired:
    """Parsed config plus the raw tables it came from, so the store can be written back."""

    config: Config
    server_raw: dict[str, Any] = field(default_factory=dict)
    apps_raw: dict[str, dict[str, Any]] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)  # stored apps the operator's file did not name
    pruned: list[str] = field(default_factory=list)


def read_text(host: Host, path: str) -> str | None:
    data = host.read(path)
    if data is None:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ConfigError(path, "", "is not UTF-8 text") from None


def load_stored(host: Host, replaced: frozenset[str] = frozenset()) -> tuple[
        dict[str, Any], dict[str, dict[str, Any]], ServerConfig | None, EmperorConfig | None,
        dict[str, AppConfig]]:
    """The stored state. Tables in `replaced` ("server", "emperor", "apps.NAME") are about to
    be replaced by the operator's file and are not validated: a stored table that a newer
    fleet refuses (say a `vassal_set` option) can then be repaired with `fleet apply FILE`."""
    server_raw: dict[str, Any] = {}
    server = emperor = None
    text = read_text(host, layout.SERVER_FILE)
    if text is not None:
        server_raw = parse_toml(layout.SERVER_FILE, text)
        top = Checker(layout.SERVER_FILE, "", server_raw)
        top.check_known(["server", "emperor", "front"])
        if "server" not in replaced:
            server = parse_server(top.sub("server"))
        if "emperor" not in replaced:
            emperor = parse_emperor(top.sub("emperor"))
    apps_raw: dict[str, dict[str, Any]] = {}
    apps: dict[str, AppConfig] = {}
    for entry in host.listdir(layout.APPS_DIR):
        if not entry.endswith(".toml"):
            continue
        path = f"{layout.APPS_DIR}/{entry}"
        name = entry[: -len(".toml")]
        raw = parse_toml(path, read_text(host, path) or "")
        apps_raw[name] = raw
        if f"apps.{name}" not in replaced:
            apps[name] = parse_app_document(path, name, raw)
    return server_raw, apps_raw, server, emperor, apps


def desired_state(host: Host, source: str | None, text: str | None, *,
                  prune: bool = False) -> Desired:
    """Merge an operator's file (if any) into the stored state; validate all of it."""
    kept: list[str] = []
    pruned: list[str] = []
    data: dict[str, Any] = {}
    new_server = new_emperor = None
    new_apps: dict[str, AppConfig] = {}
    replaced: set[str] = set()
    if source is not None and text is not None:
        data = parse_toml(source, text)
        new_server, new_emperor, new_apps = parse_document(source, data)
        check_schedules(host, new_apps.values(), source, new_server)
        replaced = {t for t in ("server", "emperor") if t in data}
        replaced |= {f"apps.{name}" for name in new_apps}
    server_raw, apps_raw, server, emperor, apps = load_stored(host, frozenset(replaced))
    if source is not None and text is not None:
        if new_server is not None:
            server, server_raw["server"] = new_server, data["server"]
        if new_emperor is not None:
            emperor, server_raw["emperor"] = new_emperor, data["emperor"]
        for name in sorted(apps):
            if name not in new_apps:
                (pruned if prune else kept).append(name)
        for name in pruned:
            del apps[name], apps_raw[name]
        apps.update(new_apps)
        apps_raw.update({name: data["apps"][name] for name in new_apps})
        if "front" in data:  # a front server's upstreams replace the stored ones
            server_raw["front"] = data["front"]
    front = parse_front(Checker(source or layout.SERVER_FILE, "front",
                                server_raw.get("front", {})))
    config = build_config(source or layout.ETC, server, emperor, apps, front)
    return Desired(config, server_raw, apps_raw, kept, pruned)


def with_app(desired: Desired, name: str, raw: Mapping[str, Any], source: str) -> Desired:
    """Add or replace one app (for `add-app`), validating it against the others."""
    app = parse_app_document(source, name, raw)
    apps = {a.name: a for a in desired.config.apps}
    apps[name] = app
    config = build_config(source, desired.config.server, desired.config.emperor, apps,
                          desired.config.front)
    return Desired(config, desired.server_raw, {**desired.apps_raw, name: dict(raw)})


def without_app(desired: Desired, name: str) -> Desired:
    apps = {a.name: a for a in desired.config.apps if a.name != name}
    config = build_config(layout.ETC, desired.config.server, desired.config.emperor, apps,
                          desired.config.front)
    raw = {k: v for k, v in desired.apps_raw.items() if k != name}
    return Desired(config, desired.server_raw, raw, [], [name])


def plan_store(host: Host, desired: Desired) -> list[Action]:
    """Files under /etc/fleet: root-only, since app env values (secrets) live in them."""
    actions = plan_dir(host, layout.ETC, 0o700) + plan_dir(host, layout.APPS_DIR, 0o700)
    if desired.server_raw:
        backup = (desired.server_raw.get("server") or {}).get("backup") or {}
        actions += plan_file(host, layout.SERVER_FILE, dumps(desired.server_raw).encode(),
                             0o600, why="server settings",
                             secret=bool(backup.get("env")))  # restic's credentials: no diff
    for name, raw in sorted(desired.apps_raw.items()):
        actions += plan_file(host, AppPaths(name).config_file, dumps(raw).encode(), 0o600,
                             secret=True, why="app settings")
    for name in desired.pruned:
        actions += plan_absent(host, AppPaths(name).config_file, "app pruned")
    return actions
