"""`fleet push`: apply one operator file to many servers over ssh, canary first, then batches.

Each server gets fleet.pyz, bootstrap and its own share of the file (fleet.inventory), runs
`sh bootstrap fleet.pyz apply fleet.toml --json` and answers with apply's JSON, which is the
whole protocol: the servers need nothing but sshd, and each one converges itself exactly as a
local `fleet apply` would. App servers go before fronts, so a front's upstreams exist when it
checks them.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fleet.inventory import Inventory, Server, host_document
from fleet.ssh import UNREACHABLE, Transport, as_root
from fleet.tomlwrite import dumps

REMOTE_DIR = "/var/lib/fleet/push"  # root-only: the share holds the apps' env secrets
REMOTE_TIMEOUT = 3600.0
FAILED_STATES = ("failed", "unreachable")


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

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATES

    @property
    def healthy(self) -> str:
        passed = sum(1 for a in self.apps.values() if a.get("health") == "passed")
        return f"{passed}/{len(self.apps)}" if self.apps else "-"

    def to_json(self) -> dict[str, object]:
        return {"address": self.address, "role": self.role, "wave": self.wave,
                "status": self.status, **self.counts, "apps": self.apps,
                "error": self.error, "seconds": round(self.seconds, 1)}


@dataclass
class PushResult:
    hosts: list[HostResult]
    stopped: str | None = None  # why hosts were left unstarted

    @property
    def ok(self) -> bool:
        return not any(h.failed for h in self.hosts) and self.stopped is None

    def to_json(self) -> dict[str, object]:
        counts = {state: sum(1 for h in self.hosts if h.status == state)
                  for state in ("ok", "changed", "failed", "unreachable", "skipped")}
        return {"ok": self.ok, "hosts": {h.name: h.to_json() for h in self.hosts},
                "counts": counts, "stopped": self.stopped}


@dataclass(frozen=True)
class Payload:
    """The bytes every host gets besides its share of the config."""

    pyz: bytes
    bootstrap: bytes


def waves(servers: list[Server], batch: int) -> list[tuple[str, list[Server]]]:
    """Canary (first app server) alone, the other app servers, then fronts, `batch` at a time."""
    apps = [s for s in servers if s.role == "app"]
    fronts = [s for s in servers if s.role == "front"]
    result: list[tuple[str, list[Server]]] = []
    if apps:
        result.append(("canary", apps[:1]))
    rest = apps[1:]
    for start in range(0, len(rest), batch):
        result.append((f"batch {len(result)}", rest[start:start + batch]))
    for start in range(0, len(fronts), batch):
        result.append(("fronts", fronts[start:start + batch]))
    return result


def bundle(payload: Payload, share: str) -> bytes:
    """One tar (extracted by the server's tar) instead of three copies: one round trip."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data, mode in (("fleet.pyz", payload.pyz, 0o600),
                                 ("bootstrap", payload.bootstrap, 0o600),
                                 ("fleet.toml", share.encode(), 0o600)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def cause(report: Mapping[str, Any]) -> str | None:
    """The first reason a remote apply gives for failing: an app's error, an abort, a step."""
    apps = report.get("apps") or {}
    errors = [f"{name}: {a['error']}" for name, a in apps.items() if a.get("error")]
    if errors:
        return "; ".join(errors)
    if report.get("aborted"):
        return str(report["aborted"])
    for step in report.get("steps") or []:
        if step.get("status") == "failed":
            return f"{step.get('name')}: {step.get('error')}"
    return None


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def push_host(transport: Transport, server: Server, share: str, payload: Payload, *,
              plan: bool, prune: bool) -> HostResult:
    """Copy, bootstrap, apply (or plan) on one server; never raises for the server's faults."""
    result = HostResult(server.name, server.address, server.role)
    started = time.monotonic()
    try:
        copy = transport.run(server, as_root(server, f"umask 077 && mkdir -p {REMOTE_DIR} && "
                                                     f"tar -C {REMOTE_DIR} -xf -"),
                             input=bundle(payload, share), timeout=600)
        if copy.returncode == UNREACHABLE:
            result.status, result.error = "unreachable", last_line(copy.stderr)
            return result
        if copy.returncode != 0:
            result.status = "failed"
            result.error = f"copying fleet failed: {last_line(copy.stderr)}"
            return result
        verb = "plan" if plan else "apply"
        flags = " --prune" if prune else ""
        command = f"cd {REMOTE_DIR} && sh bootstrap fleet.pyz {verb} fleet.toml --json{flags}"
        run = transport.run(server, as_root(server, command), timeout=REMOTE_TIMEOUT)
        if run.returncode == UNREACHABLE:
            result.status, result.error = "unreachable", last_line(run.stderr)
            return result
        read_report(result, run.returncode, run.stdout, run.stderr)
        return result
    finally:
        result.seconds = time.monotonic() - started


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
    if returncode != 0 or result.counts["failed"] or report.get("aborted"):
        result.status = "failed"
        result.error = cause(report) or f"exit {returncode}: {last_line(stderr)}"
    else:
        result.status = "changed" if result.counts["changed"] else "ok"


def select(inventory: Inventory, limit: list[str]) -> list[Server]:
    """Servers in inventory order, narrowed by --limit (names checked by the caller)."""
    return [s for s in inventory.servers if not limit or s.name in limit]


def push(inventory: Inventory, data: Mapping[str, Any], transport: Transport, payload: Payload,
         *, limit: list[str] = (), batch: int = 1, max_failures: int = 0, plan: bool = False,
         prune: bool = False, progress: Callable[[str], None] = lambda _: None) -> PushResult:
    """Push wave by wave; stop starting hosts once the canary or more than max_failures fail."""
    servers = select(inventory, list(limit))
    results = {s.name: HostResult(s.name, s.address, s.role) for s in servers}
    outcome = PushResult([results[s.name] for s in servers])
    shares = {s.name: dumps(host_document(inventory, data, s.name)) for s in servers}
    for wave, members in waves(servers, max(1, batch)):
        failures = sum(1 for r in outcome.hosts if r.failed)
        if outcome.stopped is None and failures > max_failures:
            outcome.stopped = (f"{failures} host(s) failed, more than --max-failures "
                               f"{max_failures}: later hosts were not started")
        if outcome.stopped is not None:
            for server in members:
                results[server.name].wave = wave
                results[server.name].error = "not started"
            continue
        for server in members:
            progress(f"{wave}: {server.name} ({server.address}) started")
        with ThreadPoolExecutor(max_workers=len(members)) as pool:
            done = list(pool.map(lambda s: push_host(transport, s, shares[s.name], payload,
                                                     plan=plan, prune=prune), members))
        for server, host in zip(members, done, strict=True):
            host.wave = wave
            results[server.name] = host
            progress(f"{wave}: {server.name} {host.status} ({host.counts['changed']} changed, "
                     f"{host.counts['failed']} failed) in {host.seconds:.1f} s"
                     + (f": {host.error}" if host.error else ""))
        outcome.hosts = [results[s.name] for s in servers]
        if wave == "canary" and any(h.failed for h in done):
            outcome.stopped = "the canary failed: no other host was started"
    return outcome
