"""`fleet push`: apply one operator file to many servers over ssh, canary first, then batches.

Each server gets fleet.pyz, bootstrap and its own share of the file (fleet.cluster.inventory), runs
`sh bootstrap fleet.pyz apply fleet.toml --json` and answers with apply's JSON, which is the
whole protocol: the servers need nothing but sshd, and each one converges itself exactly as a
local `fleet apply` would. App servers go before fronts, so a front's upstreams exist when it
checks them.

When the inventory has fronts, an app server whose plan shows changes is drained on every front
(`fleet drain` there) before its apply and put back (`fleet undrain`, which first checks the
app from the front) after it: a front never sends a new request to a server mid-deploy.

Two bounds, two jobs: --batch is how many app servers may be changing (out of rotation) at
once, --parallel how many hosts fleet talks to at once. After the canary, every other host of
a group (app servers, then fronts) is checked `parallel` at a time: copied, then asked
`apply --hold-changes`, which plans and, when nothing would change, applies in the same start
of fleet (a no-op, never drained: one copy and one fleet start per host). Only the hosts
that would change answer with their plan, untouched, and wait for a batch. A no-op push to
many servers thus costs a few rounds of `parallel` hosts, not one round per batch.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import tarfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from tomli_w import dumps

from fleet.cluster.inventory import Inventory, Server, host_document, upstream
from fleet.cluster.ssh import UNREACHABLE, Transport, as_root
from fleet.host import layout
from fleet.host.session import Status

REMOTE_DIR = "/var/lib/fleet/push"  # root-only: the share holds the apps' env secrets
INSTALLED_FLEET = "/usr/local/bin/fleet"  # where bootstrap installs the zipapp
NEEDS_FLEET = 91  # the light copy's answer when the server's fleet is another one
REMOTE_TIMEOUT = 3600.0
PARALLEL = 10  # hosts at a time: each costs the operator's machine an ssh and a thread
FAILED_STATES = ("failed", "unreachable")
CHANGING = (Status.CHANGED.value, Status.PENDING.value, Status.FAILED.value)


@dataclass
class Rotation:
    """What the fronts did with one app server around its deploy (epoch seconds)."""

    out: tuple[float, float] | None = None  # drain began .. every front had drained it
    back: tuple[float, float] | None = None  # undrain began .. every front had answered
    applied: tuple[float, float] | None = None  # its apply ran from .. to
    fronts: dict[str, dict[str, Any]] = field(default_factory=dict)  # front -> app -> state

    @property
    def drained(self) -> dict[str, list[str]]:
        """front -> the apps it took this server out of rotation for."""
        return {front: [app for app, s in apps.items() if s.get("state") == "drained"]
                for front, apps in self.fronts.items()}

    def kept_out(self, after: dict[str, dict[str, Any]]) -> list[str]:
        return [f"{front}: {app} ({s.get('detail', '')})" for front, apps in after.items()
                for app, s in apps.items() if s.get("state") == "kept"]

    def to_json(self) -> dict[str, object]:
        return {"out": span(self.out), "back": span(self.back), "applied": span(self.applied),
                "fronts": self.fronts}


def span(times: tuple[float, float] | None) -> list[float] | None:
    return list(times) if times else None


@dataclass
class HostResult:
    """What one server reported (or why it could not)."""

    name: str
    address: str
    role: str
    wave: str = ""
    status: str = "skipped"  # ok | changed | failed | unreachable | skipped
    counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "changed": 0, "failed": 0})
    apps: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    rotation: Rotation | None = None
    changes: list[str] = field(default_factory=list)  # "STEP [APP]: action", as plan shows
    held: bool = False  # copied and planned, would change: waits for its batch

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATES

    @property
    def healthy(self) -> str:
        # An on-demand app left asleep (unchanged) passed its last check and was not woken.
        passed = sum(1 for a in self.apps.values() if a.get("health") in ("passed", "sleeping"))
        return f"{passed}/{len(self.apps)}" if self.apps else "-"

    def to_json(self) -> dict[str, object]:
        return {"address": self.address, "role": self.role, "wave": self.wave,
                "status": self.status, **self.counts, "apps": self.apps,
                "error": self.error, "seconds": round(self.seconds, 1), "changes": self.changes,
                "rotation": self.rotation.to_json() if self.rotation else None}


@dataclass
class Wave:
    """One round of hosts handled together, and how long it took (the operator's wait)."""

    name: str
    hosts: list[str]
    seconds: float

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "hosts": self.hosts, "seconds": round(self.seconds, 1)}

    def line(self) -> str:
        return f"{self.name}: {len(self.hosts)} host(s) in {self.seconds:.1f} s"


