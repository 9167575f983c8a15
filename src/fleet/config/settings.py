"""fleet's settings as typed, frozen values: what fleet.config.parse produces from TOML.

Every default lives here, as a field's default, and nowhere else: the parser reads each key's
default from these classes (APP_DEFAULTS and the classes' own no-argument instances), so a
default is changed in one place.

The keys each TOML table allows are these classes' fields too (toml_keys), so adding a key
means: the field, its check in fleet.config.parse (if more than a type), the template that
uses it, README and a test.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

# Field metadata naming a field's TOML key when it differs from the field's name, or None
# for a field no key sets directly (a table's name, or a value derived from another key).
TOML = "toml"
NOT_A_KEY = {TOML: None}


def toml_keys(cls: Any) -> list[str]:
    """The keys that set `cls`'s fields, in field order. A table may also hold the keys
    others read from it: the class's KEYS_READ_ELSEWHERE, which are not kept here."""
    keys = [f.metadata.get(TOML, f.name) for f in fields(cls)]
    return [k for k in keys if k is not None]

MODES = ("always", "on-demand")


@dataclass(frozen=True)
class PipSettings:
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    cert: str | None = None


# Without `memory`, a web worker is recycled above this RSS (MiB): about 9 times what a Flask
# worker uses (28 MiB measured, bench/README.md "Density"), so only a leak or a runaway
# request reaches it.
RECYCLE_MB = 256

LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
HSTS_DEFAULT = 15768000  # half a year: long enough to matter, short enough to back out of
# The callable uWSGI loads when a module spec names none (`module = "wsgi"`).
UWSGI_CALLABLE = "application"


@dataclass(frozen=True)
class AcmeSettings:
    email: str | None = None
    directory: str = LETSENCRYPT
    ca_bundle: str | None = None  # trusted for the ACME directory (a private CA)


@dataclass(frozen=True)
class MetricsSettings:
    """[server.metrics]: where a timer writes fleet.prom for node_exporter (None: no timer)."""

    textfile_dir: str | None = None


@dataclass(frozen=True)
class TlsConfig:
    """`off`, `acme` (certificates from [server.acme]) or `files` (the operator's cert/key)."""

    mode: str = field(default="off", metadata=NOT_A_KEY)  # from `tls`'s form, not a key of its own
    cert: str | None = None
    key: str | None = None


# What [server.notify] can report (README "Notifications"); `events` names a subset.
NOTIFY_EVENTS = ("deploy.succeeded", "deploy.failed", "rollback", "health.red", "health.green",
                 "certificate.failed", "backup.failed")


@dataclass(frozen=True)
class NotifySettings:
    """[server.notify]: where fleet's events go (a webhook and/or a command); off when neither.
    `secret` signs each webhook body (HMAC-SHA256) and, like `headers`, is never shown."""

    webhook: str | None = None
    command: str | None = None
    events: tuple[str, ...] = ()  # empty: every event
    secret: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0  # seconds one webhook POST or command may take

    @property
    def enabled(self) -> bool:
        return bool(self.webhook or self.command)

    def wants(self, event: str) -> bool:
        return not self.events or event in self.events
# restic's keep policy keys, as `forget --keep-KEY N` takes them.
KEEP_KEYS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True)
class BackupSettings:
    """[server.backup]: where restic keeps the apps' snapshots, and when fleet makes them.
    Present (even empty) means backups are used: restic is installed."""

    repository: str = "/var/backups/fleet/restic"  # a directory, or sftp:, s3:, rest: ...
    password_file: str = "/etc/fleet/backup.password"  # root-only; made when missing
    schedule: str | None = None  # systemd calendar; None: no timer
    keep: tuple[tuple[str, int], ...] = ()  # restic keep policy, KEEP_KEYS
    env: tuple[tuple[str, str], ...] = ()  # extra restic environment (secrets: masked)


