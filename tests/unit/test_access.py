"""[server] accept_from: nginx's allow/deny in every app's server blocks, only when it is set."""

from __future__ import annotations

import re

import pytest

from fleet.config.settings import AppConfig, Config, EmperorConfig, ServerConfig, TlsConfig
from fleet.converge.apply import render_access
from fleet.converge.prepare import render_site
from fleet.host import layout
from fleet.host.session import Status
from tests.unit import support as tc

pytestmark = pytest.mark.usefixtures("healthy")  # no real health checks, gates or waits


RESTRICTED = '[server]\naccept_from = ["10.0.0.10", "fd00::/64"]\n'
TLS = {"cert": "/etc/ssl/a.pem", "key": "/etc/ssl/a.key", "hsts": 0, "http2_on": True}


def effective(site: bytes, access: bytes) -> str:
    """The site as nginx reads it: the access file in place of its include."""
    include = f"include {layout.NGINX_ACCESS};"
    assert include in site.decode()
    return site.decode().replace(include, access.decode())


def rules(text: str) -> list[str]:
    return re.findall(r"^\s*((?:allow|deny) [^;]+;)", text, re.MULTILINE)


def server_blocks(text: str) -> list[str]:
    return re.split(r"^server \{$", text, flags=re.MULTILINE)[1:]


@pytest.mark.parametrize("tls", [None, TLS])
def test_site_denies_all_but_accept_from_and_loopback_only_when_set(tls: dict | None) -> None:
    app = AppConfig(name="alpha", repo="r", domains=("alpha.test",),
                    tls=TlsConfig("files", TLS["cert"], TLS["key"]) if tls else TlsConfig())
    expected = ["allow 10.0.0.10;", "allow fd00::/64;", "allow 127.0.0.1;", "allow ::1;",
                "deny all;"]
    for accept, wanted in (((), []), (("10.0.0.10", "fd00::/64"), expected),
                           (("127.0.0.1", "10.0.0.10", "fd00::/64"), expected)):
        cfg = Config(ServerConfig(accept_from=accept), EmperorConfig(), (app,))
        site = effective(render_site(cfg, app, "aaaaaaaaaaaa", tls), render_access(cfg))
        blocks = server_blocks(site)
        assert len(blocks) == (2 if tls else 1)  # with TLS: the port 80 redirect and 443
        assert all(rules(block) == wanted for block in blocks), site


def test_converge_writes_the_access_file_once_and_a_change_touches_only_it() -> None:
    host = tc.server()
    _, outcome = tc.run(host, tc.config(host))
    assert outcome.aborted is None
    access = host.files[layout.NGINX_ACCESS]
    assert access.mode == 0o644 and rules(access.content.decode()) == []
    assert f"include {layout.NGINX_ACCESS};" in host.read(
        "/etc/nginx/sites-enabled/fleet-alpha.conf").decode()

    sites = {p: host.read(p) for p in host.files if p.startswith(layout.NGINX_SITES)}
    host.commands.clear()
    session, outcome = tc.run(host, tc.config(host, RESTRICTED + tc.CONFIG))
    assert outcome.aborted is None
    assert rules(host.read(layout.NGINX_ACCESS).decode()) == [
        "allow 10.0.0.10;", "allow fd00::/64;", "allow 127.0.0.1;", "allow ::1;", "deny all;"]
    assert tc.changed_steps(session) == ["nginx config", "nginx"]
    assert {p: host.read(p) for p in sites} == sites
    assert ["nginx", "-t", "-q"] in host.commands and host.ran("systemctl", "reload", "nginx")

    host.commands.clear()
    again, _ = tc.run(host, tc.config(host, RESTRICTED + tc.CONFIG))
    assert tc.changed_steps(again) == []
    assert not host.ran("systemctl", "reload", "nginx")


def test_access_file_nginx_refuses_is_reverted(healthy: list[str]) -> None:
    host = tc.server()
    tc.run(host, tc.config(host))
    before = host.read(layout.NGINX_ACCESS)
    host.nginx_ok = False
    session, outcome = tc.run(host, tc.config(host, RESTRICTED + tc.CONFIG))
    step = next(s for s in session.steps if s.name == "nginx config")
    assert step.status == Status.FAILED and outcome.aborted
    assert host.read(layout.NGINX_ACCESS) == before
