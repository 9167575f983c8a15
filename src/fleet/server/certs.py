"""Certificates: where each app's certificate lives, what it covers and when it expires, the
operator's own files checked before anything changes, and the backoff after a CA refused.

certbot (Debian's, webroot method) does the ACME work and its own timer renews; fleet only
decides when to ask for a first certificate and reads the results.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from fleet.config.settings import AppConfig, Config, as_app
from fleet.errors import ConfigError
from fleet.host import layout
from fleet.host.actions import Action, Remove, WriteFile
from fleet.host.files import require_file
from fleet.host.machine import FileState, Host

LETSENCRYPT_DIR = "/etc/letsencrypt"
ACME_WEBROOT = f"{layout.STATE_DIR}/acme"
CERT_STATE = f"{layout.STATE_DIR}/certs"
DEPLOY_HOOK = f"{LETSENCRYPT_DIR}/renewal-hooks/deploy/fleet-nginx-reload"
CERTBOT_DROPIN = "/etc/systemd/system/certbot.service.d/fleet.conf"
EXPIRY_WARNING_DAYS = 14
BACKOFF_FIRST = 600.0  # seconds after the first refusal; doubles per failure
BACKOFF_MAX = 86400.0  # Let's Encrypt allows 5 failed validations per name per hour


def lineage(app: str) -> str:
    """certbot's name for the app's certificate: prefixed so operators' own ones never clash."""
    return f"fleet-{app}"


def live_dir(app: str) -> str:
    return f"{LETSENCRYPT_DIR}/live/{lineage(app)}"


def renewal_conf(app: str) -> str:
    return f"{LETSENCRYPT_DIR}/renewal/{lineage(app)}.conf"


def certified(config: Config) -> list[tuple[str, AppConfig]]:
    """Every app whose HTTPS this host serves, with its key in the config: its own apps, and
    the apps it balances as a front (their `tls` moved there from the app servers)."""
    return ([(f"apps.{a.name}", a) for a in config.apps]
            + [(f"front.apps.{f.name}", as_app(f)) for f in config.front])


def has_lineage(host: Host, app: str) -> bool:
    """certbot still holds (and its timer renews) a certificate for the app."""
    return host.state(renewal_conf(app)) is not None or host.state(live_dir(app)) is not None


def served_files(host: Host, app: AppConfig) -> tuple[str, str] | None:
    """(certificate chain, key) nginx should serve for the app, or None: plain HTTP only
    (TLS off, or no ACME certificate issued yet)."""
    if app.tls.mode == "files" and app.tls.cert and app.tls.key:
        return app.tls.cert, app.tls.key
    if app.tls.mode == "acme" and host.state(f"{live_dir(app.name)}/fullchain.pem"):
        return f"{live_dir(app.name)}/fullchain.pem", f"{live_dir(app.name)}/privkey.pem"
    return None


# --------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class CertInfo:
    not_after: datetime
    names: tuple[str, ...]

    def days_left(self, now: float) -> float:
        return (self.not_after.timestamp() - now) / 86400

    def covers(self, domains: tuple[str, ...]) -> bool:
        return set(domains) <= set(self.names)


def parse_x509(output: str) -> CertInfo | None:
    """`openssl x509 -noout -enddate -ext subjectAltName` output -> expiry and DNS names."""
    match = re.search(r"notAfter=(.+)", output)
    if not match:
        return None
    try:
        when = datetime.strptime(" ".join(match.group(1).split()), "%b %d %H:%M:%S %Y %Z")
    except ValueError:
        return None
    names = tuple(re.findall(r"DNS:([^,\s]+)", output))
    return CertInfo(when.replace(tzinfo=timezone.utc), names)


def cert_info(host: Host, path: str) -> CertInfo | None:
    result = host.run(["openssl", "x509", "-noout", "-enddate", "-ext", "subjectAltName",
                       "-in", path], check=False)
    return parse_x509(result.stdout) if result.ok else None


def app_cert_info(host: Host, app: AppConfig) -> CertInfo | None:
    files = served_files(host, app)
    return cert_info(host, files[0]) if files else None


