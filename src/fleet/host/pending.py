"""What a killed run still owed: systemd's daemon-reload, or a reload or restart of a unit.

fleet changes a file, then acts so that it takes effect: `systemctl daemon-reload` after a unit
file, a restart of the Emperor after emperor.ini, of a worker after its unit, of a timer after
its schedule, nginx's reload after a site. A run killed between the two leaves the file right
and the running service wrong, and the next run, seeing nothing to write, would never act. So
what the actions after a file change will do is written to one mark file on /run before the
file changes, and each is taken out as it is done; each step that decides such an action also
acts when the mark names it. /run is tmpfs: after a boot every service has read its files.

The mark holds one line per owed thing: `daemon-reload`, or a unit's name as fleet's actions
name it (`nginx`, `fleet-emperor.service`, `fleet-shop.worker.mail@1.service`) for "reload or
restart it, as its step does after a change". Session.apply keeps it for every list of
actions (see owed_by and done_by); a step whose files change in one list and whose action
comes in another (nginx's sites, tested one by one, then one reload) owes it itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fleet.host import layout
from fleet.host.actions import Action, MakeDir, Move, Remove, Run, SetAttrs, Symlink, WriteFile
from fleet.host.machine import Host

DAEMON_RELOAD = "daemon-reload"
# The verbs after which a unit has read its files again: they pay what was owed to it. Only
# daemon-reload, restart and reload are owed: a unit that is not running is started by its
# step anyway, and a stop is never the point of a file change.
OWING = ("restart", "reload")
PAYING = (*OWING, "start", "stop", "try-restart", "reload-or-restart")


def owed(host: Host) -> frozenset[str]:
    """Everything the mark names (empty: nothing owed)."""
    data = host.read(layout.PENDING)
    return frozenset(line.strip() for line in (data or b"").decode(errors="replace")
                     .splitlines() if line.strip())


def owes(host: Host, item: str) -> bool:
    return item in owed(host)


def store(host: Host, items: frozenset[str]) -> None:
    if items:
        host.write(layout.PENDING, "".join(f"{i}\n" for i in sorted(items)).encode(), 0o600,
                   "root", "root")
    elif host.state(layout.PENDING) is not None:
        host.remove(layout.PENDING)


def owe(host: Host, items: Iterable[str]) -> None:
    """Before the files change (written only when it adds something)."""
    wanted = frozenset(items)
    if wanted:
        have = owed(host)
        if not wanted <= have:
            store(host, have | wanted)


def pay(host: Host, items: Iterable[str]) -> None:
    """After the action ran (the mark is read only when there is something to pay)."""
    done = frozenset(items)
    if done:
        have = owed(host)
        if have & done:
            store(host, have - done)


def unit_names(argv: Sequence[str]) -> list[str]:
    """The units a systemctl command names; a glob that matches only one name
    (`fleet-a.worker.w@1.servic[e]`, see server.units.loaded_only) names that one."""
    return [a.replace("[", "").replace("]", "") for a in argv[2:] if not a.startswith("-")]


def does(action: Action, verbs: Sequence[str]) -> list[str]:
    """The items a systemctl action with one of these verbs owes or pays (`disable --now`
    stops the unit: one of the PAYING verbs)."""
    if not isinstance(action, Run) or len(action.argv) < 2 or action.argv[0] != "systemctl":
        return []
    verb = action.argv[1]
    if verb == "disable" and "--now" in action.argv:
        verb = "stop"
    if verb == DAEMON_RELOAD:
        return [DAEMON_RELOAD]
    return unit_names(action.argv) if verb in verbs else []


def changes_files(action: Action) -> bool:
    return isinstance(action, (WriteFile, Remove, Symlink, SetAttrs, MakeDir, Move))


def owed_by(actions: Sequence[Action]) -> frozenset[str]:
    """What the systemctl actions after the first file change do: owed before they run."""
    first = next((i for i, a in enumerate(actions) if changes_files(a)), None)
    if first is None:
        return frozenset()
    return frozenset(item for a in actions[first + 1:] for item in does(a, OWING))


def done_by(actions: Sequence[Action]) -> frozenset[str]:
    """What the list's systemctl actions do (Session.apply pays each as soon as it ran)."""
    return frozenset(item for a in actions for item in does(a, PAYING))


def daemon_reload(host: Host) -> list[Action]:
    """The daemon-reload a killed run owed (its unit files are on disk: systemd must read
    them before any step starts or restarts a unit)."""
    if not owes(host, DAEMON_RELOAD):
        return []
    return [Run(argv=("systemctl", DAEMON_RELOAD), why="unit files written by a killed run")]
