"""Throughput: one hello-world Flask app under fleet's defaults, under the plain hand-written
recipe (2 processes, thunder-lock, unix socket, default nginx site, uWSGI's default logging)
and under gunicorn (2 sync workers behind the same nginx), measured with wrk on loopback
inside one server, interleaved in one run. Prints requests/s, p99 and the ratios.

    sudo python3 bench/throughput.py [--seconds 10] [--rounds 3] [--connections 64]
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
from pathlib import Path

from _common import apply, machine, start
from tests.harness import BareServer, GitRemote

RECIPE_INI = """[uwsgi]
plugins = python3
master = true
processes = 2
thunder-lock = true
socket = /run/recipe/hello.sock
chown-socket = pulse:www-data
chmod-socket = 660
uid = pulse
gid = pulse
virtualenv = {venv}
chdir = /srv/fleet/pulse/current
module = wsgi:app
vacuum = true
die-on-term = true
"""
RECIPE_SITE = """server {
    listen 80;
    server_name recipe.test;
    location / {
        include uwsgi_params;
        uwsgi_pass unix:/run/recipe/hello.sock;
    }
}
"""
GUNICORN_SITE = """server {
    listen 80;
    server_name gunicorn.test;
    location / {
        proxy_set_header Host $host;
        proxy_pass http://unix:/run/gunicorn/hello.sock;
    }
}
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def setup_rivals(server: BareServer) -> None:
    """The recipe as a second vassal of the same Emperor, and gunicorn from its own venv,
    both running the very release fleet deployed."""
    ini = server.read_file("/etc/uwsgi/vassals/" + next(
        f for f in server.run(["ls", "/etc/uwsgi/vassals"], check=True).stdout.split()
        if f.startswith("pulse@") and f.endswith(".ini"))).decode()
    venv = re.search(r"^virtualenv = (.+)$", ini, re.M).group(1)  # type: ignore[union-attr]
    server.run("apt-get install -y -q wrk >/dev/null", check=True, timeout=600)
    server.run("install -d -o pulse -g www-data -m 0750 /run/recipe /run/gunicorn", check=True)
    server.write_file("/etc/uwsgi/vassals/recipe.ini", RECIPE_INI.format(venv=venv), 0o600)
    server.write_file("/etc/nginx/sites-enabled/recipe.conf", RECIPE_SITE)
    server.write_file("/etc/nginx/sites-enabled/gunicorn.conf", GUNICORN_SITE)
    server.run("python3 -m venv /opt/gunicorn && /opt/gunicorn/bin/pip install -q "
               "flask==3.0.3 gunicorn", check=True, timeout=900)
    server.run(["systemd-run", "--unit=bench-gunicorn", "--uid=pulse", "--gid=pulse",
                "/opt/gunicorn/bin/gunicorn", "--workers", "2", "--bind",
                "unix:/run/gunicorn/hello.sock", "--chdir", "/srv/fleet/pulse/current",
                "wsgi:app"], check=True)
    server.run("nginx -t && systemctl reload nginx", check=True)
    for host in ("pulse.test", "recipe.test", "gunicorn.test"):
        server.run(f"for i in $(seq 60); do wrk -t1 -c1 -d1s -H 'Host: {host}' "
                   f"http://127.0.0.1/ 2>&1 | grep -q 'Non-2xx' || exit 0; sleep 1; done; "
                   "exit 1", check=True, timeout=120)


def wrk(server: BareServer, host: str, seconds: int, connections: int) -> tuple[float, float]:
    """(requests/s, p99 ms); a run with errors or non-2xx answers is refused."""
    out = server.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
                      "-H", f"Host: {host}", "http://127.0.0.1/"], check=True,
                     timeout=seconds + 60).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"{host}: wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", out, re.M).groups()  # type: ignore[union-attr]
    return rps, float(value) * UNITS[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    rivals = {"fleet defaults": "pulse.test", "recipe": "recipe.test",
              "gunicorn": "gunicorn.test"}
    with GitRemote() as remote, tempfile.TemporaryDirectory() as tmp:
        server = start(remote, Path(tmp))
        try:
            apply(server, f'[apps.pulse]\nrepo = "{remote.url("pulse")}"\n'
                          'domains = ["pulse.test"]\n')
            setup_rivals(server)
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in rivals}
            for host in rivals.values():
                wrk(server, host, 3, args.connections)  # warm-up
            for _ in range(args.rounds):  # interleaved: drift hits everyone alike
                for name, host in rivals.items():
                    results[name].append(wrk(server, host, args.seconds, args.connections))
        finally:
            server.destroy()
    print(f"machine: {machine()}; wrk -t2 -c{args.connections} -d{args.seconds}s, "
          f"{args.rounds} interleaved rounds, medians")
    print("| server | requests/s | p99 ms |\n|---|---|---|")
    med = {n: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v))
           for n, v in results.items()}
    for name, (rps, p99) in med.items():
        print(f"| {name} | {rps:.0f} | {p99:.1f} |")
    base = med["fleet defaults"]
    for name in ("recipe", "gunicorn"):
        print(f"fleet / {name}: {base[0] / med[name][0]:.2f}x requests/s, "
              f"p99 {base[1]:.1f} vs {med[name][1]:.1f} ms")


if __name__ == "__main__":
    main()
