"""Commands that look without changing anything: status, check, logs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Annotated

import typer

from fleet.cli.common import OPTIONS, JsonOpt, app, configured_app, local_host, require_root
from fleet.cli.views import show
from fleet.config.settings import AppConfig, Config, as_app
from fleet.config.store import desired_state
from fleet.errors import EXIT_FAILED, EXIT_OK, FleetError, UnknownName
from fleet.host.machine import CLEAN_PATH, Host
from fleet.server.background import background_status
from fleet.server.backup_health import backups_of
from fleet.server.certs import certificate_status, served_files
from fleet.server.health import CheckReport, HealthResult, check_app
from fleet.server.logs import (
    existing,
    follow_journal,
    log_tail,
    nginx_logs,
    tail_file,
    unit_patterns,
)
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
    show(server_status(local_host(), stored_config()), json_out)


def check_one(host: Host, app: AppConfig, timeout: float) -> HealthResult:
    """The app's health check (over HTTPS when it serves HTTPS); a certificate that expires
    within 14 days, or is missing, fails it too: renewal is unattended, so check watches it."""
    result = check_app(app, timeout=min(timeout, app.health.timeout),
                       https=served_files(host, app) is not None)
    cert = certificate_status(host, app)
    problems = background_status(host, app).problems if app.workers or app.jobs else []
    if problems:  # the web app may pass: the app as a whole does not
        result = replace(result, passed=False, detail="; ".join([result.detail, *problems]))
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


def with_backup_problems(config: Config,
                         results: dict[str, HealthResult]) -> dict[str, HealthResult]:
    """A failed last scheduled backup, or one older than twice the schedule, fails the app."""
    for name, record in backups_of(local_host(), config).items():
        if record and record["problem"] and name in results:
            result = results[name]
            results[name] = replace(result, passed=False,
                                    detail=f"{result.detail}; backup: {record['problem']}")
    return results


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
    report = CheckReport(with_backup_problems(
        config, run_checks([*config.apps, *(as_app(front) for front in config.front)], timeout)))
    show(report, json_out, quiet=OPTIONS.quiet)
    raise typer.Exit(EXIT_FAILED if report.failed else EXIT_OK)


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
    process: Annotated[str | None, typer.Option(
        "--process", help="Only this worker's lines (each prefixed WORKER#N).")] = None,
    job: Annotated[str | None, typer.Option("--job", help="Only this job's runs.")] = None,
) -> None:
    """Show an app's log: its web app (uWSGI), workers and jobs; or with --nginx its nginx
    access and error logs.

    The web lines come from the Emperor's journal, where each vassal tags its own; each
    worker process and job has its own systemd unit (lines prefixed `NAME#N:` and
    `job NAME:`).

    Example: fleet logs blog -n 100 -f; fleet logs shop --process celery
    """
    target = configured_app(stored_config(), name)
    if process is not None and process not in {w.name for w in target.workers}:
        raise UnknownName(f"--process {process}", "worker", name,
                          [w.name for w in target.workers])
    if job is not None and job not in {j.name for j in target.jobs}:
        raise UnknownName(f"--job {job}", "job", name, [j.name for j in target.jobs])
    units = unit_patterns(name, process, job)
    try:
        if nginx:
            show_nginx_logs(name, lines, follow)
        elif follow:
            for line in follow_journal(local_host(), name, lines, units):
                print(line, flush=True)
        else:
            for line in log_tail(local_host(), name, lines, units):
                print(line)
    except KeyboardInterrupt:  # Ctrl-C is how -f ends: not an error
        pass
    except BrokenPipeError:  # `fleet logs NAME | head`
        pass


def show_nginx_logs(name: str, lines: int, follow: bool) -> None:
    host = local_host()
    files = existing(host, nginx_logs(name))
    if not files:
        access, error = nginx_logs(name)
        raise FleetError(f"no nginx logs for {name} ({access} and {error} do not exist): "
                         "its nginx site predates per-app logs; `fleet apply` rewrites it")
    if follow:
        for line in host.follow(["tail", "-n", str(lines), "-F", *files],
                                env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}):
            print(line, end="", flush=True)
        return
    for index, path in enumerate(files):
        if len(files) > 1:
            print(("\n" if index else "") + f"==> {path} <==")
        for line in tail_file(host, path, lines):
            print(line)