@dataclass
class PushResult:
    hosts: list[HostResult]
    stopped: str | None = None  # why hosts were left unstarted
    waves: list[Wave] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(h.failed for h in self.hosts) and self.stopped is None

    def to_json(self) -> dict[str, object]:
        counts = {state: sum(1 for h in self.hosts if h.status == state)
                  for state in ("ok", "changed", "failed", "unreachable", "skipped")}
        return {"ok": self.ok, "hosts": {h.name: h.to_json() for h in self.hosts},
                "counts": counts, "stopped": self.stopped,
                "waves": [w.to_json() for w in self.waves]}


@dataclass(frozen=True)
class Payload:
    """The bytes every host gets besides its share of the config."""

    pyz: bytes
    bootstrap: bytes
    operator: str = ""  # who pushes (user@host or --operator): each host's audit log names them

    @cached_property
    def pyz_sha256(self) -> str:
        """Hashed once per push: a server whose installed fleet has it needs no copy."""
        return hashlib.sha256(self.pyz).hexdigest()


def operator_env(operator: str) -> str:
    """`FLEET_OPERATOR=... ` before the remote fleet: its audit lines name the operator."""
    return f"FLEET_OPERATOR={shlex.quote(operator)} " if operator else ""


def groups(servers: list[Server]) -> list[tuple[str, list[Server]]]:
    """The canary (first app server) alone, then the other app servers, then the fronts."""
    apps = [s for s in servers if s.role == "app"]
    fronts = [s for s in servers if s.role == "front"]
    named = [("canary", apps[:1]), ("app servers", apps[1:]), ("fronts", fronts)]
    return [(name, members) for name, members in named if members]


def chunks(items: list[Server], size: int) -> list[list[Server]]:
    return [items[start:start + size] for start in range(0, len(items), max(1, size))]


def bundle(payload: Payload, share: str, *, with_fleet: bool = True) -> bytes:
    """One tar (extracted by the server's tar) instead of three copies: one round trip."""
    out = io.BytesIO()
    files = [("bootstrap", payload.bootstrap), ("fleet.toml", share.encode())]
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in [("fleet.pyz", payload.pyz)] * with_fleet + files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


EXCEPTION_RE = re.compile(r"\b([A-Za-z_][\w.]*(?:Error|Exception)\b.*)$")


def cause(report: Mapping[str, Any]) -> str | None:
    """The first reason a remote apply gives for failing: an app's error (with the last
    exception its log shows: the line an operator looks for first), an abort, a step."""
    apps = report.get("apps") or {}
    errors = []
    for name, app in apps.items():
        if app.get("error"):
            raised = last_exception(report, name)
            errors.append(f"{name}: {app['error']}" + (f" [{raised}]" if raised else ""))
    if errors:
        return "; ".join(errors)
    if report.get("aborted"):
        return str(report["aborted"])
    for step in report.get("steps") or []:
        if step.get("status") == "failed":
            return f"{step.get('name')}: {step.get('error')}"
    return None


def last_exception(report: Mapping[str, Any], app: str) -> str | None:
    """The last `SomethingError: ...` line in the logs of the app's failed steps."""
    found = None
    for step in report.get("steps") or []:
        if step.get("status") == "failed" and step.get("app") == app and step.get("log"):
            for line in str(step["log"]).splitlines():
                match = EXCEPTION_RE.search(line)
                if match:
                    found = match.group(1).strip()
    return found


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def remote(transport: Transport, server: Server, args: str, timeout: float = REMOTE_TIMEOUT,
           operator: str = "") -> tuple[int, bytes, str]:
    """`sh bootstrap fleet.pyz ARGS` in the pushed directory (fleet installs itself)."""
    run = transport.run(server, as_root(server, f"cd {REMOTE_DIR} && {operator_env(operator)}"
                                                f"sh bootstrap fleet.pyz {args}"),
                        timeout=timeout)
    return run.returncode, run.stdout, run.stderr


