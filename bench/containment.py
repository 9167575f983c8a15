"""What a contained run costs: the same command started directly, through runuser (the old
`init`), and through fleet's contained-run command line (host.contained_argv), on a bare
server booted with a private network (no registry needed, so no host lock).

    sudo .venv/bin/python bench/containment.py --runs 20
"""

from __future__ import annotations

import argparse
import shlex
import time

from _common import ROOT, machine  # noqa: F401 - puts the repo on sys.path
from tests.harness.server import BareServer

from fleet.host.machine import contained_argv


class PrivateServer(BareServer):
    """Own network namespace: it binds nothing of the host's, so it needs no host lock."""

    shares_host_network = False

    def _network_args(self) -> list[str]:
        return ["--private-network"]


def mean_ms(server: BareServer, command: str, runs: int) -> float:
    started = time.monotonic()
    for _ in range(runs):
        server.run(["sh", "-c", command], check=True)
    return (time.monotonic() - started) / runs * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    server = PrivateServer()
    server.boot()
    try:
        server.run(["sh", "-c", "useradd --system --no-create-home bench && mkdir -p /srv/w"],
                   check=True)
        contained = shlex.join(contained_argv(["/bin/true"], user="bench", cwd="/",
                                              writable=("/srv/w",), timeout=60,
                                              env_file=None))
        print(machine())
        for label, command in (("direct", "/bin/true"),
                               ("runuser", "/usr/sbin/runuser -u bench -- /bin/true"),
                               ("contained", contained)):
            print(f"{label:10} {mean_ms(server, command, args.runs):7.1f} ms per run "
                  f"(mean of {args.runs}, incl. entering the container)")
    finally:
        server.destroy()


if __name__ == "__main__":
    main()
