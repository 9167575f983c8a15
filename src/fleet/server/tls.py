"""HTTPS: certbot's setup (webroot, renewal hook, CA bundle for its timer) and each ACME app's
first certificate, requested only once its HTTP site answers the challenge path, with a
backoff after the CA refused so repeated applies never burn its rate limits."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from fleet.config.settings import AppConfig, Config
from fleet.errors import CommandError, FleetError, StepFailed
from fleet.host.actions import Action, Remove, Run, Unknown, WriteFile
from fleet.host.client import answer_errors, http_get
from fleet.host.files import plan_absent, plan_dir, plan_file
from fleet.host.machine import Host
from fleet.host.poll import RealTime, poll
from fleet.host.render import render
from fleet.host.session import Session, Step
from fleet.server import certs
from fleet.server.nginx import apply_reload
from fleet.server.services import plan_service

CERTBOT_TIMER = "certbot.timer"


def packages(config: Config) -> list[str]:
    """certbot for ACME apps; openssl to read expiry dates of any served certificate. A
    front's balanced apps count: their HTTPS terminates there."""
    apps = [app for _, app in certs.certified(config)]
    wanted = []
    if any(a.tls.mode == "acme" for a in apps):
        wanted.append("certbot")
    if any(a.tls.mode != "off" for a in apps):
        wanted.append("openssl")
    return wanted


def plan_acme_client(host: Host, config: Config) -> list[Action]:
    """Webroot, nginx reload after renewals, and the CA bundle for the renewal timer."""
    actions = (plan_dir(host, certs.ACME_WEBROOT, 0o755)
               + plan_dir(host, certs.CERT_STATE, 0o700)
               + plan_dir(host, f"{certs.LETSENCRYPT_DIR}/renewal-hooks", 0o755)
               + plan_dir(host, f"{certs.LETSENCRYPT_DIR}/renewal-hooks/deploy", 0o755)
               + plan_file(host, certs.DEPLOY_HOOK, render("certbot-deploy-hook.j2"), 0o755,
                           why="reload nginx after a renewal"))
    bundle = config.server.acme.ca_bundle
    if bundle:
        dropin = (plan_dir(host, certs.CERTBOT_DROPIN.rsplit("/", 1)[0], 0o755)
                  + plan_file(host, certs.CERTBOT_DROPIN,
                              render("certbot-dropin.conf.j2", ca_bundle=bundle), 0o644,
                              why="renewals trust ca_bundle"))
    else:
        dropin = plan_absent(host, certs.CERTBOT_DROPIN, "no ca_bundle")
    if dropin:
        dropin.append(Run(argv=("systemctl", "daemon-reload"), why="reload systemd units"))
    return actions + dropin + plan_service(host, CERTBOT_TIMER, changed=False)


def certbot_command(config: Config, app: AppConfig, reissue: bool) -> Run:
    acme = config.server.acme
    argv = ["certbot", "certonly", "--non-interactive", "--agree-tos", "--webroot",
            "--webroot-path", certs.ACME_WEBROOT, "--cert-name", certs.lineage(app.name),
            "--server", acme.directory]
    argv += ["--email", acme.email, "--no-eff-email"] if acme.email else \
        ["--register-unsafely-without-email"]
    if reissue:  # same lineage, new names or CA: certbot would otherwise keep the old one
        argv.append("--force-renewal")
    for domain in app.cert_domains:
        argv += ["-d", domain]
    env = (("REQUESTS_CA_BUNDLE", acme.ca_bundle),) if acme.ca_bundle else ()
    return Run(argv=tuple(argv), why=f"request a certificate for {' '.join(app.cert_domains)}",
               env=env, timeout=600)


CHALLENGE_WAIT = 10.0  # seconds the challenge fetch is retried through nginx


def challenge_problem(session: Session, app: AppConfig) -> str | None:
    """Serve a token from the webroot and fetch it through nginx with each domain as Host: the
    CA would fetch the same path. Why it failed, or None."""
    host = session.host
    name = f"fleet-check-{os.urandom(8).hex()}"
    path = f"{certs.ACME_WEBROOT}/.well-known/acme-challenge/{name}"
    token = os.urandom(16).hex().encode()
    for directory in (f"{certs.ACME_WEBROOT}/.well-known",
                      f"{certs.ACME_WEBROOT}/.well-known/acme-challenge"):
        session.act(plan_dir(host, directory, 0o755))
    session.act([WriteFile(path=path, content=token, mode=0o644)])
    try:
        for domain in app.cert_domains:
            problem = fetch_until(domain, f"/.well-known/acme-challenge/{name}", token)
            if problem:
                return f"http://{domain}/.well-known/acme-challenge/ through nginx: {problem}"
        return None
    finally:
        session.act([Remove(path=path)])


