"""Debian packages: install what is missing, nothing else."""

from __future__ import annotations

from collections.abc import Sequence

from fleet.host.actions import Action, Run
from fleet.host.machine import Host

APT_ENV = (("DEBIAN_FRONTEND", "noninteractive"),)
# Another package run (unattended-upgrades at 3 a.m. or just after a fresh server boots, or
# what a killed run left dying) may hold dpkg's lock, or apt's lists or archives lock (which
# DPkg::Lock::Timeout does not cover): wait for it rather than fail.
LOCK_WAIT = 300
APT_LOCK = ("-o", f"DPkg::Lock::Timeout={LOCK_WAIT}")


def parse_dpkg_query(output: str) -> set[str]:
    """Installed packages from `dpkg-query -W -f '${Package} ${db:Status-Abbrev}\\n'`."""
    installed = set()
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].startswith("ii"):
            installed.add(parts[0].split(":")[0])
    return installed


def installed_packages(host: Host, names: Sequence[str]) -> set[str]:
    result = host.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *names],
                      check=False)
    return parse_dpkg_query(result.stdout)


DPKG_UPDATES = "/var/lib/dpkg/updates"


def dpkg_interrupted(host: Host) -> bool:
    """A run killed inside dpkg leaves its journal behind; apt-get then refuses to do anything
    ("dpkg was interrupted") until `dpkg --configure -a` has replayed it."""
    return bool(host.listdir(DPKG_UPDATES))


def plan_packages(host: Host, wanted: Sequence[str]) -> list[Action]:
    installed = installed_packages(host, wanted)  # one dpkg-query, not one per package
    missing = [p for p in dict.fromkeys(wanted) if p not in installed]
    recover: list[Action] = []
    if dpkg_interrupted(host):
        recover.append(Run(argv=("dpkg", "--configure", "-a"), why="finish an interrupted package "
                           "install", env=APT_ENV, timeout=1800, retry_while="lock",
                           retry_for=LOCK_WAIT))
    if not missing:
        return recover
    return [
        *recover,
        Run(argv=("apt-get", *APT_LOCK, "update", "-q"), why="refresh package lists", env=APT_ENV,
            timeout=900, retry_while="lock", retry_for=LOCK_WAIT),
        Run(argv=("apt-get", *APT_LOCK, "install", "-y", "-q", "--no-install-recommends",
             "-o", "Dpkg::Options::=--force-confold", *missing),
            why=f"install {' '.join(missing)}", env=APT_ENV, timeout=1800, retry_while="lock",
            retry_for=LOCK_WAIT),
    ]
