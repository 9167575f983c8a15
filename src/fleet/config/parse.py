"""The desired state: parse and validate fleet's TOML into typed, frozen settings.

Every problem becomes one ConfigError naming the file, the dotted key and what is wrong,
raised before anything on the server is touched.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from fleet.config.backup import parse_backup
from fleet.config.checker import Checker, type_name
from fleet.config.limits import TOML_MAX_BYTES, TOML_MAX_DEPTH, env_line_problem
from fleet.config.routes import check_routes, parse_prefix, parse_socket
from fleet.config.settings import (
    APP_DEFAULTS,
    HSTS_DEFAULT,
    MODES,
    NOTIFY_EVENTS,
    AcmeSettings,
    AppConfig,
    AuthConfig,
    Config,
    EmperorConfig,
    FrontApp,
    HealthConfig,
    JobConfig,
    MetricsSettings,
    NotifySettings,
    PipSettings,
    ServerConfig,
    TlsConfig,
    WorkerConfig,
    toml_keys,
)
from fleet.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

APP_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
DOMAIN_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
SIZE_RE = re.compile(r"^[0-9]+[kKmMgG]?$")
MODULE_RE = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*(\(\))?)?$")
URL_PREFIX_RE = re.compile(r"^/[A-Za-z0-9._~/-]*$")
PROCESS_RANGE_RE = re.compile(r"^([0-9]{1,3})-([0-9]{1,3})$")
# Every path fleet puts into nginx, uWSGI ini or systemd unit text: no space, quote, ';', '{',
# '$', '%', '\\' or control character can reach those files (each would inject a directive or
# an environment variable), and with no component starting with '-' none reads as an option.
PATH_RE = re.compile(r"[A-Za-z0-9._/@+-]+")
PATH_CHARS = "letters, digits and . _ / @ + -"
# A repo URL or local path reaches git's argv: no whitespace or control characters.
REPO_BAD_RE = re.compile(r"[\s\x00-\x1f\x7f]")
# vassal_set values reach emperor.ini, which uWSGI expands when it reads it (as root):
# $(VAR), @(file), @(exec://cmd), %(placeholder). None of those characters is allowed.
# health.path goes into an HTTP request line: RFC 3986 path and query characters only.
HEALTH_PATH_RE = re.compile(r"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")
VASSAL_VALUE_RE = re.compile(r"[A-Za-z0-9 ._,:/+=*-]*")

# What an omitted key means: read from the settings dataclasses, where each default lives.
SERVER_DEFAULTS = ServerConfig()
ACME_DEFAULTS = AcmeSettings()
EMPEROR_DEFAULTS = EmperorConfig()
HEALTH_DEFAULTS = HealthConfig()
TLS_DEFAULTS = TlsConfig()


# --------------------------------------------------------------------------- sections

# The keys each table allows: the settings dataclasses' fields (see settings.toml_keys).
SERVER_KEYS = toml_keys(ServerConfig)
ACME_KEYS = toml_keys(AcmeSettings)
METRICS_KEYS = toml_keys(MetricsSettings)
TLS_KEYS = toml_keys(TlsConfig)  # of tls = { cert = ..., key = ... }
PIP_KEYS = toml_keys(PipSettings)
NOTIFY_KEYS = toml_keys(NotifySettings)
HEADER_NAME_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
EMPEROR_KEYS = toml_keys(EmperorConfig)
APP_KEYS = toml_keys(AppConfig)
INVENTORY_APP_KEYS = list(AppConfig.KEYS_READ_ELSEWHERE)  # read by fleet push, not kept here
HEALTH_KEYS = toml_keys(HealthConfig)
AUTH_KEYS = toml_keys(AuthConfig)


def parse_server(c: Checker) -> ServerConfig:
    c.check_known(SERVER_KEYS)
    packages = c.get_str_list("packages")
    for index, package in enumerate(packages):
        if not PACKAGE_RE.fullmatch(package):
            c.fail(f"packages[{index}]", f"{package!r} is not a Debian package name")
    pip = c.sub("pip")
    pip.check_known(PIP_KEYS)
    cert = pip.get_str("cert")
    if cert is not None and not cert.startswith("/"):
        pip.fail("cert", "must be an absolute path")
    check_absolute(pip, "cert", cert)
    urls = [("index_url", pip.get_str("index_url"))]
    urls += [(f"extra_index_urls[{i}]", u)
             for i, u in enumerate(pip.get_str_list("extra_index_urls"))]
    for key, url in urls:  # reach pip's environment, the extra ones joined with spaces
        if url is not None and (not url.startswith(("https://", "http://"))
                                or REPO_BAD_RE.search(url)):
            pip.fail(key, "must be an http(s):// URL without whitespace or control characters")
    body = c.get_str("client_max_body_size", SERVER_DEFAULTS.client_max_body_size, pattern=SIZE_RE,
                     what="a size such as 10m, 512k or 1g")
    git_timeout = c.get("git_timeout", (int, float), SERVER_DEFAULTS.git_timeout)
    builder = c.get_str("builder", SERVER_DEFAULTS.builder)
    if builder not in ("uv", "pip"):
        c.fail("builder", f"must be \"uv\" or \"pip\", got {builder!r}")
    if not 1 <= git_timeout <= 86400:
        c.fail("git_timeout", f"must be between 1 and 86400 seconds, got {git_timeout}")
    return ServerConfig(
        git_timeout=float(git_timeout),
        builder=builder,
        packages=packages,
        pip=PipSettings(pip.get_str("index_url"), pip.get_str_list("extra_index_urls"), cert),
        client_max_body_size=body,
        acme=parse_acme(c.sub("acme")),
        metrics=parse_metrics(c.sub("metrics")),
        accept_from=parse_accept_from(c),
        notify=parse_notify(c.sub("notify")),
        backup=parse_backup(c),
    )


def parse_notify(c: Checker) -> NotifySettings:
    """[server.notify]: a webhook URL and/or a command, which events, a signing secret."""
    c.check_known(NOTIFY_KEYS)
    webhook = c.get_str("webhook")
    if webhook is not None and (not webhook.startswith(("https://", "http://"))
                                or REPO_BAD_RE.search(webhook)):
        c.fail("webhook", "must be an http(s):// URL without whitespace or control characters")
    command = c.get_str("command")
    if command is not None and not command.strip():
        c.fail("command", "must not be empty")
    events = c.get_str_list("events")
    for index, event in enumerate(events):
        if event not in NOTIFY_EVENTS:
            c.fail(f"events[{index}]",
                   f"unknown event {event!r} (one of {', '.join(NOTIFY_EVENTS)})")
    headers = c.sub("headers")
    pairs = []
    for name in headers.table:
        value = headers.get_str(str(name))
        if not HEADER_NAME_RE.fullmatch(str(name)):
            headers.fail(str(name), "is not an HTTP header name (letters, digits, -)")
        pairs.append((str(name), value))
    timeout = c.get("timeout", (int, float), 10.0)
    if not 1 <= timeout <= 300:
        c.fail("timeout", f"must be between 1 and 300 seconds, got {timeout}")
    return NotifySettings(webhook=webhook, command=command, events=events,
                          secret=c.get_str("secret"), headers=tuple(pairs),
                          timeout=float(timeout))


def parse_accept_from(c: Checker, name: str = "accept_from") -> tuple[str, ...]:
    """Addresses and networks nginx lets reach the apps (normalized, each once); () = anyone."""
    result: list[str] = []
    for index, item in enumerate(c.get_str_list(name)):
        key = f"{name}[{index}]"
        network = ip_network(item)
        if network is None:
            c.fail(key, f"{item!r} is not an IPv4 or IPv6 address or network "
                        "(such as \"10.0.0.10\" or \"10.0.0.0/24\")")
        if "%" in item:
            c.fail(key, f"{item!r}: nginx takes no IPv6 zone index (%...)")
        if network.network_address != ipaddress.ip_interface(item).ip:
            c.fail(key, f"{item!r} has host bits set: did you mean \"{network}\"?")
        text = (str(network.network_address) if network.prefixlen == network.max_prefixlen
                else str(network))
        if text not in result:
            result.append(text)
    return tuple(result)


def ip_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def check_absolute(c: Checker, key: str, value: str | None) -> str | None:
    """An absolute file path that can be written into nginx, ini and systemd unit text as is."""
    if value is not None and (not value.startswith("/") or ".." in value.split("/")):
        c.fail(key, f"{value!r} must be an absolute path without '..'")
    if value is not None:
        check_path_chars(c, key, value)
    return value


def check_path_chars(c: Checker, key: str, value: str) -> None:
    """Refuse any character that could end a directive or a line in the files fleet renders
    (nginx `alias ...;`, `ssl_certificate ...;`, systemd `Environment=`, uWSGI ini), and any
    component that starts with '-' (it would read as an option where the path meets an argv)."""
    if not PATH_RE.fullmatch(value):
        c.fail(key, f"{value!r} may only use {PATH_CHARS}")
    if any(part.startswith("-") for part in value.split("/")):
        c.fail(key, f"{value!r}: no path component may start with '-'")


def parse_acme(c: Checker) -> AcmeSettings:
    c.check_known(ACME_KEYS)
    email = c.get_str("email")
    if email is not None and not re.fullmatch(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", email):
        c.fail("email", f"{email!r} is not an email address")
    directory = c.get_str("directory", ACME_DEFAULTS.directory)
    if not directory.startswith("https://") or REPO_BAD_RE.search(directory):
        c.fail("directory", f"{directory!r} must be an https:// URL (the ACME directory)")
    return AcmeSettings(email, directory, check_absolute(c, "ca_bundle", c.get_str("ca_bundle")))


def parse_metrics(c: Checker) -> MetricsSettings:
    c.check_known(METRICS_KEYS)
    return MetricsSettings(check_absolute(c, "textfile_dir", c.get_str("textfile_dir")))


def parse_tls(c: Checker) -> TlsConfig:
    """Only the shape here; the files themselves are checked on the server (fleet.server.certs)."""
    value = c.get("tls", (str, dict), TLS_DEFAULTS.mode)
    if isinstance(value, str):
        if value not in ("off", "acme"):
            c.fail("tls", f"{value!r} must be \"off\", \"acme\" or {{ cert = PATH, key = PATH }}")
        return TlsConfig(value)
    files = c.sub("tls")
    files.check_known(TLS_KEYS)
    cert = check_absolute(files, "cert", files.get_str("cert", required=True))
    key = check_absolute(files, "key", files.get_str("key", required=True))
    return TlsConfig("files", cert, key)


def parse_hsts(c: Checker) -> int:
    """true: the default max-age; false or 0: no header; an integer: that max-age."""
    value = c.get("hsts", (bool, int), None)
    if value is None:
        return APP_DEFAULTS.hsts
    if isinstance(value, bool):
        return HSTS_DEFAULT if value else 0
    if not 0 <= value <= 63072000:
        c.fail("hsts", f"max-age must be between 0 and 63072000 seconds, got {value}")
    return value


# The uWSGI options `vassal_set` may pass to every vassal: tuning knobs only. An allow-list,
# not a deny-list: uWSGI has hundreds of options and many run commands or change identity
# (uid, gid, master-as-root, exec-*, hook-*, attach-daemon, cron, mule, plugins, chroot,
# include, socket, logto, route with exec, ...), and a vassal parses its ini as root.
VASSAL_SET_ALLOWED = frozenset({
    "harakiri", "harakiri-verbose", "harakiri-no-arh",
    "max-requests", "max-requests-delta", "min-worker-lifetime", "max-worker-lifetime",
    "reload-on-rss", "reload-on-as", "evil-reload-on-rss", "evil-reload-on-as",
    "reload-mercy", "worker-reload-mercy", "limit-as", "limit-post",
    "post-buffering", "post-buffering-bufsize", "buffer-size", "listen", "socket-timeout",
    "so-keepalive", "chunked-input-limit", "chunked-input-timeout",
    "lazy-apps", "enable-threads", "single-interpreter", "thunder-lock", "offload-threads",
    "optimize", "py-call-osafterfork", "ignore-sigpipe", "ignore-write-errors",
    "disable-write-exception", "memory-report", "disable-logging", "log-4xx", "log-5xx",
    "log-slow", "log-big", "log-zero", "log-sendfile", "log-ioerror", "log-micros",
    "log-x-forwarded-for", "cheaper-algo", "cheaper-overload", "cheaper-step",
    "cheaper-busyness-max", "cheaper-busyness-min", "cheaper-busyness-multiplier",
    "cheaper-busyness-penalty", "cheaper-busyness-backlog-alert",
    "cheaper-busyness-backlog-step", "cheaper-busyness-verbose", "cheaper-rss-limit-soft",
    "cheaper-rss-limit-hard", "max-fd", "auto-procname", "procname-prefix",
    "procname-append", "add-header",
})


def parse_emperor(c: Checker) -> EmperorConfig:
    c.check_known(EMPEROR_KEYS)
    vassal_set = c.sub("vassal_set")
    pairs = []
    for key, value in vassal_set.table.items():
        if not re.fullmatch(r"[a-z][a-z0-9-]*", str(key)):
            vassal_set.fail(str(key), "is not a uWSGI option name")
        if str(key) not in VASSAL_SET_ALLOWED:
            vassal_set.fail(str(key), "is not a uWSGI tuning option fleet passes to vassals "
                                      "(see README, [emperor] vassal_set)")
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, (str, int)):
            vassal_set.fail(str(key), f"expected a string or integer, got {type_name(value)}")
        if not VASSAL_VALUE_RE.fullmatch(str(value)):
            vassal_set.fail(str(key), f"{str(value)!r} may only use letters, digits, spaces "
                                      "and . _ , : / + = * - (uWSGI expands $ @ % ( ) as root)")
        pairs.append((str(key), str(value)))
    return EmperorConfig(thunder_lock=c.get("thunder_lock", bool, EMPEROR_DEFAULTS.thunder_lock),
                         vassal_set=tuple(sorted(pairs)))


def check_domain(c: Checker, key: str, domain: str) -> None:
    labels = domain.split(".")
    if len(domain) > 253 or not all(DOMAIN_LABEL_RE.fullmatch(label) for label in labels):
        c.fail(key, f"{domain!r} is not a valid lower-case domain name")


def check_relative(c: Checker, key: str, value: str) -> str:
    """Refuse absolute paths and any '..' so a path can never leave its base directory."""
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        c.fail(key, f"{value!r} must be a relative path inside the app (no '..', not absolute)")
    check_path_chars(c, key, value)
    return str(path)


def check_env_file_key(c: Checker) -> str | None:
    """Only the path's shape here; owner, mode and content are checked on the server."""
    return check_absolute(c, "env_file", c.get_str("env_file"))