def fetch_until(domain: str, path: str, expected: bytes, wait: float = CHALLENGE_WAIT,
                sleep: Callable[[float], None] = time.sleep) -> str | None:
    """fetch_problem, retried for `wait` seconds: `systemctl reload nginx` returns before the
    old workers stop accepting, and for a moment they answer a new site's domain with the
    catch-all's 444 (seen on a front whose site had just been written)."""
    return poll(lambda: fetch_problem(domain, path, expected), lambda problem: problem is None,
                timeout=wait, interval=0.25, clock=RealTime(sleep))


def fetch_problem(domain: str, path: str, expected: bytes) -> str | None:
    try:
        reply = http_get(domain, path, timeout=10.0, user_agent="fleet-acme-check")
    except answer_errors() as exc:  # AnswerError is an OSError
        return f"no answer ({exc.__class__.__name__}: {exc})"
    if reply.status != 200 or reply.body.strip().encode() != expected:
        return f"HTTP {reply.status} without the challenge token"
    return None


def certificate(session: Session, step: Step, config: Config, app: AppConfig) -> bool:
    """Request the app's certificate when it has none covering its names from its CA.
    True when one was issued now (the site must switch to HTTPS)."""
    host = session.host
    info = certs.cert_info(host, f"{certs.live_dir(app.name)}/cert.pem")
    server = certs.acme_server(host, app.name)
    if info and info.covers(app.cert_domains) and server == config.server.acme.directory:
        step.notes.append(f"expires {info.not_after:%Y-%m-%d}")
        return False
    wanted = certs.wanted_key(config, app)
    backoff = certs.load_backoff(host, app.name)
    now = time.time()
    if backoff and backoff.blocks(wanted, now):
        raise FleetError(f"not asking the CA again before {certs.when(backoff.next_attempt)} "
                         f"({backoff.failures} failed requests, the last at "
                         f"{certs.when(backoff.last)}: {backoff.message})")
    run = certbot_command(config, app, reissue=info is not None)
    if session.check:
        session.apply(step, [run])
        return False
    problem = challenge_problem(session, app)
    if problem:  # nothing was asked of the CA: no backoff needed
        raise FleetError(f"not requesting a certificate: {problem}")
    try:
        session.apply(step, [run])
    except CommandError as exc:
        message = certs.ca_message(exc.stdout + "\n" + exc.stderr)
        failed = certs.next_backoff(backoff, wanted, message, now)
        session.act(certs.backoff_actions(app.name, failed))
        step.log = exc.output_tail()
        raise FleetError(f"the CA refused: {message}; the app keeps serving over HTTP; "
                         f"next attempt after {certs.when(failed.next_attempt)}") from None
    if backoff:
        session.apply(step, certs.backoff_actions(app.name, None))
    return True


def converge_tls(config: Config, selected: list[AppConfig], session: Session,
                 ready: Callable[[AppConfig], bool],
                 switch_site: Callable[[AppConfig, Step], bool],
                 holders: Sequence[AppConfig] | None = None) -> None:
    """certbot's setup, then each ready ACME app's certificate; an app whose certificate was
    just issued gets its HTTPS site (tested by `switch_site`) and nginx reloads once.
    `holders` (default: config.apps, so a run for some apps still sets certbot up) decides
    whether certbot is set up at all; a front passes its balanced apps."""
    if not any(a.tls.mode == "acme" for a in (config.apps if holders is None else holders)):
        return
    with session.step("acme client") as step:
        session.apply(step, plan_acme_client(session.host, config))
    switched = False
    for app in selected:
        if app.tls.mode != "acme":
            continue
        if not ready(app):
            if session.check:  # its site depends on steps a plan does not run
                with session.step("certificate", app.name) as step:
                    session.apply(step, [Unknown(what=f"request a certificate for "
                                                 f"{' '.join(app.cert_domains)}")])
            continue
        try:
            with session.step("certificate", app.name) as step:
                issued = certificate(session, step, config, app)
            if issued:
                with session.step("nginx site", app.name) as step:
                    switched |= switch_site(app, step)
        except StepFailed:  # recorded on the step; the app keeps serving over HTTP
            continue
    if switched:
        with session.step("nginx") as step:
            apply_reload(session, step, changed=True)
