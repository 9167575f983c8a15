"""Builds with uv against pip: per builder, a fresh server, the same five apps (tests/apps
alpha, beta, gamma, keeper, pulse: requirements.txt and a pyproject project); the wall time
of their cold `fleet apply` with empty build caches (uv's own install included), then of a
deploy that changes every app's requirements (caches warm). Prints uv/pip ratios.

    sudo FLEET_TEST_BRIDGE_SUBNET=10.213.71.0/24 .venv/bin/python bench/builds.py [--rounds N]

With --rounds N, N fresh servers per builder in alternating order, and each builder's fastest
time: other sessions' load on a shared host stretches whichever builder it falls on.

Debian packages are installed by a first apply without apps, outside the timings: both
builders share that cost. The servers sit on a private bridge (FLEET_TEST_BRIDGE_SUBNET): no
host lock, no port shared with other sessions' servers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from _common import (
    APPS,
    BridgedServer,
    BridgeNetwork,
    build_pyz,
    install_fleet,
    install_signal_handlers,
    machine,
)
from provisioning import timed_apply
from tests.harness import GitRemote

NAMES = ("alpha", "beta", "gamma", "keeper", "pulse")
EXTRA = "six==1.16.0"  # the requirement every app gains in the deploy


def toml(remote: GitRemote, builder: str, address: str = "127.0.0.1") -> str:
    text = f'[server]\nbuilder = "{builder}"\n\n'
    for name in NAMES:
        text += f'[apps.{name}]\nrepo = "{remote.url(name, address)}"\ndomains = ["{name}.test"]\n'
        if name == "gamma":
            text += 'module = "gamma:create_app()"\n'
        if name == "keeper":
            text += 'persist = ["instance"]\ninit = "python init_db.py"\n'
        text += "\n"
    return text


def change_requirements(remote: GitRemote) -> None:
    for name in NAMES:
        if name == "gamma":
            text = (APPS / name / "pyproject.toml").read_text()
            files = {"pyproject.toml": text.replace('"flask>=3,<4"', f'"flask>=3,<4", "{EXTRA}"')}
        else:
            text = (APPS / name / "requirements.txt").read_text()
            files = {"requirements.txt": text + EXTRA + "\n"}
        remote.commit(name, files, "Add a requirement")


def measure(builder: str) -> tuple[float, float]:
    install_signal_handlers()
    with tempfile.TemporaryDirectory() as tmp, BridgeNetwork() as network, \
            GitRemote(listen=("127.0.0.1", network.gateway)) as remote:
        for name in NAMES:
            remote.create_repo(name, APPS / name)
        pyz = build_pyz(Path(tmp) / "fleet.pyz")
        server = BridgedServer(network, 0, f"builds-{builder}")
        try:
            server.boot()
            install_fleet(server, pyz)
            server.write_file("/root/fleet.toml", f'[server]\nbuilder = "{builder}"\n')
            server.run("sh /root/bootstrap /root/fleet.pyz apply /root/fleet.toml",
                       timeout=3600, check=True)
            server.write_file("/root/fleet.toml", toml(remote, builder, network.gateway))
            cold, data = timed_apply(server, "/root/fleet.toml")
            notes = [n for s in data.get("steps", []) if s.get("name") == "uv"
                     for n in s.get("notes", [])]
            if notes:
                raise SystemExit(f"uv was not installed: {notes}")
            print(f"{builder}: cold apply {cold:.1f} s", file=sys.stderr, flush=True)
            change_requirements(remote)
            deploy, _ = timed_apply(server, "/root/fleet.toml")
            print(f"{builder}: requirements deploy {deploy:.1f} s", file=sys.stderr, flush=True)
        finally:
            server.destroy()
    return cold, deploy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1,
                        help="fresh servers per builder, in alternating order (pip first, "
                             "then uv first, ...); the table takes each builder's fastest")
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    times: dict[str, list[tuple[float, float]]] = {"pip": [], "uv": []}
    for round_ in range(args.rounds):
        order = ("pip", "uv") if round_ % 2 == 0 else ("uv", "pip")
        for builder in order:
            times[builder].append(measure(builder))
    print("\n| five apps | pip s | uv s | uv/pip |\n|---|---|---|---|")
    for index, what in enumerate(("cold apply, empty caches",
                                  "deploy changing requirements, warm caches")):
        pip, uv = (min(t[index] for t in times[b]) for b in ("pip", "uv"))
        print(f"| {what} | {pip:.1f} | {uv:.1f} | {uv / pip:.2f} |")
    for builder, runs in times.items():
        print(f"{builder} rounds (cold, deploy): "
              + ", ".join(f"({c:.1f}, {d:.1f})" for c, d in runs))
    subnet = os.environ.get("FLEET_TEST_BRIDGE_SUBNET", "10.213.71.0/24")
    print(f"command: sudo FLEET_TEST_BRIDGE_SUBNET={subnet} .venv/bin/python "
          f"bench/builds.py --rounds {args.rounds}")


if __name__ == "__main__":
    main()
