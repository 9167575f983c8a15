"""Issue 14, validation (items 6 and 7) on a real server: hostile config is refused with exit 2
and one line before anything changes, and what a TCP vassal socket exposes to local users is
measured. One server for the module; one apply of a healthy unix-socket app and a TCP app.

Not a provisioning test: its server starts from the provisioned tree (python3 and fleet's OS
packages preinstalled, tests/harness/rootfs.py); bare servers are provisioned in test_apply,
test_operator, test_reliability, test_trixie and the push modules."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.e2e.helpers import describe, fleet, fleet_json, get, install_fleet
from tests.harness.server import BareServer

APPS = Path(__file__).resolve().parents[1] / "apps"
TCP = "127.0.0.1:9017"
PWNED = "/var/tmp/fleet-pwned"
# Everything outside the apps' own data that a refused run could have touched: /etc, /root,
# /usr, /srv (both apps), /var/lib/fleet. Metadata of every entry (mode included, so a file
# that became world-readable shows) and the sha256 of every file outside /usr.
WATCHED = "/etc /root /usr /srv /var/lib/fleet"
HASHED = "/etc /root /srv /var/lib/fleet"


def fleet_toml(git_remote) -> str:
    return f"""
[apps.calm]
repo = "{git_remote.url('calm')}"
domains = ["calm.test"]

