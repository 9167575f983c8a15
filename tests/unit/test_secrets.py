"""Area contain-secrets: credentials off argv and masked, bounded socket reads, env lines
uWSGI reads whole, X-Fleet-Site for loopback probes only."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from fleet import errors
from fleet.config.envfile import parse_env_file
from fleet.config.limits import ENV_LINE_MAX
from fleet.errors import CommandError, ConfigError
from fleet.host import bounded
from fleet.host.actions import Run
from fleet.host.machine import LocalHost
from fleet.host.render import render
from fleet.masking import mask_urls, split_credentials
from fleet.server import repo as repo_res
from fleet.server import status
from tests.unit.fakehost import Entry, FakeHost

TOKEN = "ghp_s3cretTOKEN"
URL = f"https://deploy:{TOKEN}@git.example.com/team/app.git"
CLEAN = "https://git.example.com/team/app.git"


@pytest.mark.parametrize(("url", "clean", "user", "password"), [
    (URL, CLEAN, "deploy", TOKEN),
    (f"https://{TOKEN}@git.example.com/a.git", "https://git.example.com/a.git", TOKEN, ""),
    ("https://u:p%40ss@h:8443/a.git", "https://h:8443/a.git", "u", "p@ss"),
    ("https://git.example.com/a.git", "https://git.example.com/a.git", "", ""),
    ("ssh://git@host/a.git", "ssh://git@host/a.git", "", ""),  # a login, not a secret
    ("/srv/git/a.git", "/srv/git/a.git", "", ""),
])
def test_split_credentials(url: str, clean: str, user: str, password: str) -> None:
    remote = split_credentials(url)
    assert (remote.url, remote.username, remote.password) == (clean, user, password)


def test_clone_gets_no_credentials_on_its_command_line() -> None:
    host = FakeHost()
    actions = repo_res.plan_clone(host, URL, "/srv/app/repo", timeout=30)
    clone = next(a for a in actions if isinstance(a, Run))
    assert TOKEN not in " ".join(clone.argv) and TOKEN not in clone.describe()
    assert clone.argv[-3:] == ("--", CLEAN, "/srv/app/repo.tmp")
    env = dict(clone.env)
    assert env["FLEET_GIT_PASSWORD"] == TOKEN and env["FLEET_GIT_USERNAME"] == "deploy"
    assert env["GIT_CONFIG_KEY_1"] == "credential.https://git.example.com.helper"
    assert env["GIT_CONFIG_VALUE_0"] == ""  # no other helper sees (or stores) them
    assert TOKEN not in env["GIT_CONFIG_VALUE_1"]
    assert clone.timeout == 30


def test_a_mirror_holding_a_token_is_rewritten_without_it() -> None:
    host = FakeHost()
    host.files["/srv/app"] = Entry("dir")
    host.files["/srv/app/repo"] = Entry("dir")
    host.files["/srv/app/repo/url"] = Entry("file", URL.encode())
    actions = repo_res.plan_clone(host, URL, "/srv/app/repo")
    assert len(actions) == 1 and isinstance(actions[0], Run)
    assert actions[0].argv[-3:] == ("origin", "--", CLEAN)
    host.files["/srv/app/repo/url"] = Entry("file", CLEAN.encode())
    assert repo_res.plan_clone(host, URL, "/srv/app/repo") == []  # migrated: idempotent


def test_ls_remote_gets_the_clean_url_after_dashes() -> None:
    host = FakeHost()
    repo_res.remote_commit(host, URL, "main")
    assert host.commands[-1][-2:] == ["--", CLEAN]


def test_command_errors_are_masked() -> None:
    exc = CommandError(["git"], 128, "", f"fatal: unable to access '{URL}': timed out")
    assert TOKEN not in str(exc) and TOKEN not in exc.output_tail()
    assert mask_urls(URL) == "https://********@git.example.com/team/app.git"


# ----------------------------------------------------------------------------- bounded reads

def serve_once(payload: bytes, delay: float = 0.0, forever: bool = False) -> socket.socket:
    """A connected socket whose peer sends `payload` (a byte every `delay` s when forever)."""
    ours, theirs = socket.socketpair()

    def send() -> None:
        try:
            if forever:
                while True:
                    theirs.sendall(b"x")
                    time.sleep(delay)
            theirs.sendall(payload)
        except OSError:
            pass
        finally:
            theirs.close()

    threading.Thread(target=send, daemon=True).start()
    return ours


def test_a_byte_a_second_answer_is_too_slow_within_the_deadline() -> None:
    sock = serve_once(b"", delay=0.2, forever=True)
    start = time.monotonic()
    with pytest.raises(errors.AnswerTooSlow, match="answer too slow"):
        bounded.read_all(sock, 1.0, 1 << 20)
    assert time.monotonic() - start < 2.0
    sock.close()


def test_a_huge_answer_is_too_large() -> None:
    sock = serve_once(b"x" * 200_000)
    with pytest.raises(errors.AnswerTooLarge, match="answer too large"):
        bounded.read_all(sock, 5.0, 100_000)
    sock.close()


def test_nested_json_is_a_named_failure_not_a_recursion_error() -> None:
    with pytest.raises(errors.AnswerError, match="nested too deeply"):
        bounded.parse_json(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(errors.AnswerError, match="not JSON"):
        bounded.parse_json(b"{")


def test_read_stats_refuses_a_hostile_listener(tmp_path) -> None:
    path = str(tmp_path / "stats.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b'{"workers": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")

    threading.Thread(target=answer, daemon=True).start()
    with pytest.raises(errors.AnswerError):
        status.read_stats(LocalHost(), path)
    server.close()


def test_parse_workers_of_another_shape_is_an_answer_error() -> None:
    with pytest.raises(errors.AnswerError, match="unreadable"):
        status.parse_workers({"workers": [{"pid": "not a number"}]})


def test_unreadable_stats_are_named_in_why_down() -> None:
    vassal = status.VassalStatus("a@1.ini", "1", "unreadable",
                                 stats_problem="answer too large (over 9 bytes)")
    assert "answer too large" in status.why_down(FakeHost(), "a", vassal)
    assert vassal.to_json()["stats_problem"] == "answer too large (over 9 bytes)"


# ----------------------------------------------------------------------------- env lines

def test_an_env_file_line_uwsgi_would_cut_is_refused_without_its_value() -> None:
    key = "API_KEY"
    fits = "a" * (ENV_LINE_MAX - len(key) - 1)
    assert parse_env_file("/etc/app.env", f"{key}={fits}\n") == ((key, fits),)
    secret = "S" * (ENV_LINE_MAX - len(key))  # one byte more than uWSGI reads whole
    with pytest.raises(ConfigError) as info:
        parse_env_file("/etc/app.env", f"# c\n{key}={secret}\n")
    message = str(info.value)
    assert message.startswith("/etc/app.env: line 2 (API_KEY): ")
    assert "1023 bytes" in message and secret not in message and "\n" not in message
    assert info.value.exit_code == 2


def test_multibyte_values_count_in_bytes() -> None:
    with pytest.raises(ConfigError):
        parse_env_file("/f", "K=" + "é" * 511 + "\n")  # 2 + 1022 bytes


# ----------------------------------------------------------------------------- probes

def test_x_fleet_site_goes_to_loopback_probes_only() -> None:
    text = render("nginx-fleet.conf.j2", reject_handshake=False, rate_limits=[]).decode()
    assert 'map "$remote_addr $http_x_fleet_probe" $fleet_probe_reply {' in text
    import re
    line = next(x for x in text.splitlines() if "$fleet_site;" in x and "~^" in x)
    pattern = re.compile(line.split('"')[1][1:])
    assert pattern.search("127.0.0.1 1") and pattern.search("::1 1")
    assert not pattern.search("192.0.2.2 1")  # a remote client sending the header
    assert not pattern.search("127.0.0.1 ")  # loopback without the header
    assert not pattern.search("10.127.0.1 1")


# ----------------------------------------------------------------------------- add-app env

def test_add_app_env_values_come_from_stdin_and_file(tmp_path) -> None:
    import io

    from fleet.cli.converge import read_env_sources
    env_file = tmp_path / "app.env"
    env_file.write_text("# secrets\nA=from-file\nB=b\n")
    assert read_env_sources(["A"], env_file, io.StringIO("from-stdin\n")) == {
        "A": "from-stdin", "B": "b"}
    assert read_env_sources(["X", "Y"], None, io.StringIO("1\n2\n")) == {"X": "1", "Y": "2"}
    with pytest.raises(ConfigError, match="stdin has 1 lines for 2"):
        read_env_sources(["X", "Y"], None, io.StringIO("1"))
    with pytest.raises(ConfigError) as info:
        read_env_sources(["TOKEN=s3cret"], None, io.StringIO(""))
    assert "s3cret" not in str(info.value) and str(info.value).startswith("--env: TOKEN: ")


# ----------------------------------------------------------------------------- build tar

def test_the_build_tar_is_private_and_a_stale_one_is_swept() -> None:
    from fleet.config.settings import AppConfig
    from fleet.host.actions import Remove
    from fleet.host.layout import AppPaths
    from fleet.server.release import plan_release
    host = FakeHost()
    paths = AppPaths("blog")
    host.files[paths.repo] = Entry("dir", mode=0o700)
    host.files[f"{paths.repo}/fleet-archive-0123456789ab.tar"] = Entry("file")
    app = AppConfig("blog", "https://x/blog.git", ("blog.test",))
    actions = plan_release(host, app, "f" * 40)
    assert actions[0] == Remove(path=f"{paths.repo}/fleet-archive-0123456789ab.tar",
                                why="left by an interrupted run")
    export = next(a for a in actions if isinstance(a, Run) and "archive" in a.argv)
    tar = export.argv[export.argv.index("-o") + 1]
    assert tar == f"{paths.repo}/fleet-archive-ffffffffffff.tar"
    host.files[paths.release("f" * 12)] = Entry("dir")
    assert plan_release(host, app, "f" * 40) == [actions[0]]  # swept even with no build


# ----------------------------------------------------------------------------- TLS links

LINKED_APP = ('[apps.own]\nrepo = "r"\ndomains = ["own.test"]\n'
              'tls = { cert = "/etc/le/live/own/cert.pem", key = "/etc/le/live/own/key.pem" }\n')


def linked_host(keypairs: dict[str, bytes], key_target: str = "../../archive/own/key1.pem",
                key_owner: str = "root", link_owner: str = "root") -> FakeHost:
    """certbot's layout: live/NAME/*.pem are relative links into archive/NAME/."""
    host = FakeHost()
    host.users.add("mallory")
    for d in ("/etc/le", "/etc/le/live", "/etc/le/live/own", "/etc/le/archive",
              "/etc/le/archive/own", "/tmp"):
        host.files[d] = Entry("dir", mode=0o755)
    host.write("/etc/le/archive/own/cert1.pem", keypairs["a.pem"], 0o644, "root", "root")
    host.write("/etc/le/archive/own/key1.pem", keypairs["a.key"], 0o600, key_owner, "root")
    host.write("/tmp/key.pem", keypairs["a.key"], 0o600, "root", "root")
    host.files["/etc/le/live/own/cert.pem"] = Entry("link", target="../../archive/own/cert1.pem")
    host.files["/etc/le/live/own/key.pem"] = Entry("link", owner=link_owner, target=key_target)
    return host


