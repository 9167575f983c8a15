"""Where an app is reached: its URL prefix under its domains and the socket its vassal binds.

Checked here, before anything on the server is touched: the keys' shapes (called from
config.parse_app) and the conflicts between apps (called from config.check_across_apps):
the same domain + prefix twice, two nginx locations on one domain that would collide, and
one TCP address for two vassals.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from fleet.config.checker import Checker
from fleet.config.settings import APP_DEFAULTS, AppConfig
from fleet.errors import ConfigError

PREFIX_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._~-]+$")
TCP_RE = re.compile(r"^tcp:([0-9.]+):([0-9]{1,5})$")
# nginx listens on these; a vassal there would fight it for the port.
NGINX_PORTS = (80, 443)


def parse_prefix(c: Checker) -> str:
    """`prefix`: "/" or "/a/b" (a trailing slash is dropped, so "/blog/" == "/blog")."""
    value = c.get_str("prefix", APP_DEFAULTS.prefix)
    segments = value.strip("/").split("/") if value.strip("/") else []
    if not value.startswith("/") or "//" in value or any(
            s in (".", "..") or not PREFIX_SEGMENT_RE.fullmatch(s) for s in segments):
        c.fail("prefix", f"{value!r} must be '/' or a URL path such as '/blog' "
                         "(letters, digits, '.', '_', '~', '-')")
    return "/" + "/".join(segments) if segments else "/"


def parse_socket(c: Checker, on_demand: bool) -> str:
    """`socket`: "unix" (a socket in the app's run dir) or "tcp:IPV4:PORT"."""
    value = c.get_str("socket", APP_DEFAULTS.socket)
    if value == "unix":
        return value
    match = TCP_RE.fullmatch(value)
    if not match:
        c.fail("socket", f"{value!r} must be \"unix\" or \"tcp:HOST:PORT\" with an IPv4 "
                         "address, e.g. \"tcp:127.0.0.1:9001\"")
    try:
        ipaddress.IPv4Address(match.group(1))
    except ValueError:
        c.fail("socket", f"{match.group(1)!r} is not an IPv4 address")
    port = int(match.group(2))
    if not 1 <= port <= 65535:
        c.fail("socket", f"port {port} is not between 1 and 65535")
    if port in NGINX_PORTS:
        c.fail("socket", f"port {port} is nginx's")
    if on_demand:
        c.fail("socket", "on-demand apps use the socket the Emperor binds: use \"unix\"")
    return value


def split_tcp(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def addresses_overlap(a: str, b: str) -> bool:
    """Same port and same address, or one of them binds every address (0.0.0.0)."""
    (host_a, port_a), (host_b, port_b) = split_tcp(a), split_tcp(b)
    return port_a == port_b and (host_a == host_b or "0.0.0.0" in (host_a, host_b))


def locations(app: AppConfig) -> list[str]:
    """The URL paths an app claims on each of its domains: its prefix and its static dirs."""
    return [app.prefix] + [app.url(url.rstrip("/")) for url, _ in app.static]


def group_key(app: AppConfig) -> str:
    """Apps that share a domain share one nginx server block; it is named by this domain."""
    return min(app.domains)


def holder(apps: Sequence[AppConfig], app: AppConfig) -> AppConfig:
    """The app whose site file holds the server block of `app`'s domains: the one at "/",
    else the first by name. The others' locations are included into it."""
    group = [a for a in apps if set(a.domains) == set(app.domains)]
    return min(group, key=lambda a: (a.prefix != "/", a.name))


def check_shared(source: str, apps: Sequence[AppConfig]) -> None:
    """Apps sharing a domain must list the same domains (one server block serves them all),
    and cannot use TLS yet (the server block's certificate belongs to one app)."""
    by_domain: dict[str, AppConfig] = {}
    for app in apps:
        for domain in app.domains:
            other = by_domain.setdefault(domain, app)
            if other is app:
                continue
            if set(other.domains) != set(app.domains):
                raise ConfigError(source, f"apps.{app.name}.domains",
                                  f"shares {domain!r} with app {other.name!r}, so it must list "
                                  f"the same domains ({', '.join(other.domains)})")
            for each in (app, other):
                if each.redirect_from:  # the redirect's server block would be whose?
                    raise ConfigError(source, f"apps.{each.name}.redirect_from",
                                      f"not supported yet for apps sharing {domain!r}")
                if each.tls.mode != "off":
                    raise ConfigError(source, f"apps.{each.name}.tls",
                                      f"TLS is not supported yet for apps sharing {domain!r}")


def check_routes(source: str, apps: Sequence[AppConfig]) -> None:
    claimed: dict[tuple[str, str], str] = {}
    for app in apps:
        for domain in app.domains:
            for index, path in enumerate(locations(app)):
                other = claimed.get((domain, path))
                if other is not None:
                    key = "static" if index else "domains" if path == "/" else "prefix"
                    at = "" if path == "/" else f" at {path}"
                    raise ConfigError(source, f"apps.{app.name}.{key}",
                                      f"{domain!r}{at} is already used by app {other!r}")
                claimed[(domain, path)] = app.name
    bound: list[tuple[str, str]] = []
    for app in apps:
        address = app.tcp_address
        if address is None:
            continue
        for other, other_address in bound:
            if addresses_overlap(address, other_address):
                raise ConfigError(source, f"apps.{app.name}.socket",
                                  f"tcp:{address} overlaps app {other!r}'s tcp:{other_address}")
        bound.append((app.name, address))
    check_shared(source, apps)