def parse_health(c: Checker) -> HealthConfig:
    c.check_known(HEALTH_KEYS)
    path = c.get_str("path", HEALTH_DEFAULTS.path)
    if not path.startswith("/"):
        c.fail("path", f"{path!r} must start with '/'")
    if not HEALTH_PATH_RE.fullmatch(path):
        c.fail("path", f"{path!r} is not a URL path (no spaces, quotes or control characters; "
                       "percent-encode them)")
    status = c.get("status", (int, list), None)
    statuses: tuple[int, ...] = ()
    if isinstance(status, int):
        statuses = (status,)
    elif isinstance(status, list):
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in status):
            c.fail("status", "expected an integer or a list of integers")
        statuses = tuple(status)
    for s in statuses:
        if not 100 <= s <= 599:
            c.fail("status", f"{s} is not an HTTP status")
    timeout = c.get("timeout", (int, float), HEALTH_DEFAULTS.timeout)
    if not 0 < timeout <= 3600:
        c.fail("timeout", f"must be between 0 and 3600 seconds, got {timeout}")
    return HealthConfig(path, statuses, c.get_str("contains"), float(timeout))


@dataclass(frozen=True)
class Processes:
    """The `processes` key as AppConfig keeps it: a count, or a range's maximum and minimum."""

    processes: int
    min_processes: int | None = None


