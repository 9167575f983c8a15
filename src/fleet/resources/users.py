"""One system user and group per app: its processes, and nothing else, run as it."""

from __future__ import annotations

from fleet.actions import Action, Run
from fleet.host import Host


def user_exists(host: Host, name: str) -> bool:
    return host.run(["getent", "passwd", name], check=False).ok


def plan_user(host: Host, name: str, home: str) -> list[Action]:
    if user_exists(host, name):
        return []
    return [Run(("useradd", "--system", "--user-group", "--home-dir", home, "--no-create-home",
                 "--shell", "/usr/sbin/nologin", name), f"create user {name}")]
