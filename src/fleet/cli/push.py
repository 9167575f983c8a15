"""`fleet push`: run on the operator's machine; converge every server in the inventory over ssh."""

from __future__ import annotations

import getpass
import socket
import sys
import zipfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

import fleet
from fleet.cli.common import JsonOpt, app, read_input
from fleet.cli.output import err, out, print_json, style
from fleet.cluster.inventory import load_inventory
from fleet.cluster.push import PARALLEL, Payload, PushResult, push
from fleet.cluster.ssh import OpenSSH
from fleet.errors import EXIT_FAILED, EXIT_OK, ConfigError

SOURCE_ROOT = Path(__file__).resolve().parents[3]


def local_operator() -> str:
    """user@host of whoever runs the push: what each host's audit log records as "who"."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def find_pyz(explicit: Path | None) -> Path:
    """--pyz, else the zipapp running now, else dist/fleet.pyz of a source checkout."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError("--pyz", "", f"{explicit}: no such file")
        return explicit
    running = Path(sys.argv[0])
    if running.is_file() and zipfile.is_zipfile(running):
        return running
    for candidate in (Path("dist/fleet.pyz"), SOURCE_ROOT / "dist" / "fleet.pyz"):
        if candidate.is_file():
            return candidate
    raise ConfigError("--pyz", "", "no fleet.pyz found: build it (python3 build.py) or pass "
                                   "--pyz PATH")


def find_bootstrap() -> bytes:
    """The bootstrap script packaged in the zipapp (or the checkout's copy)."""
    for candidate in (Path(fleet.__file__).parent / "_data" / "bootstrap",
                      SOURCE_ROOT / "bootstrap"):
        try:
            return candidate.read_bytes()
        except OSError:
            continue
    raise ConfigError("bootstrap", "", "cannot find the bootstrap script to copy")


def show_plans(console: Console, result: PushResult) -> None:
    """What each host would change, one line per action (the JSON has it as `changes`)."""
    for host in result.hosts:
        if host.status == "skipped":
            continue
        console.print(Text(f"{host.name} ({host.address}): "
                           + (f"{len(host.changes)} change(s)" if host.changes
                              else "nothing would change"), style="bold"))
        for line in host.changes:
            console.print(Text(f"  {line}"), soft_wrap=True)


def recap(console: Console, result: PushResult) -> None:
    table = Table("host", "role", "address", "result", "ok", "changed", "failed",
                  "apps healthy", "note")
    for host in result.hosts:
        table.add_row(host.name, host.role, host.address,
                      Text(host.status, style=style(host.status)),
                      str(host.counts["ok"]), str(host.counts["changed"]),
                      str(host.counts["failed"]), host.healthy, Text(host.error or ""))
    console.print(table)
    if result.waves:
        console.print(Text("waves: " + ", ".join(
            f"{w.name} {len(w.hosts)} host{'' if len(w.hosts) == 1 else 's'} in "
            f"{w.seconds:.1f} s" for w in result.waves)
            + f"; {sum(w.seconds for w in result.waves):.1f} s in all"), soft_wrap=True)
    if result.stopped:
        console.print(Text.assemble(("stopped: ", style("failed")), result.stopped))


@app.command("push")
def push_command(
    file: Annotated[Path, typer.Argument(help="Operator file: the inventory (servers.NAME "
                                              "tables) and the apps.",
                                         show_default=True)] = Path("fleet.toml"),
    limit: Annotated[list[str] | None, typer.Option(
        "--limit", help="Push only to this server (repeatable).")] = None,
    batch: Annotated[int, typer.Option(
        min=1, help="App servers changing (out of rotation) at once after the canary.")] = 1,
    parallel: Annotated[int, typer.Option(
        min=1, help="Hosts handled at once: checked, applied when nothing changes, and "
                    "within a batch.")] = PARALLEL,
    max_failures: Annotated[int, typer.Option(
        min=0, help="Stop starting hosts once more than this many failed.")] = 0,
    plan: Annotated[bool, typer.Option("--plan", help="Show each host's plan, change "
                                                      "nothing fleet manages.")] = False,
    prune: Annotated[bool, typer.Option(help="Remove apps a host no longer runs.")] = False,
    drain: Annotated[bool, typer.Option(
        help="Take each changing app server out of the fronts' rotation while it deploys "
             "(--no-drain: when a front cannot be reached).")] = True,
    pyz: Annotated[Path | None, typer.Option(help="The zipapp to copy (default: the running "
                                                  "one, or dist/fleet.pyz).")] = None,
    ssh_config: Annotated[str | None, typer.Option(
        envvar="FLEET_SSH_CONFIG", help="ssh -F FILE (default: your own ssh config).")] = None,
    operator: Annotated[str | None, typer.Option(
        help="Who pushes, as each host's audit log records it (default: your user@host).",
        show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Converge every server of the inventory over ssh: canary first, then batches, fronts last.

    Changing app servers deploy --batch at a time, out of the fronts' rotation meanwhile.

    Hosts are checked (and applied when nothing changes) --parallel at a time.

    Example: fleet push fleet.toml --batch 2 --parallel 20
    """
    source = str(file)
    if operator is not None and (not operator.strip() or not operator.isprintable()):
        raise ConfigError("--operator", "", "must be printable text on one line")
    inventory, data = load_inventory(source, read_input(file))
    names = {s.name for s in inventory.servers}
    for index, name in enumerate(limit or []):
        if name not in names:
            raise ConfigError("--limit", f"[{index}]", f"no server {name!r} in {source}")
    payload = Payload(find_pyz(pyz).read_bytes(), find_bootstrap(),
                      operator or local_operator())
    transport = OpenSSH(ssh_config)
    progress = (lambda _: None) if json_out else (lambda line: err.print(line, markup=False))
    try:
        result = push(inventory, data, transport, payload, limit=list(limit or []),
                      batch=batch, max_failures=max_failures, plan=plan, prune=prune,
                      drain=drain, parallel=parallel, progress=progress)
    finally:
        transport.close()
    if json_out:
        print_json(result.to_json())
    else:
        if plan:
            show_plans(out, result)
        recap(out, result)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)
