"""The Python half of ./demo: fleet end to end on a throwaway bare Debian server.

Boots a bare Debian (the test harness: cached debootstrap rootfs under systemd-nspawn),
serves tests/apps/{alpha,beta,gamma} from a local git daemon, provisions them with
`sh bootstrap fleet.pyz apply fleet.toml` inside the server, prints `fleet status` and one
request per app through nginx, then tears everything down (also on Ctrl-C or failure).

Run it through ./demo, which installs the prerequisites and builds dist/fleet.pyz first.
Exit status: 0 when apply succeeded and every app answered with its own content, else 1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import (  # noqa: E402
    BareServer,
    GitRemote,
    NoResponse,
    default_suite,
    install_signal_handlers,
)

from fleet.config import parse_document, parse_toml  # noqa: E402

APPS = ("alpha", "beta", "gamma")
EXAMPLE = ROOT / "examples" / "fleet.toml"
PYZ = ROOT / "dist" / "fleet.pyz"
PLACEHOLDER = "git://127.0.0.1:9418/"  # what examples/fleet.toml's repo URLs start with
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STARTED = time.monotonic()


def say(text: str) -> None:
    print(f"\n==> {text}  [{time.monotonic() - STARTED:.0f} s]", flush=True)


def stream(server: BareServer, script: str) -> int:
    """Run a shell script as root inside the server, its output going straight to this
    terminal (server.run() would capture it until the end)."""
    env = {"PATH": CLEAN_PATH, "HOME": "/root", "LANG": "C.UTF-8", "USER": "root"}
    if os.environ.get("TERM"):
        env["TERM"] = os.environ["TERM"]
    if not sys.stdout.isatty():  # rich would wrap its tables at 80 columns in a log file
        env["COLUMNS"] = os.environ.get("COLUMNS", "160")
    argv = ["nsenter", f"--target={server.init_pid}", "--all", "--root", "--wd",
            "env", "-i", *(f"{k}={v}" for k, v in env.items()), "sh", "-c", script]
    # Own session: Ctrl-C reaches only us, and we stop the command before tearing down.
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        raise


def render_config(remote: GitRemote) -> str:
    """examples/fleet.toml with its placeholder URLs pointing at this run's git daemon."""
    text = EXAMPLE.read_text()
    base = remote.url("x").removesuffix("x.git")
    return text.replace(PLACEHOLDER, base)


def domains(text: str) -> dict[str, str]:
    _, _, apps = parse_document("fleet.toml", parse_toml("fleet.toml", text))
    return {name: app.domains[0] for name, app in apps.items()}


def request_each(server: BareServer, hosts: dict[str, str]) -> bool:
    ok = True
    for name, host in hosts.items():
        try:
            response = server.http("/", host=host)
            body = response.body.strip()
            good = response.status == 200 and body.startswith(name)
            shown = (body.splitlines() or [""])[0][:100]
            print(f"  GET http://{host}/  ->  HTTP {response.status}  {shown}")
        except NoResponse as exc:
            good = False
            print(f"  GET http://{host}/  ->  no response ({exc})")
        ok = ok and good
    try:
        server.http("/", host="unknown.example")
        print("  GET http://unknown.example/  ->  answered (it should not)")
        ok = False
    except NoResponse:
        print("  GET http://unknown.example/  ->  no response (catch-all: unknown hosts get "
              "nothing)")
    return ok


def main() -> int:
    if not PYZ.is_file():
        print(f"demo: {PYZ} is missing: run ./demo (it builds it)", file=sys.stderr)
        return 2
    install_signal_handlers()  # SIGTERM/SIGHUP tear down like Ctrl-C
    suite = default_suite()
    server: BareServer | None = None
    remote = GitRemote()
    try:
        say("serving the example apps from a local git daemon")
        remote.start()
        for name in APPS:
            print(f"  {remote.create_repo(name, ROOT / 'tests' / 'apps' / name)}")
        config = render_config(remote)
        hosts = domains(config)

        say(f"booting a throwaway bare Debian ({suite}; the first run builds the cached "
            "rootfs, about a minute; waits if another session's server is up)")
        server = BareServer(suite)
        server.boot()
        print(f"  {server.name} booted in {server.boot_seconds:.1f} s "
              f"(no python3: {not server.exists('/usr/bin/python3')})")
        server.copy_in(PYZ, "/root/fleet.pyz")
        server.copy_in(ROOT / "bootstrap", "/root/bootstrap", 0o755)
        server.write_file("/root/fleet.toml", config)

        say("inside the server: cd /root && sh bootstrap fleet.pyz apply fleet.toml")
        code = stream(server, "cd /root && sh bootstrap fleet.pyz apply fleet.toml")
        print(f"  exit status {code}")

        say("inside the server: fleet status")
        stream(server, "fleet status")

        say("one request per app through the server's nginx (Host header = the app's domain)")
        answered = request_each(server, hosts)

        ok = code == 0 and answered
        say("demo " + ("passed: every app answered with its own content" if ok
                       else "FAILED (see above)"))
        return 0 if ok else 1
    finally:
        print("\n==> tearing down (server and git daemon)", flush=True)
        if server is not None:
            server.destroy()
        remote.stop()
        print(f"  done; total {time.monotonic() - STARTED:.0f} s", flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("demo: interrupted; everything was torn down", file=sys.stderr)
        sys.exit(130)
