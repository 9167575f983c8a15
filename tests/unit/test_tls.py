"""HTTPS: config, certificate facts, the CA's words, backoff, operator files, and the order
of issuance in converge (in memory; the real CA is exercised in tests/e2e/test_tls.py)."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import pytest

from fleet.cli import remove as remove_cmd
from fleet.config.settings import HSTS_DEFAULT, LETSENCRYPT
from fleet.config.store import desired_state, plan_store
from fleet.converge import front as front_mod
from fleet.errors import ConfigError
from fleet.host.actions import Unknown
from fleet.host.executor import perform_all
from fleet.host.machine import RunResult
from fleet.host.session import Session
from fleet.server import certs
from fleet.server import tls as tls_res
from fleet.server.health import HealthResult
from fleet.server.rotation import drain, undrain
from fleet.server.status import front_status
from tests.unit import support as tc
from tests.unit.fakehost import Entry, FakeHost
from tests.unit.support import fleet_main

pytestmark = pytest.mark.usefixtures("healthy")  # no real health checks, gates or waits


ACME_APP = """
[server.acme]
email = "ops@example.com"
directory = "https://ca.test/dir"
ca_bundle = "/etc/ca.pem"
[apps.alpha]
repo = "git://remote/alpha.git"
domains = ["alpha.test", "www.alpha.test"]
tls = "acme"
"""
X509 = """notAfter=Dec 25 13:47:13 2030 GMT
X509v3 Subject Alternative Name: \n    DNS:alpha.test, DNS:www.alpha.test
"""
CERTBOT_REFUSED = """Saving debug log to /var/log/letsencrypt/letsencrypt.log
Requesting a certificate for alpha.test

Certbot failed to authenticate some domains (authenticator: webroot). The Certificate Authority reported these problems:
  Domain: alpha.test
  Type:   unauthorized
  Detail: 127.0.0.1: Invalid response from http://alpha.test/.well-known/acme-challenge/x: 404

Hint: The Certificate Authority failed to download the temporary challenge files.

