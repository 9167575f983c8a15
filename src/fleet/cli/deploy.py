"""Commands for one app's releases: deploy, rollback, releases."""

from __future__ import annotations

from typing import Annotated

import typer

from fleet.cli.common import (
    JsonOpt,
    app,
    configured_app,
    local_host,
    locked_state,
    require_root,
)
from fleet.cli.converging import run_converge
from fleet.cli.views import show
from fleet.config.store import desired_state, with_app
from fleet.converge.deploy import live_release_of
from fleet.errors import ConfigError, FleetError
from fleet.server.history import History, release_listing

AppName = Annotated[str, typer.Argument(help="The app's name.", show_default=False)]


@app.command()
def deploy(
    name: AppName,
    ref: Annotated[str | None, typer.Option(
        help="Deploy this branch, tag or commit (stored as the app's ref).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Fetch and deploy an app's ref: build, run init, health-gate the new release beside the
    live one, then switch nginx to it. A failing release never takes traffic.

    Example: fleet deploy shop --ref v1.4.2
    """
    require_root()
    host = local_host()
    with locked_state(host) as desired:
        configured_app(desired.config, name)
        if ref is not None:
            raw = dict(desired.apps_raw.get(name, {}))
            raw["ref"] = ref
            desired = with_app(desired, name, raw, f"deploy {name} --ref")
        history = History.load(host, name)
        pre = []
        if history.pin is not None:  # an explicit deploy ends a rollback's pin
            history.pin = None
            pre += history.write_action(host)
        code = run_converge(desired, json_out=json_out, check=False, only={name},
                            pre_actions=pre)
    raise typer.Exit(code)


@app.command()
def rollback(
    name: AppName,
    to: Annotated[str | None, typer.Option(
        "--to", help="Release id or commit (prefix) to return to; default the previous one.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Return an app to its previous (or a given) kept release, through the same health gate.
    The app stays there until its ref changes or `fleet deploy` runs.

    Example: fleet rollback shop
    """
    require_root()
    host = local_host()
    with locked_state(host) as desired:
        configured_app(desired.config, name)
        history = History.load(host, name)
        live = live_release_of(host, name)
        if to is None:
            target = history.previous(live)
            if target is None:
                raise FleetError(f"{name} has no earlier release to roll back to")
        else:
            matches = [r for r in history.releases.values()
                       if r.id.startswith(to) or r.commit.startswith(to)]
            if len({m.commit for m in matches}) == 1:  # a commit and its twin: same code
                matches = matches[:1]
            if len(matches) != 1:
                raise ConfigError("--to", to, "matches no kept release" if not matches
                                  else "matches several releases; give more of it")
            target = matches[0]
        app_config = desired.config.app(name)
        assert app_config is not None
        history.pin = {"commit": target.commit, "ref": app_config.ref}
        code = run_converge(desired, json_out=json_out, check=False, only={name},
                            pre_actions=history.write_action(host),
                            extra={"rollback": {"from": live, "to": target.id}})
    raise typer.Exit(code)


@app.command()
def releases(name: AppName, json_out: JsonOpt = False) -> None:
    """List an app's kept releases: commit, build and deploy times, which is live, which failed.

    Example: fleet releases shop --json
    """
    require_root()
    host = local_host()
    desired = desired_state(host, None, None)
    configured_app(desired.config, name)
    listing = release_listing(host, History.load(host, name), live_release_of(host, name))
    show(listing, json_out)