def parse_processes(c: Checker) -> Processes:
    """`processes`: a fixed count, or "MIN-MAX" for uWSGI's cheaper (fewer workers when quiet)."""
    value = c.get("processes", (int, str), APP_DEFAULTS.processes)
    if isinstance(value, int):
        return Processes(c.get_int("processes", APP_DEFAULTS.processes, 1, 256))
    match = PROCESS_RANGE_RE.fullmatch(value)
    if not match:
        c.fail("processes", f"expected an integer or a range such as \"1-8\", got {value!r}")
    low, high = int(match.group(1)), int(match.group(2))
    if not 1 <= low < high <= 256:
        c.fail("processes", f"range {value!r} must be MIN-MAX with 1 <= MIN < MAX <= 256")
    return Processes(high, low)


def parse_mode(c: Checker) -> tuple[str, int]:
    mode = c.get_str("mode", APP_DEFAULTS.mode)
    if mode not in MODES:
        c.fail("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    if "idle" in c.table and mode != "on-demand":
        c.fail("idle", "only applies with mode = \"on-demand\"")
    return mode, c.get_int("idle", APP_DEFAULTS.idle, 1, 86400)


def parse_app(c: Checker, name: str) -> AppConfig:
    if not APP_NAME_RE.fullmatch(name):
        c.fail("", f"invalid app name {name!r}: use lowercase letters, digits and dashes, "
                   "starting with a letter, at most 32 characters")
    c.check_known(APP_KEYS + INVENTORY_APP_KEYS)
    repo = c.get_str("repo", required=True)
    if not repo.strip():
        c.fail("repo", "must not be empty")
    check_repo(c, repo)
    domains = c.get_str_list("domains", required=True)
    if not domains:
        c.fail("domains", "must list at least one domain")
    for index, domain in enumerate(domains):
        check_domain(c, f"domains[{index}]", domain)
    if len(set(domains)) != len(domains):
        c.fail("domains", "lists the same domain twice")
    ref = c.get_str("ref")
    if ref is not None and (not ref or ref.startswith("-") or REPO_BAD_RE.search(ref)):
        c.fail("ref", f"{ref!r} is not a git branch, tag or commit")
    env = c.sub("env")
    env_pairs = []
    for key, value in env.table.items():
        if not ENV_NAME_RE.fullmatch(str(key)):
            env.fail(str(key), "is not a valid environment variable name")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            env.fail(str(key), f"expected a string or number, got {type_name(value)}")
        if "\n" in str(value) or "\r" in str(value) or "\x00" in str(value):
            env.fail(str(key), "must be a single line")
        check_env_line(env, str(key), str(value))
        env_pairs.append((str(key), str(value)))
    static = c.sub("static")
    static_pairs = []
    for url, directory in static.table.items():
        if not URL_PREFIX_RE.fullmatch(str(url)) or "/../" in f"{url}/" or "//" in str(url):
            static.fail(str(url), "URL prefix must start with '/' and use plain path characters")
        if not isinstance(directory, str):
            static.fail(str(url), f"expected a directory name, got {type_name(directory)}")
        static_pairs.append((str(url), check_relative(static, str(url), directory)))
    c.get_str_list("servers")  # where the app runs: checked by fleet.cluster.inventory, unused here
    c.get_str_list("workers_on")  # likewise, where its workers and its jobs run
    c.get_str("jobs_on")
    persist = c.get_str_list("persist", APP_DEFAULTS.persist)
    for index, item in enumerate(persist):
        check_relative(c, f"persist[{index}]", item)
        if item in (".", ""):
            c.fail(f"persist[{index}]", "must name a directory inside the app")
    user = c.get_str("user", APP_DEFAULTS.user, pattern=APP_NAME_RE, what="a valid user name")
    if user == "root":
        c.fail("user", "apps never run as root")
    processes = parse_processes(c)
    threads = c.get_int("threads", APP_DEFAULTS.threads, 1, 256)
    mode, idle = parse_mode(c)
    return AppConfig(
        name=name,
        repo=repo,
        ref=ref,
        path=check_relative(c, "path", c.get_str("path", APP_DEFAULTS.path)),
        domains=domains,
        module=c.get_str("module", APP_DEFAULTS.module, pattern=MODULE_RE,
                         what="a module spec such as 'wsgi:app' or 'pkg:create_app()'"),
        processes=processes.processes,
        min_processes=processes.min_processes,
        threads=threads,
        env=tuple(sorted(env_pairs)),
        static=tuple(sorted(static_pairs)),
        user=user,
        health=parse_health(c.sub("health")),
        persist=persist,
        keep_releases=c.get_int("keep_releases", APP_DEFAULTS.keep_releases, 1, 100),
        init=c.get_str("init"),
        init_timeout=c.get_int("init_timeout", APP_DEFAULTS.init_timeout, 1, 86400),
        env_file=check_env_file_key(c),
        mode=mode,
        idle=idle,
        tls=parse_tls(c),
        hsts=parse_hsts(c),
        prefix=parse_prefix(c),
        socket=parse_socket(c, mode == "on-demand"),
        **parse_door(c, domains),
        workers=parse_workers(c),
        jobs=parse_jobs(c),
        **parse_limits(c, processes.processes, threads),
    )


MEMORY_RE = re.compile(r"([1-9][0-9]{0,6})([KMG])")
MEMORY_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}
MEMORY_MIN = 32 * 2**20


