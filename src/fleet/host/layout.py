"""Where fleet keeps things on the server: one place, so templates and code agree."""

from __future__ import annotations

from dataclasses import dataclass

ETC = "/etc/fleet"
SERVER_FILE = f"{ETC}/fleet.toml"
APPS_DIR = f"{ETC}/apps"
ENV_DIR = f"{ETC}/env"
STATE_DIR = "/var/lib/fleet"
STATE_APPS = f"{STATE_DIR}/apps"
FLEET_BIN = "/usr/local/bin/fleet"  # where bootstrap installs the zipapp (units run it)
LOCK_FILE = "/run/fleet.host.lock"
# Held by `fleet backup` and `fleet restore` (not the run lock: a long backup does not hold up
# a deploy); apply takes it, without waiting, to sweep what a killed backup left.
BACKUP_LOCK = "/run/fleet.backup.lock"
# What a run owes once the files it changes are written: a daemon-reload, a unit's reload or
# restart (host/pending.py). On tmpfs: after a boot every service has read its files anyway.
PENDING = "/run/fleet.pending"
SRV = "/srv/fleet"
RUN = "/run/fleet"
UWSGI_DIR = "/etc/uwsgi"
EMPEROR_INI = f"{UWSGI_DIR}/emperor.ini"
VASSALS_DIR = f"{UWSGI_DIR}/vassals"
EMPEROR_UNIT_NAME = "fleet-emperor.service"
UNIT_DIR = "/etc/systemd/system"
EMPEROR_UNIT = f"{UNIT_DIR}/{EMPEROR_UNIT_NAME}"
# Enabling a unit is a link in its target's .wants directory (what `systemctl enable` makes).
WORKERS_WANTS = f"{UNIT_DIR}/multi-user.target.wants"
TIMERS_WANTS = f"{UNIT_DIR}/timers.target.wants"
# The gate every job's unit runs as root before a run (skip it while the previous one still
# runs) and after it (record it), and where it keeps those records.
LIB_DIR = "/usr/local/lib/fleet"
JOB_GATE = f"{LIB_DIR}/job-gate"
# An app's build runs this as the app's user: copy the code, install (fleet.server.release).
BUILD_SCRIPT = f"{LIB_DIR}/build"
# cgroup v2 servers: the Emperor starts vassals through this (fleet.server.resource_limits).
VASSAL_WRAPPER = f"{LIB_DIR}/vassal-wrapper"
JOB_RECORDS = f"{STATE_DIR}/jobs"
EMPEROR_STATS = f"{RUN}/emperor-stats.sock"
# Sockets the Emperor binds (as root, mode 0666) for on-demand vassals: root:www-data 0750, so
# only nginx and root reach them. The leading "_" keeps it apart from app names.
ON_DEMAND_DIR = f"{RUN}/_on-demand"
ON_DEMAND_EXTENSION = ".socket"
TMPFILES = "/etc/tmpfiles.d/fleet.conf"
NGINX_DIR = "/etc/nginx"
NGINX_GLOBAL = f"{NGINX_DIR}/conf.d/fleet.conf"
NGINX_SITES = f"{NGINX_DIR}/sites-enabled"
NGINX_DEFAULT_SITE = f"{NGINX_SITES}/default"
NGINX_FLEET_DIR = f"{NGINX_DIR}/fleet"
# Locations of apps served under a prefix of a domain whose server block another app holds.
NGINX_LOCATIONS = f"{NGINX_FLEET_DIR}/locations"
# allow/deny from [server] accept_from, included in every app's server block.
NGINX_ACCESS = f"{NGINX_FLEET_DIR}/access.conf"
# nginx's copies of the apps' htpasswd files (`auth`): root:www-data, 0750 dir, 0640 files.
NGINX_AUTH_DIR = f"{NGINX_FLEET_DIR}/auth"
# The stored htpasswd files `fleet auth` writes (root only, like the rest of /etc/fleet).
AUTH_DIR = f"{ETC}/auth"
LOOPBACK = ("127.0.0.1", "::1")  # always allowed: fleet's health checks come from here
NGINX_USER = "www-data"
SYSTEM_PYTHON = "/usr/bin/python3"
# Each app's private build cache (pip cache, HOME of its builds): BUILD_CACHE/NAME, 0700.
BUILD_CACHE = "/var/cache/fleet"
# What a run rendered, for the next run to skip jinja2 (fleet.host.render_cache): root
# only, 0700 dir, 0600 file. The leading "_" keeps it apart from app names.
RENDER_CACHE_DIR = f"{BUILD_CACHE}/_render"
RENDER_CACHE = f"{RENDER_CACHE_DIR}/renders.marshal"
# git's answers about commits (fleet.host.git_answers), beside the renders, the same kind.
GIT_ANSWERS = f"{RENDER_CACHE_DIR}/git.marshal"
UWSGI_BIN = "/usr/bin/uwsgi-core"
# logrotate: nginx-common ships /etc/logrotate.d/nginx but does not depend on it.
BASE_PACKAGES = ("nginx", "uwsgi-core", "uwsgi-plugin-python3", "python3-venv", "git",
                 "logrotate")


