"""Throughput: one hello-world Flask app under fleet's defaults, under the plain hand-written
recipe (2 processes, thunder-lock, unix socket, default nginx site, uWSGI's default logging),
under gunicorn (2 sync workers behind the same nginx) and under granian (its WSGI interface,
2 workers, behind the same nginx), against the ceiling (the same nginx answering a body of
the same size itself, `return 200`), measured with wrk on loopback inside one server,
interleaved in one run. Prints requests/s, p99 and the ratios.

    sudo [FLEET_TEST_BRIDGE_SUBNET=10.213.65.0/24] .venv/bin/python bench/throughput.py \
        [--seconds 10] [--rounds 2] [--connections 64] [--variants [--variant TEXT]...]

The server sits on a private bridge (tests/harness/network.py; the subnet from
FLEET_TEST_BRIDGE_SUBNET): no host-network lock.

--variants also measures copies of fleet's rendered vassal and nginx site with one default
changed each (nginx access log off or buffered, no max-requests, uwsgi_buffering off...),
to find which defaults matter; they run beside the others in the same interleaved rounds.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import APPS, apply, machine
from tests.e2e.helpers import build_pyz, install_fleet
from tests.harness import BareServer, GitRemote, install_signal_handlers
from tests.harness.bridged import BridgedServer
from tests.harness.network import BridgeNetwork

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
# Variants of fleet's rendered files: name -> (nginx site edits, vassal ini edits), each a
# list of (regex, replacement). A variant with vassal edits runs its own copy of the vassal.
VARIANTS: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {
    # The control: a copy of fleet's vassal and site with nothing changed. Any gap between it
    # and "fleet defaults" is the bench's bias (order, the copy's own socket), not a setting.
    "fleet, copy (no change)": (
        [], [(r"^strict = true$", "strict = true")]),
    "fleet, max-requests = 5000 (before)": (
        [], [(r"^max-requests = .*$", "max-requests = 5000")]),
    "fleet, no max-requests": (
        [], [(r"^max-requests = .*$", "")]),
    "fleet, nginx access_log off": (
        [(r"access_log /var/log/nginx/fleet-pulse\.access\.log;",
          "access_log off;")], []),
    "fleet, nginx access_log buffered": (
        [(r"access_log (/var/log/nginx/fleet-pulse\.access\.log);",
          r"access_log \1 combined buffer=64k flush=5s;")], []),
    "fleet, nginx uwsgi_buffering off": (
        [(r"(uwsgi_read_timeout [^;]+;)", r"\1\n        uwsgi_buffering off;")], []),
    "fleet, no thunder-lock": (
        [], [(r"^thunder-lock = true$", "")]),
    "fleet, threads = 2": (
        [], [(r"^threads = 1$", "threads = 2\nenable-threads = true")]),
    "fleet, no mem-collector (evil-reload-on-rss off)": (
        [], [(r"^evil-reload-on-rss = .*$", ""), (r"^mem-collector-freq = .*$", "")]),
    # uWSGI reads the worker's RSS after every request when any reload-on-* option is set
    # (UWSGI_OPT_MEMORY), and the evil variant adds a collector thread in each worker.
    "fleet, reload-on-rss (checked after each request) instead of evil-reload-on-rss": (
        [], [(r"^evil-reload-on-rss = ", "reload-on-rss = "), (r"^mem-collector-freq = .*$", "")]),
}
GRANIAN_SITE = """server {
    listen 80;
    server_name granian.test;
    location / {
        proxy_set_header Host $host;
        proxy_pass http://ADDRESS;
    }
}
"""
# The body pulse answers ("pulse pid=NNNN"), from nginx itself: what no app server can beat.
CEILING_SITE = """server {
    listen 80;
    server_name ceiling.test;
    location / {
        default_type text/plain;
        return 200 "pulse pid=1234";
    }
}
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
URL = "http://127.0.0.1:80/"  # minbase has no /etc/services: wrk cannot resolve "http"


def fleet_files(server: BareServer) -> tuple[str, str, str]:
    """(vassal ini name, its text, nginx site text) of the live pulse release."""
    name = next(f for f in server.run(["ls", "/etc/uwsgi/vassals"], check=True).stdout.split()
                if f.startswith("pulse@") and f.endswith(".ini"))
    ini = server.read_file("/etc/uwsgi/vassals/" + name).decode()
    site = server.read_file("/etc/nginx/sites-enabled/fleet-pulse.conf").decode()
    return name, ini, site


def edit(text: str, edits: list[tuple[str, str]]) -> str:
    for pattern, repl in edits:
        text, count = re.subn(pattern, repl, text, flags=re.M)
        if not count:
            raise SystemExit(f"variant edit {pattern!r} matched nothing")
    return text