def parse_limits(c: Checker, processes: int, threads: int) -> dict[str, Any]:
    """memory, cpu, tasks and timeout: checked against what the app itself needs to run."""
    memory = None
    text = c.get_str("memory")
    if text is not None:
        found = MEMORY_RE.fullmatch(text)
        if not found:
            c.fail("memory", f"{text!r} is not a size such as '512M' or '2G'")
        memory = int(found[1]) * MEMORY_UNITS[found[2]]
        if memory < MEMORY_MIN:
            c.fail("memory", f"{text!r} is below 32M: too little for a Python app")
    cpu = c.get_int("cpu", 0, 1, 6400) if "cpu" in c.table else None
    tasks = c.get_int("tasks", 0, 1, 1_000_000) if "tasks" in c.table else None
    workers = sum(w.processes for w in parse_workers(c))
    # A deploy runs two releases side by side (workers, threads and master each), beside
    # the app's workers; a few more for a job, an init or `fleet run`.
    needed = 2 * (processes * threads + 2) + workers + 4
    if tasks is not None and tasks < needed:
        c.fail("tasks", f"{tasks} is too low for the app's own processes and threads (it "
                        f"needs at least {needed}: two releases run side by side in a deploy)")
    return {"memory": memory, "cpu": cpu, "tasks": tasks,
            "timeout": c.get_int("timeout", APP_DEFAULTS.timeout, 1, 86400)}