def copy_bundle(transport: Transport, server: Server, payload: Payload,
                share: str) -> tuple[str, str] | None:
    """Put fleet, bootstrap and the share in REMOTE_DIR; None, or (status, error).

    The zipapp (about 9 MB) goes only to a server whose installed fleet is not this very
    file (its sha256): elsewhere bootstrap and the share are sent, and fleet.pyz there
    becomes a link to the installed fleet, which bootstrap then finds already installed. A
    push of an unchanged fleet sends a few KB per host, in as many round trips as before."""
    copy = transport.run(server, as_root(server, (
        f"umask 077 && mkdir -p {REMOTE_DIR} && tar -C {REMOTE_DIR} -xf - && "
        f"if printf '%s  %s\\n' {payload.pyz_sha256} {INSTALLED_FLEET} | "
        f"sha256sum --check --status 2>/dev/null; "
        f"then ln -sfn {INSTALLED_FLEET} {REMOTE_DIR}/fleet.pyz; else exit {NEEDS_FLEET}; fi")),
        input=bundle(payload, share, with_fleet=False), timeout=600)
    if copy.returncode == NEEDS_FLEET:
        copy = transport.run(server, as_root(server, (
            f"umask 077 && mkdir -p {REMOTE_DIR} && rm -f {REMOTE_DIR}/fleet.pyz && "
            f"tar -C {REMOTE_DIR} -xf -")), input=bundle(payload, share), timeout=600)
    if copy.returncode == UNREACHABLE:
        return "unreachable", last_line(copy.stderr)
    if copy.returncode != 0:
        return "failed", f"copying fleet failed: {last_line(copy.stderr)}"
    return None