Some challenges have failed.
Ask for help or search for solutions at https://community.letsencrypt.org. See the logfile /var/log/letsencrypt/letsencrypt.log or re-run Certbot with -v for more details.
"""  # noqa: E501
CERTBOT_DELETE_FAILED = """Saving debug log to /var/log/letsencrypt/letsencrypt.log
Unable to delete fleet-alpha: /etc/letsencrypt/archive/fleet-alpha is read-only
Ask for help or search for solutions at https://community.letsencrypt.org. See the logfile /var/log/letsencrypt/letsencrypt.log or re-run Certbot with -v for more details.
"""  # noqa: E501
CERTBOT_UNEXPECTED = """An unexpected error occurred:
urn:ietf:params:acme:error:rejectedIdentifier :: Error creating new order :: Cannot issue
Ask for help or search for solutions at https://community.letsencrypt.org.
"""


def parse(text: str):
    return desired_state(FakeHost(), "fleet.toml", text).config


# ----------------------------------------------------------------------------- config


def test_tls_defaults_off_and_acme_defaults_to_letsencrypt() -> None:
    app = parse('[apps.a]\nrepo = "r"\ndomains = ["a.test"]\n').apps[0]
    assert app.tls.mode == "off" and app.hsts == HSTS_DEFAULT
    cfg = parse('[server.acme]\n[apps.a]\nrepo = "r"\ndomains = ["a.test"]\ntls = "acme"\n'
                "hsts = false\n")
    assert cfg.server.acme.directory == LETSENCRYPT and cfg.apps[0].hsts == 0


@pytest.mark.parametrize("text, key, problem", [
    ('tls = "on"', "apps.a.tls", "must be"),
    ('tls = { cert = "/c.pem" }', "apps.a.tls.key", "required"),
    ('tls = { cert = "c.pem", key = "/k" }', "apps.a.tls.cert", "absolute"),
    ('tls = { cert = "/c", key = "/k", chain = "/x" }', "apps.a.tls.chain", "unknown"),
    ("hsts = -1", "apps.a.hsts", "between"),
])
def test_bad_tls_keys_name_file_and_key(text: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(f'[apps.a]\nrepo = "r"\ndomains = ["a.test"]\n{text}\n')
    assert err.value.source == "fleet.toml" and err.value.key == key
    assert problem in err.value.problem


@pytest.mark.parametrize("line, key", [
    ('directory = "http://ca.test/dir"', "server.acme.directory"),
    ('email = "nobody"', "server.acme.email"),
    ('ca_bundle = "ca.pem"', "server.acme.ca_bundle"),
])
def test_bad_acme_settings(line: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(f"[server.acme]\n{line}\n")
    assert err.value.key == key


# ----------------------------------------------------------------------------- facts


def test_parse_x509_reads_expiry_and_names() -> None:
    info = certs.parse_x509(X509)
    assert info is not None and info.not_after.year == 2030
    assert info.names == ("alpha.test", "www.alpha.test")
    assert info.covers(("alpha.test",)) and not info.covers(("alpha.test", "new.test"))
    assert certs.parse_x509("unable to load certificate") is None


def test_ca_message_is_the_cas_reason_not_certbots_last_line() -> None:
    assert certs.ca_message(CERTBOT_REFUSED) == (
        "127.0.0.1: Invalid response from "
        "http://alpha.test/.well-known/acme-challenge/x: 404")
    assert certs.ca_message(CERTBOT_UNEXPECTED).startswith(
        "urn:ietf:params:acme:error:rejectedIdentifier")
    assert certs.ca_message("") == "certbot failed without a message"


def test_backoff_doubles_is_capped_and_restarts_for_a_new_request() -> None:
    first = certs.next_backoff(None, "ca a.test", "no", 1000.0)
    assert (first.failures, first.next_attempt) == (1, 1000.0 + certs.BACKOFF_FIRST)
    second = certs.next_backoff(first, "ca a.test", "no", 2000.0)
    assert second.next_attempt == 2000.0 + 2 * certs.BACKOFF_FIRST
    many = first
    for _ in range(20):
        many = certs.next_backoff(many, "ca a.test", "no", 0.0)
    assert many.next_attempt == certs.BACKOFF_MAX
    assert second.blocks("ca a.test", 2001.0) and not second.blocks("ca a.test b.test", 2001.0)
    assert certs.next_backoff(second, "ca b.test", "no", 0.0).failures == 1


@pytest.fixture(scope="module")
def keypairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("keys")
    files = {}
    for name in ("a", "b"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "2", "-keyout", tmp / f"{name}.key", "-out", tmp / f"{name}.pem",
                        "-subj", f"/CN={name}.test"], check=True, capture_output=True)
        files[f"{name}.key"] = Path(tmp / f"{name}.key").read_bytes()
        files[f"{name}.pem"] = Path(tmp / f"{name}.pem").read_bytes()
    return files


def test_keypair_problem_tells_a_mismatch(keypairs: dict[str, bytes]) -> None:
    assert certs.keypair_problem(keypairs["a.pem"], keypairs["a.key"]) is None
    assert "does not match" in (certs.keypair_problem(keypairs["a.pem"], keypairs["b.key"])
                                or "")
    assert "cannot load" in (certs.keypair_problem(b"junk", keypairs["a.key"]) or "")


OWN_APP = '[apps.own]\nrepo = "r"\ndomains = ["own.test"]\n' \
          'tls = { cert = "/etc/ssl/own.pem", key = "/etc/ssl/own.key" }\n'


@pytest.mark.parametrize("files, key, problem", [
    ({"own.pem": ("a.pem", 0o644)}, "apps.own.tls.key", "no such file"),
    ({"own.key": ("a.key", 0o600)}, "apps.own.tls.cert", "no such file"),
    ({"own.pem": ("a.pem", 0o644), "own.key": ("b.key", 0o600)}, "apps.own.tls.key",
     "does not match"),
    ({"own.pem": ("a.pem", 0o644), "own.key": ("a.key", 0o644)}, "apps.own.tls.key",
     "readable by every user"),
])
def test_operator_files_are_refused_before_anything_changes(keypairs, files, key,
                                                            problem) -> None:
    host = FakeHost()
    host.files["/etc/ssl"] = Entry("dir", mode=0o755)
    for name, (source, mode) in files.items():
        host.write(f"/etc/ssl/{name}", keypairs[source], mode, "root", "root")
    cfg = desired_state(host, "fleet.toml", OWN_APP).config
    with pytest.raises(ConfigError) as err:
        certs.check_tls_files(host, cfg)
    assert err.value.key == key and problem in err.value.problem
    assert err.value.source.startswith("/etc/ssl/own.")


def test_matching_operator_files_pass_and_are_served(keypairs) -> None:
    host = FakeHost()
    host.files["/etc/ssl"] = Entry("dir", mode=0o755)
    host.write("/etc/ssl/own.pem", keypairs["a.pem"], 0o644, "root", "root")
    host.write("/etc/ssl/own.key", keypairs["a.key"], 0o600, "root", "root")
    cfg = desired_state(host, "fleet.toml", OWN_APP).config
    certs.check_tls_files(host, cfg)
    assert certs.served_files(host, cfg.apps[0]) == ("/etc/ssl/own.pem", "/etc/ssl/own.key")


# ----------------------------------------------------------------------------- converge


class FakeCA:
    """certbot and openssl on the fake host: issue (write the lineage) or refuse."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.requests = 0
        self.deletes: list[str] = []
        self.delete_fails = False

    def __call__(self, host: FakeHost, argv: list[str]) -> RunResult | None:
        if argv[:2] == ["certbot", "delete"]:
            self.deletes.append(argv[argv.index("--cert-name") + 1])
            if self.delete_fails:
                return RunResult(1, "", CERTBOT_DELETE_FAILED)
            host.remove(certs.live_dir("alpha"))
            host.remove(certs.renewal_conf("alpha"))
            return RunResult(0, "Deleted all files relating to certificate fleet-alpha.\n", "")
        if argv[0] == "certbot":
            self.requests += 1
            if self.refuse:
                return RunResult(1, "", CERTBOT_REFUSED)
            live = certs.live_dir("alpha")
            for d in ("/etc/letsencrypt", "/etc/letsencrypt/live", live,
                      "/etc/letsencrypt/renewal"):
                host.files.setdefault(d, Entry("dir", mode=0o755))
            for name in ("cert.pem", "fullchain.pem", "privkey.pem"):
                host.write(f"{live}/{name}", b"PEM", 0o644, "root", "root")
            host.write(certs.renewal_conf("alpha"), b"server = https://ca.test/dir\n", 0o644,
                       "root", "root")
            return RunResult(0, "", "")
        if argv[0] == "openssl":
            return RunResult(0, X509, "") if host.read(argv[-1]) else RunResult(1, "", "")
        return None


