"""Commands that watch the apps work: `fleet top` (a live view) and `fleet metrics`
(Prometheus' text format, printed or written for node_exporter's textfile collector)."""

from __future__ import annotations

import os
import socket
import time
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fleet.cli.common import app, local_host, require_root
from fleet.cli.output import out, print_json, real_console, style
from fleet.cli.terminal import cbreak
from fleet.config.store import desired_state
from fleet.errors import ConfigError
from fleet.host.lock import run_lock
from fleet.server.metrics import LOCK, TEXTFILE, exposition
from fleet.server.observe import Sample, take_sample

REFRESH = 1.0  # seconds between two samples of the live view


def rate(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def millis(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f}ms" if seconds < 10 else f"{seconds:.0f}s"


def mebibytes(size: int) -> str:
    return f"{size / 2**20:.0f}M" if size else "-"


def share(count: int, total: int) -> str:
    return f"{count / total:.0%}" if total else "-"


def render_sample(sample: Sample, host: str) -> RenderableType:
    """The screen: a header line, then one row per app and one per background worker."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("APP", "STATE", "RELEASE", "REQ/S", "P50", "P99", "4XX", "5XX",
                   "BUSY/IDLE", "MEM", "RESTARTS"):
        table.add_column(column, justify="left" if column in ("APP", "STATE", "RELEASE")
                         else "right", no_wrap=True)
    for row in sample.apps:
        traffic = row.traffic
        table.add_row(row.name, Text(row.state, style=style(row.state)), row.release or "-",
                      rate(traffic.per_second), millis(traffic.p50), millis(traffic.p99),
                      share(traffic.client_errors, traffic.requests),
                      share(traffic.server_errors, traffic.requests),
                      f"{row.busy}/{len(row.workers) - row.busy}", mebibytes(row.memory),
                      str(row.restarts))
    for worker in sample.workers:
        table.add_row(f" {worker.app}:{worker.name}", Text(worker.state,
                                                             style=style(worker.state)),
                      worker.release or "-", "", "", "", "", "",
                      f"{worker.running}/{worker.processes}", mebibytes(worker.memory),
                      str(worker.restarts))
    when = time.strftime("%H:%M:%S", time.localtime(sample.time))
    header = Text(f"fleet top  {host}  {when}  requests of the last {sample.window:.0f} s"
                  "  (q quits)", style="bold")
    return Group(header, table)


@app.command()
def top(
    once: Annotated[bool, typer.Option(
        "--once", help="Print one sample and exit (with --json: for scripts).")] = False,
    json_out: Annotated[bool, typer.Option(
        "--json", help="With --once: print the sample as one JSON object.")] = False,
) -> None:
    """Watch every app live: requests/s, p50 and p99 latency and 4xx/5xx shares over the last
    minute (from nginx's access logs), busy/idle workers, memory and restarts (from uWSGI's
    stats), one row per app and per background worker. Refreshes every second; q quits.

    Example: fleet top --once --json | jq '.apps.blog.per_second'
    """
    require_root()
    if json_out and not once:
        raise ConfigError("fleet top", "--json", "needs --once (one sample for scripts)")
    host = local_host()
    config = desired_state(host, None, None).config
    name = socket.gethostname()
    if once:
        sample = take_sample(host, config)
        if json_out:
            print_json(sample.to_json())
        else:
            out.print(render_sample(sample, name))
        return
    try:
        with cbreak() as keys, Live(render_sample(take_sample(host, config), name),
                                    console=real_console(out), screen=True,
                                    auto_refresh=False) as live:
            while keys.wait(REFRESH) not in ("q", "Q"):
                live.update(render_sample(take_sample(host, config), name), refresh=True)
    except KeyboardInterrupt:  # Ctrl-C quits like q; the terminal is restored on the way
        pass


@app.command()
def metrics(
    textfile: Annotated[str | None, typer.Option(
        "--textfile", metavar="DIR",
        help="Write DIR/fleet.prom (atomically: temp file + rename) instead of printing, "
             "for node_exporter's textfile collector.")] = None,
) -> None:
    """Print every app's Prometheus metrics (text exposition format): requests by status
    class, a latency histogram, workers, memory, restarts, up, last deploy and its result,
    certificate expiry and last backup. The fleet-metrics timer runs this with --textfile.

    Example: fleet metrics | grep fleet_app_requests_total
    """
    require_root()
    if textfile is not None and not os.path.isabs(textfile):
        raise ConfigError("fleet metrics", "--textfile", f"{textfile!r} must be an absolute path")
    host = local_host()
    config = desired_state(host, None, None).config
    with run_lock(LOCK, wait=30):  # two runs at once would count the same lines twice
        text = exposition(host, config)
    if textfile is None:
        out.file.write(text)
        out.file.flush()
        return
    host.write(f"{textfile.rstrip('/')}/{TEXTFILE}", text.encode(), 0o644, "root", "root")
