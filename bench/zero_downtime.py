"""Zero-downtime deploys, measured: continuous load through nginx while `fleet deploy`
switches an app to a new commit (good ones, then one that fails to import), counting every
request sent and every failed or non-2xx answer, and timing each deploy.

    python3 bench/zero_downtime.py [--deploys N] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import APPS, apply, machine, start
from tests.e2e.helpers import fleet
from tests.e2e.load import Load
from tests.harness import GitRemote

APP = (APPS / "alpha" / "wsgi.py").read_text()


def source(version: str) -> str:
    return APP.replace('f"alpha sqlalchemy=', f'f"web {version} sqlalchemy=')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploys", type=int, default=5, help="good deploys to measure")
    parser.add_argument("--threads", type=int, default=4, help="concurrent load threads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, GitRemote() as remote:
        remote.create_repo("web", APPS / "alpha", files={"wsgi.py": source("v0")})
        server = start(remote, Path(tmp))
        try:
            apply(server, f'[apps.web]\nrepo = "{remote.url("web")}"\n'
                          'domains = ["web.test"]\nprocesses = 2\n')
            rows = []
            versions = [f"v{i}" for i in range(1, args.deploys + 1)] + ["broken"]
            for version in versions:
                files = ({"wsgi.py": "import does_not_exist_fleet\n"} if version == "broken"
                         else {"wsgi.py": source(version)})
                remote.commit("web", files, f"deploy {version}")
                with Load("web.test", threads=args.threads) as load:
                    begin = time.monotonic()
                    result = fleet(server, "deploy", "web")
                    seconds = time.monotonic() - begin
                rows.append((version, result.returncode, seconds, load.sent, load.failed))
        finally:
            server.destroy()
    print(f"machine: {machine()}")
    print(f"{'deploy':<8} {'exit':>4} {'seconds':>8} {'requests':>9} {'failed':>7}")
    for version, code, seconds, sent, failed in rows:
        print(f"{version:<8} {code:>4} {seconds:>8.1f} {sent:>9} {failed:>7}")
    sent = sum(r[3] for r in rows)
    failed = sum(r[4] for r in rows)
    print(f"total: {sent} requests during {len(rows)} deploys, {failed} failed "
          f"({failed / max(sent, 1):.4%}); the broken commit must exit 1 and keep serving")


if __name__ == "__main__":
    main()
