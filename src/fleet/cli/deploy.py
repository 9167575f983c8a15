"""Commands for one app's releases: deploy, rollback, releases."""

from __future__ import annotations

import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fleet.cli.common import JsonOpt, app, err, local_host, require_root, run_converge
from fleet.cli.report import print_json
from fleet.config.store import Desired, desired_state, with_app
from fleet.converge.deploy import live_release_of
from fleet.errors import ConfigError, FleetError
from fleet.host import layout
from fleet.host.layout import AppPaths
from fleet.host.lock import run_lock
from fleet.server.history import History

AppName = Annotated[str, typer.Argument(help="The app's name.", show_default=False)]


def stored_app(desired: Desired, name: str) -> None:
    if desired.config.app(name) is None:
        known = ", ".join(a.name for a in desired.config.apps) or "none"
        raise ConfigError(layout.APPS_DIR, name, f"no such app (configured: {known})")


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
    with run_lock(layout.LOCK_FILE, wait=600, on_wait=lambda m: err.print(m)):
        desired = desired_state(host, None, None)
        stored_app(desired, name)
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
    with run_lock(layout.LOCK_FILE, wait=600, on_wait=lambda m: err.print(m)):
        desired = desired_state(host, None, None)
        stored_app(desired, name)
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


def when(stamp: float | None) -> str:
    if not stamp:
        return "-"
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S")


@app.command()
def releases(name: AppName, json_out: JsonOpt = False) -> None:
    """List an app's kept releases: commit, build and deploy times, which is live, which failed.

    Example: fleet releases shop --json
    """
    require_root()
    host = local_host()
    desired = desired_state(host, None, None)
    stored_app(desired, name)
    history = History.load(host, name)
    live = live_release_of(host, name)
    on_disk = {r for r in host.listdir(AppPaths(name).releases) if not r.startswith(".")}
    rows = []
    for record in sorted(history.releases.values(), key=lambda r: (r.deployed or r.built)):
        rows.append({"release": record.id, "commit": record.commit, "built": record.built,
                     "deployed": record.deployed, "live": record.id == live,
                     "failed": record.failed, "kept": record.id in on_disk,
                     "pinned": bool(history.pin and history.pin.get("commit") == record.commit)})
    if json_out:
        print_json({"app": name, "live": live, "releases": rows})
        return
    table = Table("release", "commit", "built (UTC)", "deployed (UTC)", "state")
    for row in rows:
        state = ("live" + (", pinned" if row["pinned"] else "")) if row["live"] else (
            f"failed: {row['failed']}" if row["failed"] else "kept" if row["kept"] else "pruned")
        table.add_row(str(row["release"]), str(row["commit"])[:12], when(row["built"]),  # type: ignore[arg-type]
                      when(row["deployed"]), state)  # type: ignore[arg-type]
    Console(highlight=False).print(table)
