"""nginx files of one app. An app that holds the server block of its domains has its own site
file (sites-enabled/fleet-NAME.conf); an app under a prefix of a domain another app holds
(several apps on one domain) has only a locations file, which that server block includes.
Either way one file per app: it is tested and reverted alone, so a bad one blames its app."""

from __future__ import annotations

from fleet.config.routes import group_key, holder
from fleet.config.settings import AppConfig, Config
from fleet.host import layout
from fleet.host.actions import Action, Remove
from fleet.host.files import plan_dir
from fleet.host.layout import AppPaths
from fleet.host.machine import Host


def holder_of(config: Config, app: AppConfig) -> AppConfig:
    return holder(config.apps, app) if config.app(app.name) is not None else app


def locations_dir(app: AppConfig) -> str:
    """Where the locations of the apps on `app`'s domains live (one directory per server)."""
    return f"{layout.NGINX_LOCATIONS}/{group_key(app)}"


def site_file(config: Config, app: AppConfig) -> str:
    if holder_of(config, app).name == app.name:
        return AppPaths(app.name).nginx_site
    return f"{locations_dir(app)}/{app.name}.conf"


def static_locations(app: AppConfig, root: str) -> list[tuple[str, str]]:
    """nginx serves static directories itself, under the app's prefix."""
    return [(app.url(url.rstrip("/")) + "/", f"{root}/{directory}/")
            for url, directory in app.static]


def plan_site_dirs(host: Host, config: Config, app: AppConfig) -> list[Action]:
    """The locations directory a guest app writes into (created before its file)."""
    if site_file(config, app) == AppPaths(app.name).nginx_site:
        return []
    return (plan_dir(host, layout.NGINX_FLEET_DIR, 0o755)
            + plan_dir(host, layout.NGINX_LOCATIONS, 0o755)
            + plan_dir(host, locations_dir(app), 0o755))


def moved_files(host: Host, config: Config, app: AppConfig) -> list[Action]:
    """nginx files the app had in another role (own server block, or locations under another
    domain): removed in the same tested change that writes its new file."""
    keep = site_file(config, app)
    candidates = [AppPaths(app.name).nginx_site] + [
        f"{layout.NGINX_LOCATIONS}/{d}/{app.name}.conf"
        for d in host.listdir(layout.NGINX_LOCATIONS)]
    return [Remove(path=path, why="the app's routing moved") for path in candidates
            if path != keep and host.state(path) is not None]


def stale_locations(host: Host, config: Config) -> list[Action]:
    """Locations files of apps no longer configured or no longer under that domain."""
    wanted = {site_file(config, a) for a in config.apps}
    actions: list[Action] = []
    for directory in host.listdir(layout.NGINX_LOCATIONS):
        for entry in host.listdir(f"{layout.NGINX_LOCATIONS}/{directory}"):
            path = f"{layout.NGINX_LOCATIONS}/{directory}/{entry}"
            if entry.endswith(".conf") and path not in wanted:
                actions.append(Remove(path=path, why="app no longer served there"))
    return actions