[apps.tcppeer]
repo = "{git_remote.url('tcp-peer')}"
domains = ["tcppeer.test"]
socket = "tcp:{TCP}"
"""


def wide_snapshot(box: BareServer) -> str:
    # fleet's own unpacked zipapp writes its bytecode caches as it runs; the test's own
    # files go to /var/tmp, outside what is watched.
    skip = "-path /var/lib/fleet/shiv -prune -o"
    script = (f"find {WATCHED} {skip} -printf '%p %U %G %m %s %T@ %y %l\\n' 2>/dev/null | sort;"
              f" find {HASHED} {skip} -type f -print0 2>/dev/null | sort -z "
              "| xargs -0 -r sha256sum")
    return box.run(["sh", "-c", script], check=True, timeout=300).stdout


def world_readable(box: BareServer) -> set[str]:
    script = (f"find {WATCHED} -path /var/lib/fleet/shiv -prune -o -xdev -type f -perm -o+r "
              "-print 2>/dev/null")
    return set(box.run(["sh", "-c", script], check=True, timeout=300).stdout.split())


@pytest.fixture(scope="module")
def box(server_factory, git_remote, fleet_pyz):
    for name, source in (("calm", APPS / "whoami"), ("tcp-peer", APPS / "tcp-peer")):
        if name not in git_remote.repos_created:
            git_remote.create_repo(name, source)
    server: BareServer = server_factory(provisioned=True)
    install_fleet(server, fleet_pyz)
    server.write_file("/root/fleet.toml", fleet_toml(git_remote))
    result = server.run(["sh", "/root/bootstrap", "/root/fleet.pyz", "--version"], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run = fleet_json(server, "apply", "/root/fleet.toml")
    assert run.returncode == 0, describe(run)
    assert {n: a["health"] for n, a in run.data["apps"].items()} == {
        "calm": "passed", "tcppeer": "passed"}
    return server


@pytest.fixture(scope="module")
def pristine(box) -> tuple[str, set[str]]:
    return wide_snapshot(box), world_readable(box)


def serves(box: BareServer) -> None:
    status, body = get(box, "calm.test", attempts=5)
    assert status == 200 and body.startswith("whoami "), (status, body[:300])


# ----------------------------------------------------------------------------- hostile config

APP = 'repo = "git://127.0.0.1:1/x.git"\ndomains = ["x.test"]\n'
HOSTILE_FILES = {
    "nginx directives in static": (
        f'[apps.x]\n{APP}[apps.x.static]\n"/s" = "static;}} location /x {{ alias /etc"\n',
        "apps.x.static./s: 'static;} location /x { alias /etc' may only use letters"),
    "LD_PRELOAD through ca_bundle": (
        '[server.acme]\nca_bundle = "/etc/ssl/certs/ca-certificates.crt LD_PRELOAD=/tmp/x.so"\n',
        "server.acme.ca_bundle: '/etc/ssl/certs/ca-certificates.crt LD_PRELOAD=/tmp/x.so' "
        "may only use"),
    "nginx directive in tls key": (
        f'[apps.x]\n{APP}tls = {{ cert = "/etc/ssl/a.pem", key = "/etc/ssl/a.key;ssl_x y" }}\n',
        "apps.x.tls.key: '/etc/ssl/a.key;ssl_x y' may only use"),
    "repo URL that is a git option": (
        f'[apps.x]\nrepo = "--upload-pack=touch {PWNED}"\ndomains = ["x.test"]\n',
        f"apps.x.repo: '--upload-pack=touch {PWNED}' must not start with '-'"),
    "vassal_set exec-as-root": (
        f'[emperor.vassal_set]\nexec-as-root = "touch {PWNED}"\n',
        "emperor.vassal_set.exec-as-root: is not a uWSGI tuning option"),
    "vassal_set uid": ('[emperor.vassal_set]\nuid = "root"\n',
                       "emperor.vassal_set.uid: is not a uWSGI tuning option"),
    "vassal_set value run by uWSGI": (
        f'[emperor.vassal_set]\nharakiri = "@(exec://touch {PWNED})"\n',
        "emperor.vassal_set.harakiri: '@(exec://touch /var/tmp/fleet-pwned)' may only use"),
    "health.path with a space": (f'[apps.x]\n{APP}[apps.x.health]\npath = "/a b"\n',
                                 "apps.x.health.path: '/a b' is not a URL path"),
    "TOML nested 5000 deep": ("x = " + "[" * 5000 + "]" * 5000 + "\n",
                              "tables and arrays nest deeper than 32 levels"),
    "env line uWSGI would split": (
        f'[apps.x]\n{APP}[apps.x.env]\nK = "{"a" * 1100}LD_PRELOAD=/srv/x.so"\n',
        "apps.x.env.K: KEY=VALUE is 1122 bytes; uWSGI reads at most 1022 per line"),
    "app name with a trailing newline": (f'[apps."x\\n"]\n{APP}', "invalid app name 'x\\n'"),
    "balanced app named like a local app": (
        '[front.apps.calm]\ndomains = ["calm2.test"]\nupstreams = ["10.0.0.2:80"]\n',
        "front.apps.calm: 'calm' is also a local app ([apps.calm])"),
}
HOSTILE_ARGS = {
    "add-app with a repo that is a git option": (
        ["add-app", "x", f"--repo=--upload-pack=touch {PWNED}", "--domain", "x.test"],
        "add-app x: repo: '--upload-pack=touch /var/tmp/fleet-pwned' must not start with '-'"),
    "deploy --ref that is a git option": (["deploy", "calm", "--ref=--output=/etc/passwd"],
                                          "ref: '--output=/etc/passwd' is not a git branch"),
}


@pytest.mark.parametrize("case", [*HOSTILE_FILES, *HOSTILE_ARGS])
def test_hostile_config_is_refused_and_touches_nothing(box, pristine, case) -> None:
    if case in HOSTILE_FILES:
        text, expected = HOSTILE_FILES[case]
        box.write_file("/var/tmp/bad.toml", text)
        result = fleet(box, "apply", "/var/tmp/bad.toml")
        assert result.stderr.startswith("fleet: /var/tmp/bad.toml: "), result.stderr
    else:
        args, expected = HOSTILE_ARGS[case]
        result = fleet(box, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr, result.stderr
    snapshot, readable = pristine
    assert wide_snapshot(box) == snapshot
    assert world_readable(box) == readable
    assert box.run(["test", "-e", PWNED]).returncode != 0
    serves(box)


def test_huge_file_is_refused_in_one_line(box, pristine) -> None:
    box.run(["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' '#' > /var/tmp/big.toml"],
            check=True)
    result = fleet(box, "apply", "/var/tmp/big.toml")
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr == ("fleet: /var/tmp/big.toml: is 1048577 bytes; fleet reads at most "
                             "1048576\n")
    assert wide_snapshot(box) == pristine[0]


@pytest.mark.parametrize("command", [["releases", "calm"], ["status"], ["apply"]])
def test_root_commands_run_by_another_user_say_so_in_one_line(box, pristine, command) -> None:
    result = box.run(["runuser", "-u", "nobody", "--", "/usr/local/bin/fleet", *command])
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr == (f"fleet: fleet {command[0]} must run as root: fleet's state under "
                             "/etc/fleet and /srv/fleet is root-only (try sudo)\n")
    assert "Traceback" not in result.stdout + result.stderr


# ----------------------------------------------------------------------------- TCP sockets

SEND = r'''
import socket, struct, sys
pairs = dict(arg.split("=", 1) for arg in sys.argv[1:])
body = b"".join(struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v))
                + v.encode() for k, v in pairs.items())
host, port = "{host}", {port}
with socket.create_connection((host, port), timeout=10) as s:
    s.sendall(struct.pack("<BHB", 0, len(body), 0) + body)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
print(data.decode(errors="replace"))
'''


def send_as(box: BareServer, user: str, **pairs: str) -> str:
    host, port = TCP.split(":")
    script = SEND.format(host=host, port=port)
    box.write_file("/var/tmp/send.py", script, 0o644)
    args = [f"{k}={v}" for k, v in pairs.items()]
    result = box.run(f"runuser -u {user} -- python3 /var/tmp/send.py {shlex.join(args)}",
                     timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_tcp_vassal_socket_exposure_is_what_readme_says(box) -> None:
    """README: a TCP vassal socket takes uwsgi packets from any local user, who can set any
    request variable (REMOTE_ADDR, headers), but not uWSGI's magic variables (refused with 403
    by the vassal's routes). Measured here as user nobody."""
    request = {"REQUEST_METHOD": "GET", "PATH_INFO": "/peer", "SERVER_NAME": "tcppeer.test",
               "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "tcppeer.test",
               "REMOTE_ADDR": "203.0.113.9", "HTTP_X_FLEET_TEST": "forged"}
    reply = send_as(box, "nobody", **request)
    assert "remote=203.0.113.9 header=forged" in reply, reply
    # uWSGI's magic variables: UWSGI_FILE=exec://... loads a "file" by running a command as
    # the app's user (measured: without the vassal's routes, nobody's command ran).
    magic = send_as(box, "nobody", **request, SCRIPT_NAME="/magic",
                    UWSGI_FILE=f"exec://touch {PWNED}-magic")
    assert magic.startswith("HTTP/1.1 403 "), magic
    assert box.run(["test", "-e", f"{PWNED}-magic"]).returncode != 0, \
        "a local user ran a command as the app's user through UWSGI_FILE"
    setenv = send_as(box, "nobody", **request, UWSGI_SETENV="PYTHONINSPECT=1")
    assert setenv.startswith("HTTP/1.1 403 "), setenv
    status, body = get(box, "tcppeer.test", "/", attempts=5)
    assert status == 200 and body == "tcp-peer v1"
    serves(box)