def tls_config(host: FakeHost):
    from fleet.config.store import desired_state
    return desired_state(host, "fleet.toml", LINKED_APP).config


@pytest.fixture(scope="module")
def keypairs(tmp_path_factory) -> dict[str, bytes]:
    import subprocess
    tmp = tmp_path_factory.mktemp("keys")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    tmp / "a.key", "-out", tmp / "a.pem", "-days", "2", "-subj", "/CN=own.test"],
                   check=True, capture_output=True)
    return {n: (tmp / n).read_bytes() for n in ("a.key", "a.pem")}


def test_certbot_style_links_are_resolved_then_checked(keypairs) -> None:
    from fleet.server import certs
    host = linked_host(keypairs)
    certs.check_tls_files(host, tls_config(host))  # resolved: passes


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"key_owner": "mallory"}, "owned by mallory, not root"),
    ({"link_owner": "mallory"}, "belongs to mallory, not root"),
    ({"key_target": "/tmp/key.pem"}, "where others or the apps can write"),
    ({"key_target": "../../archive/own/nope.pem"}, "does not exist"),
    ({"key_target": "../../archive/own"}, "leads to a dir"),
])
def test_links_to_unsafe_files_are_refused(keypairs, kwargs, problem) -> None:
    from fleet.server import certs
    host = linked_host(keypairs, **kwargs)
    with pytest.raises(ConfigError) as info:
        certs.check_tls_files(host, tls_config(host))
    assert info.value.key == "apps.own.tls.key" and problem in info.value.problem
    assert info.value.exit_code == 2