# A worker's or job's command runs under /bin/sh -c; fleet quotes it for the unit file.
COMMAND_MAX = 4096
# What systemd calendar specs are made of ("daily", "Mon *-*-* 03:00", "*:0/5", "UTC"...);
# the system's own parser (fleet.config.schedules) then checks the value itself.
SCHEDULE_RE = re.compile(r"[A-Za-z0-9 *:/,.~+_-]{1,128}")


def parse_command(c: Checker) -> str:
    command = c.get_str("command", required=True)
    if not command.strip():
        c.fail("command", "must not be empty")
    if len(command) > COMMAND_MAX:
        c.fail("command", f"longer than {COMMAND_MAX} characters")
    return command


def named_tables(c: Checker, key: str) -> list[tuple[str, Checker]]:
    """[apps.X.workers.NAME] / [apps.X.jobs.NAME]: names follow app-name rules (they are
    part of systemd unit names)."""
    tables = c.sub(key)
    found = []
    for name in tables.table:
        if not APP_NAME_RE.fullmatch(str(name)):
            tables.fail(str(name), f"invalid name {name!r}: use lowercase letters, digits and "
                                   "dashes, starting with a letter, at most 32 characters")
        found.append((str(name), tables.sub(str(name))))
    return found


def parse_workers(c: Checker) -> tuple[WorkerConfig, ...]:
    workers = []
    for name, w in named_tables(c, "workers"):
        w.check_known(toml_keys(WorkerConfig))
        default = WorkerConfig(name=name, command="")
        workers.append(WorkerConfig(
            name=name, command=parse_command(w),
            processes=w.get_int("processes", default.processes, 1, 64),
            stop_timeout=w.get_int("stop_timeout", default.stop_timeout, 1, 3600)))
    return tuple(sorted(workers, key=lambda w: w.name))


