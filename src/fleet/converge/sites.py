"""nginx files of one app. An app that holds the server block of its domains has its own site
file (sites-enabled/fleet-NAME.conf); an app under a prefix of a domain another app holds
(several apps on one domain) has only a locations file, which that server block includes.
Either way one file per app: it is tested and reverted alone, so a bad one blames its app."""

from __future__ import annotations

import ipaddress

from fleet.config.htpasswd import load_users, users_text
from fleet.config.routes import group_key, holder
from fleet.config.settings import AppConfig, Config, FrontApp, ServerConfig
from fleet.host import layout
from fleet.host.actions import Action, Remove
from fleet.host.files import plan_absent, plan_dir, plan_file
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


# --------------------------------------------------------------------------- door controls


def auth_file(app: AppConfig) -> str:
    """nginx's copy of the app's htpasswd file (root:www-data 0640; the stored one is 0600)."""
    return f"{layout.NGINX_AUTH_DIR}/{app.name}.htpasswd"


def zone(app: AppConfig | FrontApp) -> str:
    return "fleet_" + app.name.replace("-", "_")


def retry_after(rate: str) -> int:
    """Seconds until the rate lets one more request through: "10r/s" 1, "2r/m" 30."""
    count, unit = rate[:-len("r/s")], rate[-1]
    return 1 if unit == "s" else -(-60 // int(count))


def page_text(text: str) -> str:
    """The maintenance message inside nginx's double-quoted `return` text and HTML: every
    character but letters, digits, space and . , : ! ? - _ ( ) becomes an HTML entity, so
    no quote, backslash, '$' (an nginx variable), '<' or '&' arrives as itself."""
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in " .,:!?-_()") else f"&#{ord(ch)};"
                   for ch in text)


def allowed(app: AppConfig, server: ServerConfig) -> list[str] | None:
    """The app's allow-list as nginx rules: within accept_from when that is set (location
    rules replace the server block's), and always loopback (fleet's health checks). None
    when the app restricts nothing."""
    if not app.allow:
        return None
    wanted = [ipaddress.ip_network(a) for a in app.allow]
    if server.accept_from:
        outer = [ipaddress.ip_network(a) for a in server.accept_from]
        inside = []
        for a in wanted:
            for b in outer:
                if a.version != b.version:
                    continue
                if a.subnet_of(b):  # type: ignore[arg-type]
                    inside.append(a)
                elif b.subnet_of(a):  # type: ignore[arg-type]
                    inside.append(b)
        wanted = inside
    rules = [str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n)
             for n in wanted]
    return list(dict.fromkeys([r for r in rules if r not in layout.LOOPBACK]
                              + list(layout.LOOPBACK)))


def door(config: Config, app: AppConfig, tls: dict | None) -> dict:
    """What the door templates need for one app (nginx-door.conf.j2, nginx-maintenance)."""
    headers: list[tuple[str, str]] = []
    if app.headers or app.rate_limit:
        # add_header in a location drops the server block's: repeat fleet's own first.
        headers.append(("X-Fleet-Site", "$fleet_probe_reply"))
        if tls and tls.get("hsts"):
            headers.append(("Strict-Transport-Security", f"max-age={tls['hsts']}"))
        headers += list(app.headers)
        if app.rate_limit:
            headers.append(("Retry-After", f"$fleet_retry_after_{zone(app)[len('fleet_'):]}"))
    return {
        "body_size": app.client_max_body_size,
        "allow": allowed(app, config.server),
        "zone": zone(app) if app.rate_limit else None,
        "auth_file": auth_file(app) if app.auth else None,
        "maintenance": f"fleet_maintenance_{app.name}",
        "message": page_text(app.maintenance_message),
        "headers": headers,
    }


def plan_auth(host: Host, app: AppConfig) -> list[Action]:
    """nginx's copy of the app's users, readable by nginx's group only; gone without auth."""
    if app.auth is None:
        return plan_absent(host, auth_file(app), "auth is off")
    return (plan_dir(host, layout.NGINX_FLEET_DIR, 0o755)
            + plan_dir(host, layout.NGINX_AUTH_DIR, 0o750, "root", layout.NGINX_USER)
            + plan_file(host, auth_file(app), users_text(load_users(host, app)), 0o640,
                        "root", layout.NGINX_USER, secret=True, why="basic auth users"))


def stale_auth(host: Host, config: Config) -> list[Action]:
    names = {a.name for a in config.apps} | {f.name for f in config.front}
    return [Remove(path=f"{layout.NGINX_AUTH_DIR}/{entry}", why="app no longer configured")
            for entry in host.listdir(layout.NGINX_AUTH_DIR)
            if entry.endswith(".htpasswd") and entry[: -len(".htpasswd")] not in names]