class Gate:
    """The fronts of a push: drains an app server on each of them and puts it back.

    Every front of the inventory takes part, --limit or not: a front that balances an app
    server keeps sending it requests whether or not the front itself is being pushed."""

    def __init__(self, transport: Transport, fronts: list[Server], shares: dict[str, str],
                 payload: Payload, progress: Callable[[str], None] = lambda _: None) -> None:
        self.transport, self.fronts, self.shares, self.payload = transport, fronts, shares, payload
        self.progress = progress
        self.lock = threading.Lock()
        self.copied: dict[str, str | None] = {}  # front -> why fleet could not be copied

    def ready(self, front: Server) -> str | None:
        """Copy fleet to the front once per push (a front on an older fleet has no drain)."""
        with self.lock:
            if front.name not in self.copied:
                failure = copy_bundle(self.transport, front, self.payload,
                                      self.shares[front.name])
                self.copied[front.name] = ": ".join(failure) if failure else None
            return self.copied[front.name]

    def rotate(self, verb: str, front: Server, target: str, apps: list[str]
               ) -> tuple[dict[str, Any], str | None]:
        """Run `fleet drain|undrain` on one front: (app -> state, error). A front fleet never
        set up has nothing to drain."""
        error = self.ready(front)
        if error:
            return {}, error
        args = " ".join([verb, shlex.quote(target), *(f"--app {shlex.quote(a)}" for a in apps),
                         "--json"])
        run = self.transport.run(front, as_root(front, (
            f"if [ -f {layout.SERVER_FILE} ]; then cd {REMOTE_DIR} && "
            f"{operator_env(self.payload.operator)}sh bootstrap fleet.pyz "
            f"{args}; else echo '{{\"apps\": {{}}}}'; fi")), timeout=600)
        code, stdout, stderr = run.returncode, run.stdout, run.stderr
        if code == UNREACHABLE:
            return {}, f"unreachable: {last_line(stderr)}"
        try:
            states = dict(json.loads(stdout.decode(errors="replace"))["apps"])
        except (ValueError, KeyError, TypeError):
            return {}, f"{verb} failed (exit {code}): {last_line(stderr)}"
        if code != 0 and verb == "drain":
            return states, f"drain failed (exit {code}): {last_line(stderr)}"
        return states, None

    def tell(self, server: Server, front: Server, done: str, states: dict[str, Any],
             error: str | None) -> None:
        """One progress line per front: which apps moved, which did not and why."""
        if error:
            self.progress(f"{server.name}: {front.name} failed: {error}")
            return
        moved = [app for app, s in states.items() if s.get("state") in ("drained", "restored")]
        other = [f"{app} {s.get('state')} ({s.get('detail', '')})" for app, s in states.items()
                 if app not in moved]
        if moved:
            self.progress(f"{server.name}: {done} on {front.name} for {', '.join(moved)}")
        if other:
            self.progress(f"{server.name}: on {front.name}: {'; '.join(other)}")

    def drain(self, server: Server, apps: list[str], rotation: Rotation) -> str | None:
        """Take `server` out on every front; on an error, put it back where it was taken out."""
        began = time.time()
        for front in self.fronts:
            states, error = self.rotate("drain", front, upstream(server), apps)
            rotation.fronts[front.name] = states
            self.tell(server, front, "out of rotation", states, error)
            if error:
                self.undrain(server, rotation)
                return f"not deployed: could not take it out of rotation on {front.name}: {error}"
        rotation.out = (began, time.time())
        return None

    def undrain(self, server: Server, rotation: Rotation) -> list[str]:
        """Put `server` back on every front that took it out; returns what stays out."""
        after: dict[str, dict[str, Any]] = {}
        problems = []
        began = time.time()
        for front in self.fronts:
            apps = rotation.drained.get(front.name)
            if not apps:
                continue
            states, error = self.rotate("undrain", front, upstream(server), apps)
            after[front.name] = states
            self.tell(server, front, "back in rotation", states, error)
            if error:
                problems.append(f"{front.name}: {error}")
        rotation.back = (began, time.time())
        rotation.fronts = {name: {**rotation.fronts.get(name, {}), **after.get(name, {})}
                           for name in rotation.fronts}
        return problems + rotation.kept_out(after)


def push_host(transport: Transport, server: Server, share: str, payload: Payload, *,
              plan: bool, prune: bool, gate: Gate | None = None,
              apps: Sequence[str] = (), hold: bool = False) -> HostResult:
    """Copy, bootstrap, apply (or plan) on one server; never raises for the server's faults.
    With a gate, an app server that will change is out of the fronts' rotation meanwhile.
    With hold, a server whose plan shows changes stops there (`held`): deploy() takes it
    up again in its batch.

    Whether a server will change is its own `apply --hold-changes` answer: one start of
    fleet there plans and, with nothing to change, applies (a no-op host is done in one
    round trip); a host that would change answers with its plan and is left untouched."""
    result = HostResult(server.name, server.address, server.role)
    started = time.monotonic()
    flags = " --prune" if prune else ""
    try:
        failure = copy_bundle(transport, server, payload, share)
        if failure:
            result.status, result.error = failure
            return result
        if plan:
            return finish(result, *remote(transport, server, f"plan fleet.toml --json{flags}"))
        if gate is None and not hold:  # nothing to decide: apply straight away
            return deploy(transport, server, result, prune=prune, gate=None,
                          operator=payload.operator)
        code, stdout, stderr = remote(transport, server,
                                      f"apply fleet.toml --json --hold-changes{flags}",
                                      operator=payload.operator)
        if code == UNREACHABLE or not was_held(stdout):
            return finish(result, code, stdout, stderr)  # applied: there was nothing to change
        if hold:
            result.held = True
            return result
        return deploy(transport, server, result, prune=prune, gate=gate, apps=apps,
                      operator=payload.operator)
    finally:
        result.seconds += time.monotonic() - started