def parse_jobs(c: Checker) -> tuple[JobConfig, ...]:
    jobs = []
    for name, j in named_tables(c, "jobs"):
        j.check_known(toml_keys(JobConfig))
        default = JobConfig(name=name, command="", schedule="")
        jobs.append(JobConfig(
            name=name, command=parse_command(j),
            schedule=j.get_str("schedule", required=True, pattern=SCHEDULE_RE,
                               what="a systemd calendar expression such as 'daily' or "
                                    "'*-*-* 03:00'"),
            timeout=j.get_int("timeout", default.timeout, 1, 7 * 86400)))
    return tuple(sorted(jobs, key=lambda j: j.name))


# Header names: an RFC 7230 token subset. Values: printable ASCII without quotes, '\\', '$',
# ';', '{' or '}', so nothing can end nginx's quoted string, expand a variable or start a
# directive. fleet's own headers are not the operator's to set.
HEADER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
HEADER_VALUE_RE = re.compile(r"[A-Za-z0-9 !#%&()*+,./:<=>?@\[\]^_`|~-]{1,1024}")
RESERVED_HEADERS = ("x-fleet-site", "x-fleet-probe", "strict-transport-security", "retry-after")
RATE_RE = re.compile(r"[1-9][0-9]{0,5}r/[sm]")
MESSAGE_MAX = 500