def acme_server(host: Host, app: str) -> str | None:
    """The ACME directory certbot renews the app's certificate from (its renewal conf)."""
    text = (host.read(renewal_conf(app)) or b"").decode(errors="replace")
    match = re.search(r"^server\s*=\s*(\S+)", text, re.MULTILINE)
    return match.group(1) if match else None


def nginx_version(host: Host) -> tuple[int, ...] | None:
    """nginx prints `nginx version: nginx/1.22.1` on stderr; None before it is installed."""
    result = host.run(["nginx", "-v"], check=False)
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", result.stderr + result.stdout)
    return tuple(int(p) for p in match.groups()) if match else None


def site_tls(host: Host, app: AppConfig, version: tuple[int, ...] | None) -> dict | None:
    """What the site template needs to serve the app over HTTPS, or None for HTTP only."""
    files = served_files(host, app)
    if files is None:
        return None
    # `listen ... http2` is deprecated from 1.25.1 on, replaced by `http2 on;`.
    return {"cert": files[0], "key": files[1], "hsts": app.hsts,
            "http2_on": version is not None and version >= (1, 25, 1)}


# --------------------------------------------------------------------------- operator's files


def keypair_problem(cert: bytes, key: bytes) -> str | None:
    """Why nginx could not serve this certificate with this key, or None."""
    import ssl  # here only: `fleet status` imports this module and never needs ssl

    with tempfile.TemporaryDirectory(prefix="fleet-tls-") as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        for path, data in ((cert_path, cert), (key_path, key)):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as handle:
                handle.write(data)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:  # an encrypted key would need a passphrase nginx does not have
            context.load_cert_chain(cert_path, key_path, password=lambda: b"")
        except ssl.SSLError as exc:
            reason = exc.reason or str(exc)
            if "MISMATCH" in reason.upper():
                return "the key does not match the certificate"
            return f"cannot load the certificate and key ({reason})"
    return None


MAX_LINKS = 8
# Where a certificate or key a link points to may not be: places other users or the apps
# can write, or pseudo files.
UNSAFE_PLACES = ("/tmp/", "/var/tmp/", "/dev/", "/proc/", "/sys/", "/run/", f"{layout.SRV}/")


def resolve_tls_file(host: Host, path: str, key: str) -> tuple[str, FileState]:
    """The file a certificate or key setting names, following symlinks as certbot's live/
    layout needs (live/NAME/cert.pem -> ../../archive/NAME/cert1.pem): each link must be
    root's (no one else can re-point it), the file it ends at a root-owned regular file
    outside the places others or the apps can write."""
    current = path
    for _ in range(MAX_LINKS):
        state = host.state(current)
        if state is None:
            raise ConfigError(path, key, "no such file" if current == path
                              else f"its link leads to {current}, which does not exist")
        if state.kind != "link":
            break
        if state.owner != "root":
            raise ConfigError(path, key, f"the link {current} belongs to {state.owner}, "
                                         "not root (anyone who owns it can re-point it)")
        current = posixpath.normpath(posixpath.join(posixpath.dirname(current), state.target))
    else:
        raise ConfigError(path, key, f"more than {MAX_LINKS} links in a row")
    if current != path:
        if state.kind != "file":
            raise ConfigError(path, key, f"its link leads to a {state.kind}, not a file")
        if current.startswith(UNSAFE_PLACES):
            raise ConfigError(path, key, f"its link leads to {current}, where others or "
                                         "the apps can write")
        if state.owner != "root":
            raise ConfigError(path, key, f"its link leads to {current}, owned by "
                                         f"{state.owner}, not root")
        return current, state
    return path, require_file(host, path, key)


def check_tls_files(host: Host, config: Config) -> None:
    """Refuse (exit 2, nothing touched) an app whose own certificate or key is missing,
    unreadable, unsafe or not a pair."""
    for where, app in certified(config):
        if app.tls.mode != "files" or not app.tls.cert or not app.tls.key:
            continue
        data = {}
        for what, path in (("cert", app.tls.cert), ("key", app.tls.key)):
            key = f"{where}.tls.{what}"
            real, state = resolve_tls_file(host, path, key)
            if what == "key" and state.mode & 0o004:
                raise ConfigError(path, key, f"a private key readable by every user "
                                             f"({state.mode:04o}): chmod o-r it")
            data[what] = host.read(real) or b""
        problem = keypair_problem(data["cert"], data["key"])
        if problem:
            raise ConfigError(app.tls.key, f"{where}.tls.key",
                              f"{problem} {app.tls.cert}")


