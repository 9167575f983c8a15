"""`fleet drain` / `fleet undrain`, on a front: take an app server out of rotation and back.

`fleet push` runs them around each app server's deploy; an operator runs them by hand for
maintenance (a kernel update, a disk swap) on an app server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from fleet.cli.common import JsonOpt, app, local_host, locked_state, require_root
from fleet.cli.converging import reporter
from fleet.cli.output import out, print_json
from fleet.cluster.inventory import ADDRESS_RE, Server, upstream
from fleet.config.parse import UPSTREAM_RE
from fleet.config.settings import FrontApp
from fleet.converge.front import rotate
from fleet.errors import EXIT_FAILED, EXIT_OK, ConfigError
from fleet.host.session import Session
from fleet.server.rotation import Change, Drained, check_upstream, describe, drain, undrain

ServerArg = Annotated[str, typer.Argument(
    help="The app server as the front lists it: ADDRESS or ADDRESS:PORT (port 80 if left "
         "out), e.g. 10.0.0.11.")]
AppsOpt = Annotated[list[str] | None, typer.Option(
    "--app", help="Only this app (repeatable; default: every app the server runs).")]


def as_upstream(server: str) -> str:
    """The server as the front's upstreams name it: ADDRESS:PORT, port 80 when left out."""
    with_port = UPSTREAM_RE.fullmatch(server) and (server.count(":") == 1 or server.startswith("["))
    if not with_port:
        if not ADDRESS_RE.fullmatch(server):
            raise ConfigError("SERVER", "", f"{server!r} is not ADDRESS or ADDRESS:PORT")
        server = upstream(Server("-", server))
    if not 1 <= int(server.rsplit(":", 1)[1]) <= 65535:
        raise ConfigError("SERVER", "", f"{server!r}: the port must be between 1 and 65535")
    return server


def run_rotation(verb: str, server: str, apps: list[str], json_out: bool,
                 update: Callable[[tuple[FrontApp, ...], Drained, str], list[Change]]) -> int:
    require_root()
    target = as_upstream(server)
    host = local_host()
    with locked_state(host) as desired:
        config = desired.config
        session = Session(host, reporter(json_out))
        changes = [] if not config.front else rotate(  # not a front: nothing to touch
            config, session, lambda drained: update(config.front, drained, target))
    failed = session.counts()["failed"] > 0 or (verb == "undrain"
                                                and any(c.state == "kept" for c in changes))
    if json_out:
        print_json({"server": target, "apps": describe(changes), **session.counts()})
    else:
        for change in changes:
            out.print(f"{change.app}: {target} {change.state}"
                      + (f" ({change.detail})" if change.detail else ""))
        if not changes:
            out.print(f"{target} is not a server of any app balanced here"
                      if config.front else "this server is not a front: nothing to do")
    return EXIT_FAILED if failed else EXIT_OK


@app.command("drain")
def drain_command(server: ServerArg, apps: AppsOpt = None, json_out: JsonOpt = False) -> None:
    """On a front: stop sending new requests to an app server (it stays listed, marked down).

    Returns once no nginx worker can still send it a request; never drains an app's last server.

    Example: fleet drain 10.0.0.11 --app blog
    """
    raise typer.Exit(run_rotation("drain", server, list(apps or []), json_out,
                                  lambda front, drained, target: drain(
                                      front, drained, target, list(apps or []))))


@app.command("undrain")
def undrain_command(
    server: ServerArg,
    apps: AppsOpt = None,
    check: Annotated[bool, typer.Option(
        help="First GET each app's health path from that server, as the front would; an app "
             "that fails stays out of rotation (exit 1).")] = True,
    json_out: JsonOpt = False,
) -> None:
    """On a front: put an app server back into rotation once it passes the health check.

    Example: fleet undrain 10.0.0.11
    """
    raise typer.Exit(run_rotation("undrain", server, list(apps or []), json_out,
                                  lambda front, drained, target: undrain(
                                      front, drained, target, list(apps or []),
                                      check_upstream if check else None)))