def parse_door(c: Checker, domains: tuple[str, ...]) -> dict[str, Any]:
    """The app's door controls: what nginx does before a request reaches it."""
    body = c.get_str("client_max_body_size", APP_DEFAULTS.client_max_body_size, pattern=SIZE_RE,
                     what="a size such as 10m, 512k or 1g")
    redirect_from = c.get_str_list("redirect_from")
    for index, domain in enumerate(redirect_from):
        check_domain(c, f"redirect_from[{index}]", domain)
        if domain in domains:
            c.fail(f"redirect_from[{index}]", f"{domain!r} is one of the app's own domains")
    if len(set(redirect_from)) != len(redirect_from):
        c.fail("redirect_from", "lists the same domain twice")
    message = c.get_str("maintenance_message", APP_DEFAULTS.maintenance_message)
    if len(message) > MESSAGE_MAX or any(ord(ch) < 32 or ord(ch) == 127 for ch in message):
        c.fail("maintenance_message", f"must be one line of at most {MESSAGE_MAX} characters "
                                      "without control characters")
    rate = c.get_str("rate_limit", APP_DEFAULTS.rate_limit, pattern=RATE_RE,
                     what="a rate such as \"10r/s\" or \"600r/m\"")
    if "burst" in c.table and rate is None:
        c.fail("burst", "only applies with rate_limit")
    return {
        "client_max_body_size": body,
        "headers": parse_headers(c.sub("headers")),
        "redirect_from": redirect_from,
        "maintenance": c.get("maintenance", bool, APP_DEFAULTS.maintenance),
        "maintenance_message": message,
        "auth": parse_auth(c),
        "allow": parse_accept_from(c, "allow"),
        "rate_limit": rate,
        "burst": c.get_int("burst", APP_DEFAULTS.burst, 0, 100000),
    }


def parse_headers(c: Checker) -> tuple[tuple[str, str], ...]:
    pairs: dict[str, tuple[str, str]] = {}
    for name, value in c.table.items():
        name = str(name)
        if not HEADER_NAME_RE.fullmatch(name):
            c.fail(name, "is not an HTTP header name (letters, digits and '-')")
        if name.lower() in RESERVED_HEADERS:
            c.fail(name, "is set by fleet itself")
        if name.lower() in pairs:
            c.fail(name, "is given twice (header names ignore case)")
        if not isinstance(value, str):
            c.fail(name, f"expected a string, got {type_name(value)}")
        if not HEADER_VALUE_RE.fullmatch(value) or value != value.strip():
            c.fail(name, f"{value!r} must be printable ASCII without quotes, '\\', '$', ';', "
                         "'{' or '}' (at most 1024 characters)")
        pairs[name.lower()] = (name, value)
    return tuple(sorted(pairs.values()))


def parse_auth(c: Checker) -> AuthConfig | None:
    if "auth" not in c.table:
        return None
    auth = c.sub("auth")
    auth.check_known(AUTH_KEYS)
    return AuthConfig(check_absolute(auth, "users", auth.get_str("users", required=True)))


def check_repo(c: Checker, repo: str) -> None:
    """The URL reaches git's argv: '-' first would make it an option (`--upload-pack=...`)."""
    if repo.startswith("-"):
        c.fail("repo", f"{repo!r} must not start with '-'")
    if REPO_BAD_RE.search(repo):
        c.fail("repo", "must not contain whitespace or control characters")


def check_env_line(c: Checker, key: str, value: str) -> None:
    """uWSGI splits a longer line silently: its tail would become another variable."""
    problem = env_line_problem(key, value)
    if problem:
        c.fail(key, problem)


def check_across_apps(source: str, apps: list[AppConfig]) -> None:
    check_routes(source, apps)  # domain + prefix, locations, TCP addresses
    users: dict[str, str] = {}
    for app in apps:
        if app.owner in users:
            raise ConfigError(source, f"apps.{app.name}.user",
                              f"user {app.owner!r} is already used by app {users[app.owner]!r}")
        users[app.owner] = app.name
    names = {domain: app.name for app in apps for domain in app.domains}
    for app in apps:
        for index, domain in enumerate(app.redirect_from):
            if domain in names:
                raise ConfigError(source, f"apps.{app.name}.redirect_from[{index}]",
                                  f"{domain!r} is already used by app {names[domain]!r}")
            names[domain] = app.name


def check_front_against_apps(source: str, front: tuple[FrontApp, ...],
                             apps: list[AppConfig]) -> None:
    """A name or a domain is a local app's or a balanced app's, never both: they would share
    one certificate lineage, one nginx site and one `fleet check` result. Checked here, where
    apply, add-app and deploy --ref all pass."""
    local = {app.name: app for app in apps}
    domains = {domain for app in apps for domain in app.domains}
    for balanced in front:
        if balanced.name in local:
            raise ConfigError(source, f"front.apps.{balanced.name}",
                              f"{balanced.name!r} is also a local app ([apps.{balanced.name}])")
        for domain in balanced.domains:
            if domain in domains:
                raise ConfigError(source, f"front.apps.{balanced.name}.domains",
                                  f"{domain!r} is also served by a local app")