@dataclass(frozen=True)
class ServerConfig:
    packages: tuple[str, ...] = ()
    pip: PipSettings = field(default_factory=PipSettings)
    client_max_body_size: str = "10m"
    acme: AcmeSettings = field(default_factory=AcmeSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    # Who may reach the apps through nginx: addresses or networks (plus loopback); () = anyone.
    accept_from: tuple[str, ...] = ()
    # Longest a clone, fetch or ls-remote of an app's repo may take (a hung git server).
    git_timeout: float = 900.0
    # What installs the apps' dependencies: "uv" (fleet installs a pinned uv; pip when that
    # fails) or "pip".
    builder: str = "uv"
    notify: NotifySettings = field(default_factory=NotifySettings)
    backup: BackupSettings | None = None  # None: no [server.backup], no restic


@dataclass(frozen=True)
class EmperorConfig:
    thunder_lock: bool = True
    vassal_set: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class HealthConfig:
    path: str = "/"
    status: tuple[int, ...] = ()  # empty: any 2xx or 3xx
    contains: str | None = None
    timeout: float = 30.0

    def accepts(self, status: int) -> bool:
        if self.status:
            return status in self.status
        return 200 <= status < 400


@dataclass(frozen=True)
class AuthConfig:
    """HTTP basic auth: `users` is the stored htpasswd file (root-only); nginx reads a copy."""

    users: str


@dataclass(frozen=True)
class WorkerConfig:
    """A long-running process beside the web app (a queue worker): systemd instances 1..N."""

    name: str = field(metadata=NOT_A_KEY)  # the table's name
    command: str
    processes: int = 1
    stop_timeout: int = 30  # seconds between SIGTERM and SIGKILL


@dataclass(frozen=True)
class JobConfig:
    """A command run on a schedule (systemd calendar syntax) by a systemd timer."""

    name: str = field(metadata=NOT_A_KEY)  # the table's name
    command: str
    schedule: str
    timeout: int = 3600  # seconds; then the run's whole process tree is killed


@dataclass(frozen=True)
class AppConfig:
    # Where the app runs, and where its workers and jobs do: read by fleet push
    # (fleet.cluster.inventory), unused on a server.
    KEYS_READ_ELSEWHERE: ClassVar[tuple[str, ...]] = ("servers", "workers_on", "jobs_on")

    name: str = field(metadata=NOT_A_KEY)  # the table's name
    repo: str
    domains: tuple[str, ...]
    ref: str | None = None
    path: str = "."
    module: str = "wsgi:app"
    processes: int = 2  # the maximum when min_processes is set
    # processes = "MIN-MAX": uWSGI's cheaper keeps MIN
    min_processes: int | None = field(default=None, metadata=NOT_A_KEY)
    threads: int = 1
    env: tuple[tuple[str, str], ...] = ()
    static: tuple[tuple[str, str], ...] = ()
    user: str = ""
    health: HealthConfig = field(default_factory=HealthConfig)
    persist: tuple[str, ...] = ("instance",)
    keep_releases: int = 5
    init: str | None = None
    init_timeout: int = 1800  # seconds; then init's whole process tree is killed
    env_file: str | None = None  # root-only KEY=VALUE file merged under `env`
    mode: str = "always"  # or "on-demand": the Emperor starts the vassal on a request
    idle: int = 600  # on-demand: seconds without a request before the vassal stops
    tls: TlsConfig = field(default_factory=TlsConfig)
    hsts: int = HSTS_DEFAULT  # Strict-Transport-Security max-age with TLS on; 0: none
    prefix: str = "/"  # URL path under its domains; the app sees it as SCRIPT_NAME
    socket: str = "unix"  # or "tcp:HOST:PORT"
    # Door controls: what nginx does in front of the app (issue 20).
    client_max_body_size: str | None = None  # None: the server's
    headers: tuple[tuple[str, str], ...] = ()  # added to every response of the app
    redirect_from: tuple[str, ...] = ()  # domains answering 301 to the app's first domain
    maintenance: bool = False  # 503 + Retry-After for visitors; fleet's probes pass
    maintenance_message: str = "This site is down for maintenance. Please try again soon."
    auth: AuthConfig | None = None
    allow: tuple[str, ...] = ()  # client addresses or networks; () = anyone
    rate_limit: str | None = None  # nginx limit_req rate per client address, "10r/s"
    burst: int = 0
    # Background processes and scheduled commands, deployed with the web release (issue 16).
    workers: tuple[WorkerConfig, ...] = ()
    jobs: tuple[JobConfig, ...] = ()
    # Limits of everything the app runs (issue 18); None: no limit of that kind.
    memory: int | None = None  # bytes, all of the app's processes together ("512M" in TOML)
    cpu: int | None = None  # percent of one core
    tasks: int | None = None  # processes and threads of the app's user
    timeout: int = 55  # seconds a request may run before uWSGI kills and replaces its worker

    @property
    def limited(self) -> bool:
        """Whether the app has a slice of its own (memory, cpu or tasks)."""
        return self.memory is not None or self.cpu is not None or self.tasks is not None

    @property
    def recycle_mb(self) -> int:
        """RSS (MiB) above which uWSGI recycles one web worker: the app's memory shared out
        among its workers, or RECYCLE_MB."""
        if self.memory is None:
            return RECYCLE_MB
        return max(16, self.memory // 2**20 // self.processes)

    @property
    def cert_domains(self) -> tuple[str, ...]:
        """Names its certificate must cover: its domains and those redirected to it."""
        return self.domains + self.redirect_from

    @property
    def on_demand(self) -> bool:
        return self.mode == "on-demand"

    @property
    def tcp_address(self) -> str | None:
        """HOST:PORT the vassal binds, or None for a unix socket in the app's run dir."""
        return self.socket[len("tcp:"):] if self.socket.startswith("tcp:") else None

    @property
    def mount_target(self) -> str:
        """`module` as uWSGI's `mount` option needs it, which has no default callable of its
        own: a spec without one gets uWSGI's usual `application`."""
        return self.module if ":" in self.module else f"{self.module}:{UWSGI_CALLABLE}"

    def url(self, path: str) -> str:
        """A path of the app (health, static) as visitors request it: under its prefix."""
        return path if self.prefix == "/" else self.prefix + path

    @property
    def owner(self) -> str:
        return self.user or self.name


# What every optional key of an app means when it is left out (name, repo and domains are
# required; the values here only fill the signature).
APP_DEFAULTS = AppConfig(name="", repo="", domains=())


@dataclass(frozen=True)
class Config:
    # servers: fleet push's inventory (ignored by apply).
    KEYS_READ_ELSEWHERE: ClassVar[tuple[str, ...]] = ("servers",)

    server: ServerConfig
    emperor: EmperorConfig
    apps: tuple[AppConfig, ...]
    front: tuple[FrontApp, ...] = ()  # a front server's balanced apps ([front], from fleet push)

    def app(self, name: str) -> AppConfig | None:
        return next((a for a in self.apps if a.name == name), None)


@dataclass(frozen=True)
class FrontApp:
    """One app as a front server sees it: domains, the app servers behind it, its check, and
    its HTTPS (terminated at the front, as `tls` and `hsts` of a standalone app)."""

    name: str = field(metadata=NOT_A_KEY)  # the table's name
    domains: tuple[str, ...]
    upstreams: tuple[str, ...]
    health: HealthConfig = field(default_factory=HealthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    hsts: int = HSTS_DEFAULT
    # Door controls, applied here when the app has fronts (fleet push moves them): behind a
    # front, app servers see only the front's address and its health checks.
    client_max_body_size: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    redirect_from: tuple[str, ...] = ()
    maintenance: bool = False
    maintenance_message: str = AppConfig.maintenance_message
    auth: AuthConfig | None = None
    allow: tuple[str, ...] = ()
    rate_limit: str | None = None
    burst: int = 0


DOOR_KEYS = ("client_max_body_size", "headers", "redirect_from", "maintenance",
             "maintenance_message", "auth", "allow", "rate_limit", "burst")


def as_app(front: FrontApp) -> AppConfig:
    """A balanced app as the health check and the certificate code see it (domains, health,
    tls, hsts): the front gets its certificate exactly as a standalone app does."""
    return AppConfig(name=front.name, repo="-", domains=front.domains, health=front.health,
                     tls=front.tls, hsts=front.hsts,
                     **{key: getattr(front, key) for key in DOOR_KEYS})