# --------------------------------------------------------------------------- backoff


@dataclass(frozen=True)
class Backoff:
    """Failed requests for one set of names from one CA: no retry before `next_attempt`."""

    wanted: str  # directory and domains the failures were for
    failures: int
    last: float
    message: str
    next_attempt: float

    def blocks(self, wanted: str, now: float) -> bool:
        return wanted == self.wanted and now < self.next_attempt


def wanted_key(config: Config, app: AppConfig) -> str:
    """A changed directory or domain list is a new request: the backoff starts over."""
    return " ".join([config.server.acme.directory, *app.cert_domains])


def state_file(app: str) -> str:
    return f"{CERT_STATE}/{app}.json"


def load_backoff(host: Host, app: str) -> Backoff | None:
    try:
        data = json.loads(host.read(state_file(app)) or b"null")
        return Backoff(str(data["wanted"]), int(data["failures"]), float(data["last"]),
                       str(data["message"]), float(data["next_attempt"])) if data else None
    except (ValueError, KeyError, TypeError):
        return None  # unreadable state: allow a request rather than block forever


def next_backoff(previous: Backoff | None, wanted: str, message: str, now: float) -> Backoff:
    failures = (previous.failures if previous and previous.wanted == wanted else 0) + 1
    delay = min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MAX)
    return Backoff(wanted, failures, now, message, now + delay)


def backoff_actions(app: str, backoff: Backoff | None) -> list[Action]:
    if backoff is None:
        return [Remove(path=state_file(app), why="certificate issued")]
    content = json.dumps(backoff.__dict__, indent=1).encode() + b"\n"
    return [WriteFile(path=state_file(app), content=content, mode=0o600)]


def when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


# --------------------------------------------------------------------------- certbot's words


def ca_message(output: str) -> str:
    """The CA's own reason from certbot's output (its last line only says "see the log")."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    details = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Detail:")]
    if details:
        return "; ".join(dict.fromkeys(details))
    for index, line in enumerate(lines):
        if "urn:ietf:params:acme:error" in line:
            return line
        if line.startswith("An unexpected error occurred") and index + 1 < len(lines):
            return lines[index + 1]
    useful = [line for line in lines if not line.startswith(("Ask for help", "See the logfile",
                                                             "Saving debug log"))]
    return (useful or lines or ["certbot failed without a message"])[-1]


# --------------------------------------------------------------------------- status


def certificate_status(host: Host, app: AppConfig, now: float | None = None) -> dict | None:
    """The served certificate's expiry and names for `status` and `check`; `problem` says
    why it needs attention (expiring within 14 days, names missing, none issued yet)."""
    if app.tls.mode == "off":
        return None
    now = time.time() if now is None else now
    files = served_files(host, app)
    info = cert_info(host, files[0]) if files else None
    if info is None:
        backoff = load_backoff(host, app.name) if app.tls.mode == "acme" else None
        why = f": {backoff.message}" if backoff else ""
        return {"mode": app.tls.mode, "expires": None, "days_left": None, "names": [],
                "problem": f"no certificate served (HTTP only){why}" if files is None
                else f"cannot read {files[0]}"}
    days = info.days_left(now)
    problem = None
    if days < EXPIRY_WARNING_DAYS:
        problem = (f"certificate expired on {info.not_after:%Y-%m-%d}" if days < 0 else
                   f"certificate expires in {days:.0f} days ({info.not_after:%Y-%m-%d})")
    elif not info.covers(app.cert_domains):
        missing = sorted(set(app.cert_domains) - set(info.names))
        problem = f"certificate does not cover {' '.join(missing)}"
    return {"mode": app.tls.mode, "expires": info.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "days_left": int(days), "names": list(info.names), "problem": problem}
