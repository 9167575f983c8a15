"""Commands that look without changing anything: status, check, logs."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from fleet.cli.common import OPTIONS, JsonOpt, app, configured_app, local_host, require_root
from fleet.cli.output import out, print_json, style
from fleet.config.settings import AppConfig, Config, as_app
from fleet.config.store import desired_state
from fleet.errors import EXIT_FAILED, EXIT_OK, FleetError
from fleet.host.machine import CLEAN_PATH, Host
from fleet.server.certs import certificate_status, served_files
from fleet.server.health import HealthResult, check_app
from fleet.server.logs import app_log_tail, existing, follow_journal, nginx_logs, tail_file
from fleet.server.status import server_status


def stored_config() -> Config:
    require_root()
    return desired_state(local_host(), None, None).config


@app.command()
def status(json_out: JsonOpt = False) -> None:
    """Show each app's live release, workers, health and problem, plus the Emperor and nginx.

    Workers come from each vassal's uWSGI stats socket, throttled vassals from the Emperor's.

    Example: fleet status --json
    """
    config = stored_config()
    data = server_status(local_host(), config)
    if json_out:
        print_json(data)
        return
    table = Table("app", "release", "state", "workers", "requests", "rss", "respawns",
                  "health", "domains", "certificate", "problem")
    for name, row in data["apps"].items():  # type: ignore[union-attr]
        workers = row["workers"]
        table.add_row(name, row["release"] or "-", Text(row["state"], style(row["state"])),
                      f"{workers['busy']}/{workers['total']} busy", str(workers["requests"]),
                      f"{workers['rss'] / 2**20:.0f} MiB", str(workers["respawns"]),
                      Text(row["health"], style(row["health"])), " ".join(row["domains"]),
                      certificate_cell(row.get("certificate")), Text(row["problem"] or ""))
    if config.apps:
        out.print(table)
    elif not config.front:
        out.print("No apps configured (fleet add-app or fleet apply FILE adds some).")
    if config.front:
        front = Table("balanced app", "domains", "in rotation", "out of rotation (fleet drain)")
        for name, row in data["front"].items():  # type: ignore[union-attr]
            front.add_row(name, " ".join(row["domains"]), " ".join(row["in"]),
                          Text(" ".join(row["out"]) or "-", style("drained") if row["out"] else ""))
        out.print(front)
    emperor: dict = data["emperor"]  # type: ignore[assignment]
    throttled = ", ".join(f"{b['id']} ({b['failed_starts']} failed starts)"
                          for b in emperor["blacklist"])
    out.print(Text(f"Emperor: {'active' if emperor['active'] else 'inactive'}, "
                       f"{len(emperor['vassals'])} vassals"
                       + (f", throttled: {throttled}" if throttled else "")
                       + (f" ({emperor['problem']})" if emperor.get("problem") else "")))
    out.print(f"nginx: {'active' if data['nginx']['active'] else 'inactive'}")  # type: ignore[index]


def certificate_cell(cert: dict | None) -> Text:
    if not cert:
        return Text("-")
    if cert["expires"] is None:
        return Text("none", style("failed"))
    return Text(f"{cert['expires'][:10]} ({cert['days_left']} d)",
                style("failed" if cert["problem"] else "passed"))


def check_one(host: Host, app: AppConfig, timeout: float) -> HealthResult:
    """The app's health check (over HTTPS when it serves HTTPS); a certificate that expires
    within 14 days, or is missing, fails it too: renewal is unattended, so check watches it."""
    result = check_app(app, timeout=min(timeout, app.health.timeout),
                       https=served_files(host, app) is not None)
    cert = certificate_status(host, app)
    if cert and cert["problem"]:
        return replace(result, passed=False, detail=f"{result.detail}; {cert['problem']}")
    if cert:
        return replace(result, detail=f"{result.detail}; certificate expires "
                                      f"{cert['expires'][:10]}")
    return result


def run_checks(apps: list[AppConfig], timeout: float) -> dict[str, HealthResult]:
    """Every app's health check at once: a broken app costs its timeout, not everyone's."""
    if not apps:
        return {}
    host = local_host()
    with ThreadPoolExecutor(max_workers=min(8, len(apps))) as pool:
        results = pool.map(lambda a: check_one(host, a, timeout), apps)
        return dict(zip([a.name for a in apps], results, strict=True))


@app.command()
def check(
    json_out: JsonOpt = False,
    timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds each app has to pass (retried until then).")] = 5.0,
) -> None:
    """Run only the apps' health checks; exit 1 if any fails (for cron and monitoring).

    Each check goes through nginx with the app's first domain, as a visitor's request would;
    on a front, each balanced app's check goes through the front to its app servers.

    Example: fleet check --json || mail -s "fleet check failed" ops@example.com
    """
    config = stored_config()
    results = run_checks([*config.apps, *(as_app(front) for front in config.front)], timeout)
    failed = sum(1 for r in results.values() if not r.passed)
    if json_out:
        print_json({"apps": {name: {"health": "passed" if r.passed else "failed",
                                    "detail": r.detail, "status": r.status,
                                    "elapsed": round(r.elapsed, 3)}
                             for name, r in results.items()},
                    "failed": failed})
    else:
        for name, r in results.items():
            if r.passed and OPTIONS.quiet:
                continue
            label = "passed" if r.passed else "failed"
            out.print(Text.assemble((f"{label:<8}", style(label)), f" {name}: {r.detail}"))
        out.print(f"{len(results) - failed} of {len(results)} apps passed their health "
                      "check" if results else "No apps configured.")
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="The app whose log to show.")],
    lines: Annotated[int, typer.Option("--lines", "-n", min=0,
                                       help="How many of the last lines to show.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f",
                                         help="Keep printing new lines until Ctrl-C.")] = False,
    nginx: Annotated[bool, typer.Option("--nginx",
                                        help="The app's nginx access and error logs instead "
                                             "of its uWSGI log.")] = False,
) -> None:
    """Show an app's uWSGI log, or with --nginx its nginx access and error logs.

    The uWSGI lines come from the Emperor's journal, where each vassal tags its own.

    Example: fleet logs blog -n 100 -f
    """
    configured_app(stored_config(), name)
    try:
        if nginx:
            show_nginx_logs(name, lines, follow)
        elif follow:
            for line in follow_journal(name, lines):
                print(line, flush=True)
        elif lines and (text := app_log_tail(local_host(), name, lines)):
            print(text)
    except KeyboardInterrupt:  # Ctrl-C is how -f ends: not an error
        pass
    except BrokenPipeError:  # `fleet logs NAME | head`
        pass


def show_nginx_logs(name: str, lines: int, follow: bool) -> None:
    files = existing(nginx_logs(name))
    if not files:
        access, error = nginx_logs(name)
        raise FleetError(f"no nginx logs for {name} ({access} and {error} do not exist): "
                         "its nginx site predates per-app logs; `fleet apply` rewrites it")
    if follow:
        subprocess.run(["tail", "-n", str(lines), "-F", *files], check=False,
                       env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"})
        return
    for index, path in enumerate(files):
        if len(files) > 1:
            print(("\n" if index else "") + f"==> {path} <==")
        for line in tail_file(path, lines):
            print(line)