def setup_variants(server: BareServer, ini: str, site: str,
                   only: list[str]) -> dict[str, str]:
    """Copies of fleet's files with one default changed; name -> Host."""
    hosts = {}
    socket = re.search(r"^socket = (.+)$", ini, re.M).group(1)  # type: ignore[union-attr]
    stats = re.search(r"^stats = (.+)$", ini, re.M).group(1)  # type: ignore[union-attr]
    for i, (name, (site_edits, ini_edits)) in enumerate(VARIANTS.items()):
        if only and not any(text in name for text in only):
            continue
        host = f"variant{i}.test"
        text = edit(site, site_edits).replace("pulse.test", host)
        text = text.replace("server_name pulse.test", f"server_name {host}")
        text = re.sub(r"server_name [^;]+;", f"server_name {host};", text)
        if ini_edits:
            own = f"/run/fleet/pulse/variant{i}.sock"
            server.write_file(f"/etc/uwsgi/vassals/variant{i}.ini",
                              edit(ini, ini_edits).replace(socket, own)
                              .replace(stats, f"/run/fleet/pulse/variant{i}.stats"), 0o600)
            text = text.replace(socket, own)
        server.write_file(f"/etc/nginx/sites-enabled/variant{i}.conf", text)
        hosts[name] = host
    return hosts


def apt_install(server: BareServer, packages: str) -> None:
    """apt-get install, retried while another session's server holds the shared archive
    cache's lock (apt does not wait for it)."""
    for _ in range(60):
        result = server.run(f"apt-get install -y -q {packages} >/dev/null", timeout=600)
        if result.ok or "Could not get lock" not in result.stderr:
            break
        time.sleep(5)
    if not result.ok:
        raise SystemExit(f"apt-get install {packages} failed:\n{result.stderr[-2000:]}")


def setup_rivals(server: BareServer) -> None:
    """The recipe as a second vassal of the same Emperor, and gunicorn from its own venv,
    both running the very release fleet deployed."""
    _, ini, _ = fleet_files(server)
    venv = re.search(r"^virtualenv = (.+)$", ini, re.M).group(1)  # type: ignore[union-attr]
    apt_install(server, "wrk")
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
    setup_granian(server)
    server.write_file("/etc/nginx/sites-enabled/ceiling.conf", CEILING_SITE)


def setup_granian(server: BareServer) -> None:
    """granian's WSGI interface, 2 workers, its defaults otherwise; on a unix socket like the
    others when this granian has --uds, else on loopback TCP (said in the output)."""
    server.run("python3 -m venv /opt/granian && /opt/granian/bin/pip install -q "
               "flask==3.0.3 granian", check=True, timeout=900)
    version = server.run("/opt/granian/bin/granian --version", check=True).stdout.strip()
    uds = "--uds" in server.run("/opt/granian/bin/granian --help", check=True).stdout
    bind = (["--uds", "/run/granian/hello.sock"] if uds
            else ["--host", "127.0.0.1", "--port", "8011"])
    server.run("install -d -o pulse -g www-data -m 0750 /run/granian", check=True)
    server.run(["systemd-run", "--unit=bench-granian", "--uid=pulse", "--gid=pulse",
                "--working-directory=/srv/fleet/pulse/current",
                "/opt/granian/bin/granian", "--interface", "wsgi", "--workers", "2", *bind,
                "wsgi:app"], check=True)
    if uds:  # nginx (www-data) must reach the socket granian makes as pulse
        server.run("for i in $(seq 50); do [ -S /run/granian/hello.sock ] && break; "
                   "sleep 0.2; done; chmod 0770 /run/granian; "
                   "chmod 0666 /run/granian/hello.sock", check=True)
    address = "unix:/run/granian/hello.sock" if uds else "127.0.0.1:8011"
    server.write_file("/etc/nginx/sites-enabled/granian.conf",
                      GRANIAN_SITE.replace("ADDRESS", address))
    print(f"granian: {version}, {'unix socket' if uds else 'loopback TCP'}", flush=True)


def wait_ready(server: BareServer, hosts: list[str]) -> None:
    server.run("nginx -t && systemctl reload nginx", check=True)
    for host in hosts:
        server.run(f"for i in $(seq 60); do out=$(wrk -t1 -c1 -d1s -H 'Host: {host}' {URL} "
                   "2>&1); case $out in *Non-2xx*|*rror*) sleep 1;; *Requests/sec*) exit 0;; "
                   f"*) sleep 1;; esac; done; echo \"$out\"; exit 1", check=True, timeout=180)