@pytest.fixture
def ca(monkeypatch: pytest.MonkeyPatch) -> FakeCA:
    monkeypatch.setattr(tls_res, "challenge_problem", lambda *_a: None)
    return FakeCA()


def site(host: FakeHost) -> str:
    return host.read("/etc/nginx/sites-enabled/fleet-alpha.conf").decode()


def test_certificate_after_http_site_then_https_then_nothing(ca: FakeCA) -> None:
    host = tc.server()
    host.handlers.append(ca)
    cfg = tc.config(host, ACME_APP)
    session, outcome = tc.run(host, cfg)
    steps = tc.changed_steps(session)
    assert steps.index("nginx") < steps.index("certificate alpha") < \
        steps.index("nginx site alpha", steps.index("certificate alpha"))
    assert outcome.apps["alpha"].health == "passed"
    assert "certbot" in host.packages and "openssl" in host.packages
    request = host.ran("certbot")[0]
    assert request[request.index("--server") + 1] == "https://ca.test/dir"
    assert request[-4:] == ["-d", "alpha.test", "-d", "www.alpha.test"]
    text = site(host)
    assert "listen 443 ssl" in text and "return 301 https://$host$request_uri;" in text
    assert f"ssl_certificate {certs.live_dir('alpha')}/fullchain.pem;" in text
    assert "acme-challenge" in text and "Strict-Transport-Security" in text
    dropin = host.read(certs.CERTBOT_DROPIN).decode()
    assert "REQUESTS_CA_BUNDLE=/etc/ca.pem" in dropin
    assert host.state(certs.DEPLOY_HOOK).mode == 0o755
    assert "certbot.timer" in host.enabled and "certbot.timer" in host.active

    host.commands.clear()
    again, _ = tc.run(host, cfg)
    assert tc.changed_steps(again) == [] and ca.requests == 1