@dataclass(frozen=True)
class AppPaths:
    """Every path that belongs to one app."""

    name: str

    @property
    def home(self) -> str:
        return f"{SRV}/{self.name}"

    @property
    def repo(self) -> str:
        return f"{self.home}/repo.git"

    @property
    def releases(self) -> str:
        return f"{self.home}/releases"

    def release(self, release_id: str) -> str:
        return f"{self.releases}/{release_id}"

    @property
    def venvs(self) -> str:
        return f"{self.home}/venvs"

    def venv(self, key: str) -> str:
        return f"{self.venvs}/{key}"

    @property
    def shared(self) -> str:
        return f"{self.home}/shared"

    @property
    def current(self) -> str:
        return f"{self.home}/current"

    @property
    def run_dir(self) -> str:
        return f"{RUN}/{self.name}"

    def socket(self, release: str) -> str:
        return f"{self.run_dir}/{release}.sock"

    def on_demand_socket(self, release: str) -> str:
        return f"{ON_DEMAND_DIR}/{self.name}@{release}.sock"

    def serving_socket(self, release: str, on_demand: bool) -> str:
        """Where nginx and the health gate reach a release: its own socket, or the Emperor's."""
        return self.on_demand_socket(release) if on_demand else self.socket(release)

    def on_demand_file(self, release: str) -> str:
        """Beside the vassal ini, names the socket the Emperor binds and wakes the vassal on."""
        return self.vassal(release) + ON_DEMAND_EXTENSION

    def stats(self, release: str) -> str:
        return f"{self.run_dir}/{release}.stats"

    def vassal_id(self, release: str) -> str:
        """The Emperor's name for a release's vassal: two can run side by side in a deploy."""
        return f"{self.name}@{release}.ini"

    def vassal(self, release: str) -> str:
        return f"{VASSALS_DIR}/{self.vassal_id(release)}"

    @property
    def env_file(self) -> str:
        return f"{ENV_DIR}/{self.name}.env"

    @property
    def units_env_file(self) -> str:
        """The same environment for systemd's EnvironmentFile= (workers, jobs, fleet run)."""
        return f"{ENV_DIR}/{self.name}.units"

    def worker_unit(self, worker: str) -> str:
        """A worker's template unit; its processes are instances @1..@N."""
        return f"fleet-{self.name}.worker.{worker}@.service"

    def worker_instance(self, worker: str, index: int) -> str:
        return f"fleet-{self.name}.worker.{worker}@{index}.service"

    def job_unit(self, job: str, kind: str = "service") -> str:
        """A job's service (kind "service") or the timer that starts it (kind "timer")."""
        return f"fleet-{self.name}.job.{job}.{kind}"

    @property
    def unit_prefix(self) -> str:
        """Every worker and job unit of the app starts with this (app names have no dot)."""
        return f"fleet-{self.name}."

    @property
    def config_file(self) -> str:
        return f"{APPS_DIR}/{self.name}.toml"

    @property
    def nginx_site(self) -> str:
        return f"{NGINX_SITES}/fleet-{self.name}.conf"

    @property
    def state_file(self) -> str:
        return f"{STATE_APPS}/{self.name}.json"


def unit_owner(filename: str) -> tuple[str, str, str] | None:
    """(app, "worker" or "job", name) of a worker or job unit (or instance) fleet wrote."""
    if not filename.startswith("fleet-") or not filename.endswith((".service", ".timer")):
        return None
    parts = filename[len("fleet-"):].rsplit(".", 1)[0].split(".")
    if len(parts) != 3 or parts[1] not in ("worker", "job"):
        return None
    return parts[0], parts[1], parts[2].split("@", 1)[0]


def vassal_app(filename: str) -> tuple[str, str] | None:
    """(app, release) of a vassal file name written by fleet, else None."""
    if not filename.endswith(".ini") or "@" not in filename:
        return None
    app, _, release = filename[: -len(".ini")].partition("@")
    return app, release


# The server-wide timer that writes fleet.prom for node_exporter ([server.metrics]).
METRICS_UNIT = "fleet-metrics.service"
METRICS_TIMER = "fleet-metrics.timer"
