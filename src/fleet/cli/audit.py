"""`fleet history` (the audit log), and the two commands fleet's own units run: `fleet watch`
(fleet-watch.timer) and `fleet notify-deliver` (fleet-notify.service)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from fleet.cli.common import JsonOpt, app, local_host, require_root
from fleet.cli.inspect import check_one, stored_config
from fleet.cli.output import out, print_json, style
from fleet.server.audit import read_entries
from fleet.server.delivery import deliver_until_empty
from fleet.server.watch import WATCH_TIMEOUT, watch


def short(commits: object) -> str:
    """{"shop": {"before": "abc…", "after": "def…"}} -> "shop abc1234 -> def5678"."""
    if not isinstance(commits, dict):
        return ""
    parts = []
    for name, pair in commits.items():
        if not isinstance(pair, dict):
            continue
        before, after = (str(pair.get(k) or "-")[:7] for k in ("before", "after"))
        parts.append(f"{name} {before}" if before == after else f"{name} {before} -> {after}")
    return ", ".join(parts)


@app.command("history")
def history_command(
    name: Annotated[str | None, typer.Argument(help="Only the lines of this app.",
                                               show_default=False)] = None,
    limit: Annotated[int, typer.Option(min=1, help="The newest N lines.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """Show the audit log: who changed what on this server, newest last.

    Each command that changed the server left one line: its time, who ran it (the pushing
    operator, the sudo user, the ssh key's comment, or the login), the command (secrets
    masked), the apps, the result and each app's commit before and after. When the current
    log holds fewer than --limit lines, the rotated ones (audit.log.1, audit.log.2.gz, ...)
    are read too.

    Example: fleet history shop --limit 20
    """
    require_root()
    entries = read_entries(local_host(), name, limit)
    if json_out:
        print_json({"entries": entries})
        return
    table = Table("time", "who", "command", "result", "commits")
    for line in entries:
        result = str(line.get("result", ""))
        command = line.get("command")
        words = command[1:] if isinstance(command, list) else []
        table.add_row(str(line.get("time", "")), str(line.get("who", "")),
                      Text(" ".join(str(w) for w in words)),
                      Text(f"{result} ({line.get('exit')})", style=style(result)),
                      Text(short(line.get("commits"))))
    out.print(table)


@app.command("watch")
def watch_command() -> None:
    """Health-check every app and raise notifications for what changed since the last run
    (run by fleet-watch.timer every minute).

    Example: fleet watch   (what `systemctl start fleet-watch.service` runs)
    """
    config = stored_config()
    host = local_host()
    for kind, name, summary, _ in watch(host, config,
                                        lambda a: check_one(host, a, WATCH_TIMEOUT)):
        out.print(f"{kind} {name or '-'}: {summary}", markup=False, soft_wrap=True)


@app.command("notify-deliver")
def notify_deliver_command() -> None:
    """Deliver the spooled notifications, retrying with backoff until the spool is empty
    (run by fleet-notify.service).

    Example: fleet notify-deliver   (what `systemctl start fleet-notify.service` runs)
    """
    config = stored_config()
    started = time.monotonic()
    deliver_until_empty(local_host(), config.server.notify, config.server.pip.cert)
    out.print(f"spool empty after {time.monotonic() - started:.1f} s", markup=False)