def test_refused_certificate_keeps_http_fails_the_step_and_backs_off(
        ca: FakeCA, monkeypatch: pytest.MonkeyPatch) -> None:
    ca.refuse = True
    host = tc.server()
    host.handlers.append(ca)
    cfg = tc.config(host, ACME_APP)
    session, outcome = tc.run(host, cfg)
    step = next(s for s in session.steps if s.name == "certificate")
    assert step.status.value == "failed" and "Invalid response" in (step.error or "")
    assert "next attempt after" in (step.error or "")
    assert outcome.apps["alpha"].health == "passed"  # still serving, over HTTP
    assert "listen 443" not in site(host) and "uwsgi_pass" in site(host)
    assert session.counts()["failed"] == 1

    again, _ = tc.run(host, cfg)  # within the backoff: the CA is not asked again
    step = next(s for s in again.steps if s.name == "certificate")
    assert ca.requests == 1 and "not asking the CA again before" in (step.error or "")

    ca.refuse = False
    later = certs.time.time() + certs.BACKOFF_FIRST + 1
    monkeypatch.setattr(tls_res.time, "time", lambda: later)
    third, _ = tc.run(host, cfg)
    assert ca.requests == 2 and "listen 443 ssl" in site(host)
    assert host.state(certs.state_file("alpha")) is None
    assert third.counts()["failed"] == 0


def test_plan_lists_the_request_without_asking_the_ca(ca: FakeCA) -> None:
    host = tc.server()
    host.handlers.append(ca)
    session, _ = tc.run(host, tc.config(host, ACME_APP), check=True)
    step = next(s for s in session.steps if s.name == "certificate")
    assert isinstance(step.actions[0], Unknown)  # its site waits for the clone
    tc.run(host, tc.config(host, ACME_APP.replace('tls = "acme"', "")))
    session, _ = tc.run(host, tc.config(host, ACME_APP), check=True)
    step = next(s for s in session.steps if s.name == "certificate")
    assert "request a certificate for alpha.test www.alpha.test" in step.actions[0].describe()
    assert ca.requests == 0 and not host.ran("certbot")


# ----------------------------------------------------------------------------- remove-app