# CPU time (user + system, in clock ticks) of every process in the server, children's included
# (utime stime cutime cstime): a worker that exits is counted once, in its parent's c-times.
# wrk's own time goes to nsenter's, outside the server, so it is not counted.
CPU_TICKS = ("import os\nt = 0\nfor p in os.listdir('/proc'):\n    if p.isdigit():\n"
             "        try: f = open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()\n"
             "        except OSError: continue\n        t += sum(map(int, f[11:15]))\n"
             "print(t, os.sysconf('SC_CLK_TCK'))")


def cpu_seconds(server: BareServer) -> float:
    ticks, hz = server.run(["python3", "-c", CPU_TICKS], check=True).stdout.split()
    return int(ticks) / int(hz)


def wrk(server: BareServer, host: str, seconds: int,
        connections: int) -> tuple[float, float, float]:
    """(requests/s, p99 ms, server CPU ms per request); a run with errors or non-2xx answers
    is refused. CPU per request is the server's whole CPU time (app server, nginx, the rest
    of the server) over the requests answered: unlike requests/s, it barely moves when other
    work on the host takes the cores."""
    before = cpu_seconds(server)
    out = server.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
                      "-H", f"Host: {host}", URL], check=True, timeout=seconds + 60).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"{host}: wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", out, re.M).groups()  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    cpu = cpu_seconds(server) - before
    return rps, float(value) * UNITS[unit], cpu * 1000 / max(requests, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--variants", action="store_true",
                        help="also measure fleet's files with one default changed each")
    parser.add_argument("--variant", action="append", default=[], metavar="TEXT",
                        help="with --variants: only the variants whose name contains TEXT "
                             "(repeatable)")
    args = parser.parse_args()
    rivals = {"fleet defaults": "pulse.test", "recipe": "recipe.test",
              "gunicorn": "gunicorn.test", "granian": "granian.test",
              "ceiling": "ceiling.test"}
    print(f"machine: {machine()}", flush=True)
    install_signal_handlers()
    # A server on a private bridge (FLEET_TEST_BRIDGE_SUBNET): no host-network lock to wait
    # for; wrk runs inside it on its own loopback, as before.
    with BridgeNetwork() as network, \
            GitRemote(listen=("127.0.0.1", network.gateway)) as remote, \
            tempfile.TemporaryDirectory() as tmp:
        remote.create_repo("pulse", APPS / "pulse")
        pyz = build_pyz(Path(tmp) / "fleet.pyz")
        server = BridgedServer(network, 0, "bench")
        try:
            server.boot()
            install_fleet(server, pyz)
            apply(server, f'[apps.pulse]\nrepo = "{remote.url("pulse", network.gateway)}"\n'
                          'domains = ["pulse.test"]\n')
            setup_rivals(server)
            if args.variants:
                _, ini, site = fleet_files(server)
                rivals.update(setup_variants(server, ini, site, args.variant))
            wait_ready(server, list(rivals.values()))
            results: dict[str, list[tuple[float, float, float]]] = {n: [] for n in rivals}
            for host in rivals.values():
                wrk(server, host, 3, args.connections)  # warm-up
            for n in range(args.rounds):  # interleaved: drift hits everyone alike
                for name, host in rivals.items():
                    results[name].append(wrk(server, host, args.seconds, args.connections))
                    rps, p99, cpu = results[name][-1]
                    print(f"round {n + 1}: {name}: {rps:.0f} req/s, p99 {p99:.1f} ms, "
                          f"CPU {cpu:.3f} ms/request",
                          file=sys.stderr, flush=True)
        finally:
            server.destroy()
    print(f"wrk -t2 -c{args.connections} -d{args.seconds}s on loopback inside the server, "
          f"{args.rounds} interleaved rounds after a 3 s warm-up each; medians")
    print("| server | requests/s | p99 ms | server CPU ms/request (min, max) |\n"
          "|---|---|---|---|")
    med = {n: tuple(statistics.median(run[i] for run in v) for i in range(3))
           for n, v in results.items()}
    for name, (rps, p99, cpu) in med.items():
        cpus = [run[2] for run in results[name]]
        print(f"| {name} | {rps:.0f} | {p99:.1f} | {cpu:.3f} ({min(cpus):.3f}, "
              f"{max(cpus):.3f}) |")
    base = med["fleet defaults"]
    for name in med:
        if name != "fleet defaults":
            print(f"fleet / {name}: {base[0] / med[name][0]:.2f}x requests/s, "
                  f"p99 {base[1]:.1f} vs {med[name][1]:.1f} ms, "
                  f"CPU per request {base[2] / med[name][2]:.2f}x")
    print("command: sudo .venv/bin/python bench/throughput.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
