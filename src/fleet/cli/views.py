"""The read-only commands' results shown to a person: one text rendering per result type.

`fleet status`, `fleet releases` and `fleet check` each build one result value (ServerStatus,
ReleaseListing, CheckReport) and hand it to show(): --json prints the result's own to_json(),
otherwise render_text() lays it out for rich. Computing and rendering stay apart, so the text
and the JSON cannot drift from the data (as pipx's list_text / list_json do).
"""

from __future__ import annotations

import datetime
from functools import singledispatch
from typing import Any, Protocol

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from fleet.cli.output import out, print_json, style
from fleet.server.health import CheckReport
from fleet.server.history import ReleaseListing
from fleet.server.status import ServerStatus


class Result(Protocol):
    def to_json(self) -> dict[str, object]: ...


def show(result: Result, json_out: bool, *, quiet: bool = False) -> None:
    """The result on stdout: one JSON document with --json, else its text rendering."""
    if json_out:
        print_json(result.to_json())
        return
    for part in render_text(result, quiet=quiet):
        out.print(part)


@singledispatch
def render_text(result: Any, *, quiet: bool = False) -> list[RenderableType]:
    """What a person sees of a result, in print order; --quiet leaves out what passed."""
    raise TypeError(f"no text rendering for {type(result).__name__}")


# ----------------------------------------------------------------------------- status


@render_text.register
def _(result: ServerStatus, *, quiet: bool = False) -> list[RenderableType]:
    parts: list[RenderableType] = []
    if result.apps:
        parts.append(apps_table(result))
    elif not result.front:
        parts.append("No apps configured (fleet add-app or fleet apply FILE adds some).")
    if any(a.background.workers or a.background.jobs for a in result.apps):
        parts.append(background_table(result))
    if any(row.get("limit") is not None for a in result.apps
           for name, row in a.limits.rows.items() if name != "timeout"):
        parts.append(limits_table(result))
    if any(a.backup is not None for a in result.apps):
        parts.append(backups_table(result))
    if result.front:
        front = Table("balanced app", "domains", "in rotation", "out of rotation (fleet drain)")
        for name, row in result.front.items():
            drained: list[str] = row["out"]  # type: ignore[assignment]
            front.add_row(name, " ".join(row["domains"]), " ".join(row["in"]),  # type: ignore[call-overload]
                          Text(" ".join(drained) or "-", style("drained") if drained else ""))
        parts.append(front)
    emperor = result.emperor
    throttled = ", ".join(f"{b['id']} ({b['failed_starts']} failed starts)"
                          for b in emperor.blacklist)
    parts.append(Text(f"Emperor: {'active' if emperor.active else 'inactive'}, "
                      f"{len(emperor.vassals)} vassals"
                      + (f", throttled: {throttled}" if throttled else "")
                      + (f" ({emperor.problem})" if emperor.problem else "")))
    parts.append(f"nginx: {'active' if result.nginx_active else 'inactive'}")
    return parts


def apps_table(result: ServerStatus) -> Table:
    table = Table("app", "release", "state", "workers", "requests", "rss", "respawns",
                  "health", "domains", "certificate", "problem")
    for app in result.apps:
        workers = app.worker_totals()
        table.add_row(app.name, app.release or "-", Text(app.state, style(app.state)),
                      f"{workers['busy']}/{workers['total']} busy", str(workers["requests"]),
                      f"{workers['rss'] / 2**20:.0f} MiB", str(workers["respawns"]),
                      Text(app.health, style(app.health)), " ".join(app.domains),
                      certificate_cell(app.certificate), Text(app.problem or ""))
    return table