def deploy(transport: Transport, server: Server, result: HostResult, *, prune: bool,
           gate: Gate | None, apps: Sequence[str] = (), operator: str = "") -> HostResult:
    """Apply on a server fleet was copied to; with a gate, out of the fronts' rotation
    meanwhile (a server the plan showed changes for)."""
    started = time.monotonic()
    result.held = False
    try:
        if gate is not None:
            result.rotation = Rotation()
            error = gate.drain(server, list(apps), result.rotation)
            if error:
                result.status, result.error = "failed", error
                return result
        begun = time.time()
        finish(result, *remote(transport, server,
                               "apply fleet.toml --json" + (" --prune" if prune else ""),
                               operator=operator))
        if result.rotation is not None:
            result.rotation.applied = (begun, time.time())
            kept = gate.undrain(server, result.rotation) if gate is not None else []
            if kept and not result.failed:
                result.status = "failed"
                result.error = "still out of rotation: " + "; ".join(kept)
        return result
    finally:
        result.seconds += time.monotonic() - started


def was_held(stdout: bytes) -> bool:
    """Whether `apply --hold-changes` left the server untouched because it would change. An
    unreadable answer counts as held: the apply that follows (out of rotation) says why."""
    try:
        report = json.loads(stdout.decode(errors="replace"))
        return not isinstance(report, dict) or report.get("held") is not False
    except ValueError:
        return True


def finish(result: HostResult, code: int, stdout: bytes, stderr: str) -> HostResult:
    if code == UNREACHABLE:
        result.status, result.error = "unreachable", last_line(stderr)
    else:
        read_report(result, code, stdout, stderr)
    return result


def changed_actions(report: Mapping[str, Any]) -> list[str]:
    """Each action of the steps that changed (or would): a host's plan in a few lines."""
    lines = []
    for step in report.get("steps") or []:
        if step.get("status") in CHANGING:
            label = " ".join(str(p) for p in (step.get("name"), step.get("app")) if p)
            lines += [f"{label}: {action}" for action in step.get("actions") or []]
    return lines


def read_report(result: HostResult, returncode: int, stdout: bytes, stderr: str) -> None:
    try:
        report = json.loads(stdout.decode(errors="replace"))
        if not isinstance(report, dict):
            raise ValueError("not an object")
    except ValueError:
        result.status = "failed"
        result.error = f"exit {returncode}, no JSON report: {last_line(stderr)}"
        return
    result.counts = {k: int(report.get(k, 0)) for k in ("ok", "changed", "failed")}
    result.apps = dict(report.get("apps") or {})
    result.changes = changed_actions(report)
    if returncode != 0 or result.counts["failed"] or report.get("aborted"):
        result.status = "failed"
        result.error = cause(report) or f"exit {returncode}: {last_line(stderr)}"
    else:
        result.status = "changed" if result.counts["changed"] else "ok"


def out_of_rotation(host: HostResult) -> str:
    rotation = host.rotation
    if rotation is None or rotation.out is None or rotation.back is None:
        return ""
    return f", out of the fronts' rotation for {rotation.back[1] - rotation.out[0]:.1f} s"


def select(inventory: Inventory, limit: list[str]) -> list[Server]:
    """Servers in inventory order, narrowed by --limit (names checked by the caller)."""
    return [s for s in inventory.servers if not limit or s.name in limit]