# --------------------------------------------------------------------------- entry points


def parse_toml(source: str, text: str) -> dict[str, Any]:
    """Parse TOML within fleet's limits: a huge or deeply nested file is one ConfigError,
    never a traceback (the parser recurses once per nesting level)."""
    size = len(text.encode(errors="surrogateescape"))
    if size > TOML_MAX_BYTES:
        raise ConfigError(source, "", f"is {size} bytes; fleet reads at most {TOML_MAX_BYTES}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"invalid TOML: {exc}") from None
    except RecursionError:
        data = None
    if data is None or nesting_depth(data) > TOML_MAX_DEPTH:
        raise ConfigError(source, "", f"tables and arrays nest deeper than {TOML_MAX_DEPTH} "
                                      "levels")
    return data


def nesting_depth(data: Any) -> int:
    """How deep tables and arrays nest, counted without recursion (the input is untrusted)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > TOML_MAX_DEPTH:
            break
        children = value.values() if isinstance(value, dict) else value
        stack += [(v, depth + 1) for v in children if isinstance(v, (dict, list))]
    return deepest


# front: a front server's upstreams; servers: fleet push's inventory (ignored by apply).
TOP_KEYS = toml_keys(Config) + list(Config.KEYS_READ_ELSEWHERE)


def parse_document(source: str, data: Mapping[str, Any]) -> tuple[
        ServerConfig | None, EmperorConfig | None, dict[str, AppConfig]]:
    """Parse one operator file; sections it omits come back as None so they can be merged."""
    top = Checker(source, "", data)
    top.check_known(TOP_KEYS)
    server = parse_server(top.sub("server")) if "server" in data else None
    emperor = parse_emperor(top.sub("emperor")) if "emperor" in data else None
    apps_table = top.sub("apps")
    apps = {str(n): parse_app(apps_table.sub(str(n)), str(n)) for n in apps_table.table}
    return server, emperor, apps


def parse_app_document(source: str, name: str, data: Mapping[str, Any]) -> AppConfig:
    """Parse a stored apps/NAME.toml, whose keys sit at the top level."""
    return parse_app(Checker(source, "", data), name)


def build_config(source: str, server: ServerConfig | None, emperor: EmperorConfig | None,
                 apps: Mapping[str, AppConfig], front: tuple[FrontApp, ...] = ()) -> Config:
    ordered = [apps[name] for name in sorted(apps)]
    check_across_apps(source, ordered)
    check_front_against_apps(source, front, ordered)
    return Config(server or ServerConfig(), emperor or EmperorConfig(), tuple(ordered), front)


# --------------------------------------------------------------------------- [front] on a server
FRONT_APP_KEYS = toml_keys(FrontApp)
UPSTREAM_RE = re.compile(r"^[A-Za-z0-9.:_\[\]-]+:[0-9]{1,5}$")


def parse_front(c: Checker) -> tuple[FrontApp, ...]:
    """The [front] table a front server applies (written by `fleet push`, or by hand)."""
    c.check_known(["apps"])
    apps = c.sub("apps")
    result = []
    for name in sorted(apps.table):
        app = apps.sub(str(name))
        if not APP_NAME_RE.fullmatch(str(name)):
            app.fail("", f"invalid app name {name!r}")
        app.check_known(FRONT_APP_KEYS)
        domains = app.get_str_list("domains", required=True)
        if not domains:
            app.fail("domains", "must list at least one domain")
        for index, domain in enumerate(domains):
            check_domain(app, f"domains[{index}]", domain)
        upstreams = app.get_str_list("upstreams", required=True)
        if not upstreams:
            app.fail("upstreams", "must list at least one app server (address:port)")
        for index, item in enumerate(upstreams):
            if not UPSTREAM_RE.fullmatch(item):
                app.fail(f"upstreams[{index}]", f"{item!r} is not ADDRESS:PORT")
        result.append(FrontApp(str(name), domains, upstreams, parse_health(app.sub("health")),
                               parse_tls(app), parse_hsts(app), **parse_door(app, domains)))
    return tuple(result)
