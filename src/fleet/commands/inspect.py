"""Commands that look without changing anything: status."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from fleet.commands.common import JsonOpt, app, local_host
from fleet.report import print_json
from fleet.status import server_status
from fleet.store import desired_state


@app.command()
def status(json_out: JsonOpt = False) -> None:
    """Show each app's live commit, workers (from uWSGI's stats) and health, plus the Emperor
    and nginx.

    Example: fleet status --json
    """
    host = local_host()
    desired = desired_state(host, None, None)
    data = server_status(host, desired.config)
    if json_out:
        print_json(data)
        return
    table = Table("app", "commit", "state", "workers", "requests", "health", "domains",
                  "problem")
    for name, row in data["apps"].items():  # type: ignore[union-attr]
        workers = row["workers"]
        table.add_row(name, row["commit"] or "-", row["state"],
                      f"{workers['busy']}/{workers['total']} busy", str(workers["requests"]),
                      row["health"], " ".join(row["domains"]), row["problem"] or "")
    console = Console(highlight=False)
    console.print(table)
    emperor = data["emperor"]
    console.print(f"Emperor: {'active' if emperor['active'] else 'inactive'}, "  # type: ignore[index]
                  f"{len(emperor.get('vassals', []))} vassals")  # type: ignore[union-attr]
    console.print(f"nginx: {'active' if data['nginx']['active'] else 'inactive'}")  # type: ignore[index]