@pytest.fixture
def removable(ca: FakeCA, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    """A server with alpha's certificate issued, and remove-app's waits on the real machine
    (Emperor, nginx workers, the app's processes) skipped."""
    host = tc.server()
    host.handlers.append(ca)
    desired = desired_state(host, "fleet.toml", ACME_APP)
    perform_all(host, plan_store(host, desired))
    tc.run(host, desired.config)
    assert certs.has_lineage(host, "alpha")
    host.write(certs.state_file("alpha"), b"{}", 0o600, "root", "root")
    monkeypatch.setattr("fleet.cli.basics.run_lock", lambda *_a, **_k: contextlib.nullcontext())
    for name, value in (("local_host", lambda: host), ("require_root", lambda: None)):
        monkeypatch.setattr(remove_cmd, name, value)
    return host


def test_remove_app_keeps_the_certificate_and_says_so(removable, ca, monkeypatch,
                                                       capsys) -> None:
    code, out, _ = fleet_main(monkeypatch, capsys, "remove-app", "alpha")
    assert code == 0 and ca.deletes == []
    assert certs.has_lineage(removable, "alpha") and removable.state(certs.state_file("alpha"))
    assert "Kept /srv/fleet/alpha, user alpha and certificate fleet-alpha" in out
    assert "adding alpha again reuses it without asking the CA" in " ".join(out.split())


def test_remove_app_purge_deletes_the_certificate_with_certbot(removable, ca, monkeypatch,
                                                                capsys) -> None:
    code, out, _ = fleet_main(monkeypatch, capsys, "remove-app", "alpha", "--purge", "--json")
    assert code == 0, out
    assert ca.deletes == ["fleet-alpha"]
    assert ["certbot", "delete", "--cert-name", "fleet-alpha", "--non-interactive"] in \
        removable.commands
    assert not certs.has_lineage(removable, "alpha")
    assert removable.state(certs.state_file("alpha")) is None
    purge = next(s for s in json.loads(out)["steps"] if s["name"] == "purge")
    assert "delete certificate fleet-alpha: certbot delete --cert-name fleet-alpha " \
           "--non-interactive" in purge["actions"]
    assert json.loads(out)["kept"] == []


def test_refused_certificate_delete_fails_purge_with_certbots_reason(removable, ca, monkeypatch,
                                                                     capsys) -> None:
    ca.delete_fails = True
    code, out, _ = fleet_main(monkeypatch, capsys, "remove-app", "alpha", "--purge", "--json")
    assert code == 1
    purge = next(s for s in json.loads(out)["steps"] if s["name"] == "purge")
    assert purge["status"] == "failed"
    assert purge["error"] == ("certbot could not delete certificate fleet-alpha: Unable to "
                              "delete fleet-alpha: /etc/letsencrypt/archive/fleet-alpha is "
                              "read-only")
    assert removable.state("/etc/fleet/apps/alpha.toml")  # run it again once fixed
    ca.delete_fails = False
    code, out, _ = fleet_main(monkeypatch, capsys, "remove-app", "alpha", "--purge", "--json")
    assert code == 0 and not certs.has_lineage(removable, "alpha")
    assert removable.state("/etc/fleet/apps/alpha.toml") is None


# ----------------------------------------------------------------------------- at a front

FRONT_ACME = """
[server.acme]
email = "ops@example.com"
directory = "https://ca.test/dir"
ca_bundle = "/etc/ca.pem"
[front.apps.alpha]
domains = ["alpha.test", "www.alpha.test"]
upstreams = ["10.0.0.11:80", "10.0.0.12:80"]
tls = "acme"
hsts = 600
"""


@pytest.fixture
def front_checks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """The front's health checks (app, over HTTPS?) instead of real requests."""
    checks: list[tuple[str, bool]] = []

    def fake_check(app, site=None, *, https=False, **_kwargs):
        checks.append((app.name, https))
        return HealthResult(True, 200, "HTTP 200", 0.0)

    monkeypatch.setattr(front_mod, "check_app", fake_check)
    return checks


def front_site(host: FakeHost) -> str:
    return host.read(front_mod.front_file("alpha")).decode()


def test_a_front_gets_the_certificate_and_terminates_https(ca: FakeCA, front_checks) -> None:
    host = tc.server()
    host.handlers.append(ca)
    cfg = tc.config(host, FRONT_ACME)
    session, outcome = tc.run(host, cfg)
    steps = tc.changed_steps(session)
    assert steps.index("front site alpha") < steps.index("certificate alpha") < \
        steps.index("nginx site alpha")
    assert "certbot" in host.packages and "openssl" in host.packages
    assert host.ran("certbot")[0][-4:] == ["-d", "alpha.test", "-d", "www.alpha.test"]
    text = front_site(host)
    assert text.count("listen 443 ssl") == 1 and "return 301 https://$host$request_uri;" in text
    assert f"ssl_certificate {certs.live_dir('alpha')}/fullchain.pem;" in text
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text  # the standalone sites' parameters
    assert 'add_header Strict-Transport-Security "max-age=600" always;' in text
    assert "location ^~ /.well-known/acme-challenge/" in text
    # Still one upstream, reached over plain HTTP from the HTTPS server block.
    assert text.count("proxy_pass http://fleet_front_alpha;") == 1
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in text
    assert front_checks == [("alpha", True)] and outcome.apps["alpha"].health == "passed"

    host.commands.clear()
    again, _ = tc.run(host, cfg)
    assert tc.changed_steps(again) == [] and ca.requests == 1
    assert front_checks[-1] == ("alpha", True)
    status = front_status(host, cfg)["alpha"]["certificate"]
    assert status["mode"] == "acme" and status["names"] == ["alpha.test", "www.alpha.test"]


def test_a_front_without_certificate_yet_serves_http_and_the_challenge(
        ca: FakeCA, front_checks) -> None:
    ca.refuse = True
    host = tc.server()
    host.handlers.append(ca)
    session, outcome = tc.run(host, tc.config(host, FRONT_ACME))
    step = next(s for s in session.steps if s.name == "certificate")
    assert step.status.value == "failed" and "Invalid response" in (step.error or "")
    text = front_site(host)
    assert "listen 443" not in text and "listen 80;" in text and "return 301" not in text
    assert "location ^~ /.well-known/acme-challenge/" in text
    assert front_checks == [("alpha", False)] and outcome.apps["alpha"].health == "passed"


def test_drain_and_undrain_render_the_https_part_as_an_apply_does(
        ca: FakeCA, front_checks, monkeypatch: pytest.MonkeyPatch) -> None:
    host = tc.server()
    host.handlers.append(ca)
    cfg = tc.config(host, FRONT_ACME)
    tc.run(host, cfg)
    applied = front_site(host)
    quiet = Session(host, tc.Quiet())
    front_mod.rotate(cfg, quiet, lambda d: drain(cfg.front, d, "10.0.0.11:80", []))
    drained = front_site(host)
    assert drained == applied.replace("10.0.0.11:80 max_fails=1 fail_timeout=5s;",
                                      "10.0.0.11:80 max_fails=1 fail_timeout=5s down;")
    front_mod.rotate(cfg, quiet, lambda d: undrain(cfg.front, d, "10.0.0.11:80", [], None))
    assert front_site(host) == applied
    again, _ = tc.run(host, cfg)
    assert tc.changed_steps(again) == []


def test_operator_files_of_a_front_app_are_checked_on_the_front(keypairs) -> None:
    host = FakeHost()
    host.files["/etc/ssl"] = Entry("dir", mode=0o755)
    host.write("/etc/ssl/a.pem", keypairs["a.pem"], 0o644, "root", "root")
    host.write("/etc/ssl/a.key", keypairs["b.key"], 0o600, "root", "root")
    text = FRONT_ACME.replace('tls = "acme"',
                              'tls = { cert = "/etc/ssl/a.pem", key = "/etc/ssl/a.key" }')
    with pytest.raises(ConfigError) as info:
        certs.check_tls_files(host, tc.config(host, text))
    assert info.value.key == "front.apps.alpha.tls.key"
    assert "does not match" in info.value.problem


def test_the_challenge_fetch_outlasts_nginx_reloading(monkeypatch) -> None:
    answers = ["no answer (RemoteDisconnected: closed)", "HTTP 404 without the token", None]
    monkeypatch.setattr(tls_res, "fetch_problem", lambda *_a: answers.pop(0))
    slept: list[float] = []
    assert tls_res.fetch_until("a.test", "/x", b"t", sleep=slept.append) is None
    assert slept == [0.25, 0.25]
    monkeypatch.setattr(tls_res, "fetch_problem", lambda *_a: "HTTP 404 without the token")
    assert tls_res.fetch_until("a.test", "/x", b"t", wait=0.0, sleep=slept.append) == \
        "HTTP 404 without the token"  # gives up once the wait is over