def background_table(result: ServerStatus) -> Table:
    """Each app's workers (processes running, restarts) and jobs (last and next run)."""
    table = Table("app", "worker / job", "release", "state", "processes", "restarts",
                  "last run (UTC)", "result", "next run (UTC)")
    for app in result.apps:
        for w in app.background.workers:
            table.add_row(app.name, f"worker {w.name}", w.release or "-",
                          Text(w.state, style(w.state)), f"{w.running}/{w.processes}",
                          str(w.restarts), "", "", "")
        for j in app.background.jobs:
            result_text = (j.last_result or "-") + (f" ({j.skipped} skipped)" if j.skipped
                                                    else "")
            table.add_row(app.name, f"job {j.name} ({j.schedule})", j.release or "-",
                          Text(j.state, style(j.state)), "", "", when(j.last_run),
                          Text(result_text, style("passed" if j.last_result == "success"
                                                  else "failed" if j.last_result else "")),
                          when(j.next_run))
    return table


def backups_table(result: ServerStatus) -> Table:
    """Each app's last backup attempt: when, its result, the snapshot, and any problem."""
    table = Table("app", "last backup", "result", "snapshot", "last success", "problem",
                  box=None)
    for app in result.apps:
        b = app.backup
        if b is None:
            continue
        problem = b["problem"] or (b["error"] if b["last_result"] == "failed" else None)
        table.add_row(app.name, when(b["last_attempt"]), b["last_result"] or "never",
                      b["snapshot"] or "-", when(b["last_success"]),
                      Text(problem or "-", style("failed") if problem else ""))
    return table


def usage_cell(row: dict[str, Any], unit: str = "", scale: float = 1) -> Text:
    """`used / limit`, red when the server does not enforce the limit."""
    used = row.get("used")
    limit = row.get("limit")
    text = f"{used / scale:.0f}{unit}" if isinstance(used, (int, float)) else "-"
    if limit is None:
        return Text(text)
    enforced = "not enforced" not in str(row.get("mechanism"))
    return Text(f"{text} / {limit / scale:.0f}{unit}" + ("" if enforced else " (not enforced)"),
                style("" if enforced else "failed"))


def limits_table(result: ServerStatus) -> Table:
    """Apps with limits: what they use against them, and the limit events since the deploy
    (`fleet status --json` has each limit's mechanism on this server)."""
    table = Table("app", "memory MiB", "cpu %", "tasks", "timeout", "timeouts", "recycles",
                  "OOM kills")
    for app in result.apps:
        rows, events = app.limits.rows, app.limits.events
        if not rows:
            continue
        table.add_row(app.name, usage_cell(rows["memory"], scale=2**20),
                      usage_cell(rows["cpu"]), usage_cell(rows["tasks"]),
                      f"{rows['timeout']['limit']} s", str(events.get("timeouts", "-")),
                      str(events.get("recycles", "-")),
                      "-" if events.get("oom_kills") is None else str(events["oom_kills"]))
    return table


def certificate_cell(cert: dict[str, Any] | None) -> Text:
    if not cert:
        return Text("-")
    if cert["expires"] is None:
        return Text("none", style("failed"))
    return Text(f"{cert['expires'][:10]} ({cert['days_left']} d)",
                style("failed" if cert["problem"] else "passed"))


# ----------------------------------------------------------------------------- releases


def when(stamp: float | None) -> str:
    if not stamp:
        return "-"
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S")


@render_text.register
def _(result: ReleaseListing, *, quiet: bool = False) -> list[RenderableType]:
    table = Table("release", "commit", "built (UTC)", "deployed (UTC)", "state")
    for row in result.releases:
        state = ("live" + (", pinned" if row.pinned else "")) if row.live else (
            f"failed: {row.failed}" if row.failed else "kept" if row.kept else "pruned")
        table.add_row(row.release, row.commit[:12], when(row.built), when(row.deployed), state)
    return [table]


# ----------------------------------------------------------------------------- check


@render_text.register
def _(result: CheckReport, *, quiet: bool = False) -> list[RenderableType]:
    parts: list[RenderableType] = []
    for name, r in result.results.items():
        if r.passed and quiet:
            continue
        label = "passed" if r.passed else "failed"
        parts.append(Text.assemble((f"{label:<8}", style(label)), f" {name}: {r.detail}"))
    total = len(result.results)
    parts.append(f"{total - result.failed} of {total} apps passed their health check"
                 if result.results else "No apps configured.")
    return parts