class Pusher:
    """One push's state: the results so far, why it stopped, the waves and their times."""

    def __init__(self, inventory: Inventory, transport: Transport,
                 payload: Payload, servers: list[Server], shares: dict[str, str], *,
                 plan: bool, prune: bool, gate: Gate | None, max_failures: int,
                 parallel: int, progress: Callable[[str], None]) -> None:
        self.inventory, self.transport, self.payload = inventory, transport, payload
        self.servers, self.plan, self.prune, self.gate = servers, plan, prune, gate
        self.max_failures, self.parallel, self.progress = max_failures, parallel, progress
        self.shares = shares
        self.results = {s.name: HostResult(s.name, s.address, s.role) for s in servers}
        self.outcome = PushResult([self.results[s.name] for s in servers])

    def may_start(self) -> bool:
        """False once the canary or more than max_failures hosts failed (and says why)."""
        failures = sum(1 for r in self.results.values() if r.failed)
        if self.outcome.stopped is None and failures > self.max_failures:
            self.outcome.stopped = (f"{failures} host(s) failed, more than --max-failures "
                                    f"{self.max_failures}: later hosts were not started")
        return self.outcome.stopped is None

    def skip(self, wave: str, members: list[Server]) -> None:
        for server in members:
            host = self.results[server.name]
            host.wave = wave
            host.error = ("not deployed: stopped before its batch" if host.held
                          else "not started")
            host.status, host.held = "skipped", False

    def wave(self, wave: str, members: list[Server],
             work: Callable[[Server], HostResult]) -> list[HostResult]:
        """Run `work` on each member, `parallel` at a time; one line per host once it is done
        (whole lines, never interleaved), then the wave's time."""
        at_once = max(1, min(self.parallel, len(members)))
        self.progress(f"{wave}: {len(members)} host(s), {at_once} at a time: "
                      + ", ".join(f"{s.name} ({s.address})" for s in members))
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=at_once) as pool:
            done = list(pool.map(work, members))
        for server, host in zip(members, done, strict=True):
            host.wave = wave
            self.results[server.name] = host
            if host.held:
                self.progress(f"{wave}: {server.name} would change: waits for its batch")
                continue
            self.progress(f"{wave}: {server.name} {host.status} ({host.counts['changed']} "
                          f"changed, {host.counts['failed']} failed) in {host.seconds:.1f} s"
                          + out_of_rotation(host) + (f": {host.error}" if host.error else ""))
        timing = Wave(wave, [s.name for s in members], time.monotonic() - started)
        self.outcome.waves.append(timing)
        self.progress(timing.line())
        return done

    def host(self, server: Server, hold: bool) -> HostResult:
        return push_host(self.transport, server, self.shares[server.name], self.payload,
                         plan=self.plan, prune=self.prune,
                         gate=self.gate if server.role == "app" else None,
                         apps=self.inventory.apps_on(server.name), hold=hold)

    def resume(self, server: Server) -> HostResult:
        return deploy(self.transport, server, self.results[server.name], prune=self.prune,
                      gate=self.gate if server.role == "app" else None,
                      apps=self.inventory.apps_on(server.name), operator=self.payload.operator)

    def group(self, name: str, members: list[Server], batch: int) -> None:
        """Check every member (`parallel` at a time), then deploy the ones that would change,
        `batch` at a time. The canary is a group of one that deploys straight away."""
        if not self.may_start():
            self.skip(name, members)
            return
        canary = name == "canary"
        done = self.wave(name, members, lambda s: self.host(s, hold=not canary))
        if canary and any(h.failed for h in done):
            self.outcome.stopped = "the canary failed: no other host was started"
        held = [s for s, h in zip(members, done, strict=True) if h.held]
        prefix = "batch" if name == "app servers" else f"{name} batch"
        for index, members_ in enumerate(chunks(held, batch), start=1):
            if not self.may_start():
                self.skip(f"{prefix} {index}", members_)
                continue
            self.wave(f"{prefix} {index}", members_, self.resume)


def push(inventory: Inventory, data: Mapping[str, Any], transport: Transport, payload: Payload,
         *, limit: list[str] = (), batch: int = 1, max_failures: int = 0, plan: bool = False,
         prune: bool = False, drain: bool = True, parallel: int = PARALLEL,
         progress: Callable[[str], None] = lambda _: None) -> PushResult:
    """Push group by group (canary, app servers, fronts); stop starting hosts once the canary
    or more than max_failures failed. Progress lines may come from several threads: each is
    printed whole, under one lock."""
    servers = select(inventory, list(limit))
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            progress(line)

    shares = {s.name: dumps(host_document(inventory, data, s.name))
              for s in [*servers, *inventory.fronts]}
    gate = Gate(transport, inventory.fronts, shares, payload, say) \
        if drain and inventory.fronts and not plan else None
    pusher = Pusher(inventory, transport, payload, servers, shares, plan=plan, prune=prune,
                    gate=gate, max_failures=max_failures, parallel=max(1, parallel),
                    progress=say)
    for name, members in groups(servers):
        pusher.group(name, members, max(1, batch))
    pusher.outcome.hosts = [pusher.results[s.name] for s in servers]
    return pusher.outcome
