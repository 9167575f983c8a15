"""The render cache (issue 19): its key changes whenever a render's output could, it refuses
what it cannot spell out, its file is bounded and survives any damage, and a warm run writes
exactly the bytes jinja2 renders without importing jinja2."""

from __future__ import annotations

import dataclasses
import enum
import marshal
import os
import sys
from pathlib import Path, PurePosixPath

import pytest

from fleet.config.settings import AppConfig, AuthConfig, HealthConfig, JobConfig, WorkerConfig
from fleet.host import render, render_cache
from fleet.host.render_cache import RenderCache, key
from tests.unit.support import config, run, server
from tests.unit.test_render import RICH

pytestmark = pytest.mark.usefixtures("healthy")  # no real health checks, gates or waits

APP = AppConfig(name="alpha", repo="git://r/a.git", domains=("a.test", "www.a.test"),
                env=(("A", "1"),), health=HealthConfig(status=(200,)),
                auth=AuthConfig(users="/etc/fleet/auth/alpha"),
                workers=(WorkerConfig(name="mail", command="python -m mail"),),
                jobs=(JobConfig(name="nightly", command="x", schedule="daily"),))


# --------------------------------------------------------------------------- the key


@pytest.mark.parametrize("value", [
    "text", "", 0, -7, 2**70, 1.5, float("inf"), True, False, None, b"\x00bytes",
    (1, "a"), [1, ["a"]], {"b": 1, "a": (2,)}, Path("/srv/fleet"), PurePosixPath("/run"),
    APP, (APP, {"tls": None, "door": {"allow": ["10.0.0.0/8"]}}),
])
def test_every_vetted_type_has_a_stable_key(value: object) -> None:
    first = key("t.j2", {"v": value})
    assert first is not None and len(first) == 64
    assert key("t.j2", {"v": value}) == first
    assert key("t.j2", {"v": dataclasses.replace(APP)}) == key("t.j2", {"v": APP})  # by value


@pytest.mark.parametrize(("one", "other"), [
    ("1", 1), (True, 1), (1, 1.0), (None, "None"), (False, 0), ((1,), [1]), ("x", b"x"),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}),  # a template iterates a dict in order
    (("ab", "c"), ("a", "bc")), (("a,", "b"), ("a", ",b")), ("/a", Path("/a")),
    (Path("/a"), PurePosixPath("/a")), ({"a": ()}, {"a": []}), ([[]], [[], []]),
    ("s1:x", ("x",)),
])
def test_different_values_have_different_keys(one: object, other: object) -> None:
    assert key("t.j2", {"v": one}) != key("t.j2", {"v": other})


def test_the_template_and_every_name_count_but_not_the_keyword_order() -> None:
    assert key("a.j2", {"x": 1, "y": 2}) == key("a.j2", {"y": 2, "x": 1})
    assert key("a.j2", {"x": 1}) != key("b.j2", {"x": 1})
    assert key("a.j2", {"x": 1}) != key("a.j2", {"y": 1})
    assert key("a.j2", {"x": 1}) != key("a.j2", {"x": 1, "y": None})


@pytest.mark.parametrize("change", [
    {"name": "beta"}, {"domains": ("a.test",)}, {"env": (("A", "2"),)}, {"processes": 3},
    {"health": HealthConfig(status=(204,))}, {"health": HealthConfig(status=(200,), timeout=3)},
    {"auth": AuthConfig(users="/other")}, {"auth": None},
    {"workers": (WorkerConfig(name="mail", command="python -m mail2"),)},
    {"workers": (WorkerConfig(name="mail", command="python -m mail", processes=2),)},
    {"jobs": (JobConfig(name="nightly", command="x", schedule="hourly"),)},
    {"memory": 2**29}, {"maintenance": True}, {"prefix": "/blog"},
])
def test_a_changed_field_anywhere_in_the_settings_changes_the_key(change: dict) -> None:
    changed = dataclasses.replace(APP, **change)
    assert key("vassal.ini.j2", {"app": changed}) != key("vassal.ini.j2", {"app": APP})
    nested = {"apps": [{"app": APP}]}
    assert key("t", {"x": {"apps": [{"app": changed}]}}) != key("t", {"x": nested})


def test_every_field_of_an_app_is_in_its_key() -> None:
    """Each field, set to another value of its kind, changes the key: none is left out."""
    other = {str: "zz", int: 99, bool: True, float: 9.5}
    for field in dataclasses.fields(AppConfig):
        value = getattr(APP, field.name)
        if type(value) in other:
            changed = dataclasses.replace(APP, **{field.name: other[type(value)]})
        elif value is None:
            changed = dataclasses.replace(APP, **{field.name: 7})
        elif type(value) is tuple:
            changed = dataclasses.replace(APP, **{field.name: () if value else ("zz",)})
        else:
            changed = dataclasses.replace(APP, **{field.name: dataclasses.replace(value)})
            assert key("t", {"app": changed}) == key("t", {"app": APP}), field.name
            continue
        assert key("t", {"app": changed}) != key("t", {"app": APP}), field.name


class Colour(enum.Enum):
    RED = 1


class Text(str):
    pass


@dataclasses.dataclass(frozen=True)
class Unreviewed:
    a: int = 1


@dataclasses.dataclass
class Mutable:
    a: int = 1


@dataclasses.dataclass(frozen=True)
class Hidden:
    a: int = 1
    secret: str = dataclasses.field(default="x", repr=False)


@pytest.mark.parametrize("value", [
    {1, 2}, frozenset({"a"}), object(), lambda: 1, Colour.RED, Text("x"), Unreviewed(),
    Mutable(), Hidden(), len, range(3), 1j, bytearray(b"x"),
    ({"a": [({1},)]}),  # refused however deep
])
def test_what_it_cannot_spell_out_is_not_cached(value: object,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Even listed as reviewed, a mutable dataclass or one hiding a field is refused.
    monkeypatch.setattr(render_cache, "VETTED", render_cache.VETTED | {
        f"{__name__}.Mutable", f"{__name__}.Hidden"})
    assert key("t.j2", {"app": APP, "v": value}) is None


def test_a_vetted_dataclass_with_attributes_beyond_its_fields_is_refused() -> None:
    odd = dataclasses.replace(APP)
    object.__setattr__(odd, "extra", "host state")
    assert key("t", {"app": odd}) is None


# --------------------------------------------------------------------------- the file


def test_hit_miss_and_a_round_trip_through_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "_render" / "renders.marshal")
    cache = RenderCache(path, "build1", today=100).load()
    assert cache.get("k1") is None and not cache.changed
    cache.put("k1", b"text\n")
    assert cache.get("k1") == b"text\n"
    cache.save()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    again = RenderCache(path, "build1", today=100).load()
    assert again.get("k1") == b"text\n" and not again.changed
    mtime = os.stat(path).st_mtime_ns
    again.save()  # nothing new: not written
    assert os.stat(path).st_mtime_ns == mtime
    assert RenderCache(path, "build2", today=100).load().entries == {}  # another build's


@pytest.mark.parametrize("damage", [
    b"", b"\x00\x01garbage", None, marshal.dumps({"k": "v"}), marshal.dumps(((1, "b", 0), {})),
    marshal.dumps([1, 2, 3]), "truncated", "foreign-entries",
])
def test_a_damaged_or_foreign_file_is_a_cold_cache_and_is_replaced(tmp_path: Path,
                                                                   damage: object) -> None:
    path = str(tmp_path / "_render" / "renders.marshal")
    good = RenderCache(path, "b", today=1)
    good.put("k1", b"one")
    good.save()
    stamp = good.stamp
    content = Path(path).read_bytes()
    if damage == "truncated":
        Path(path).write_bytes(content[: len(content) // 2])
    elif damage == "foreign-entries":
        Path(path).write_bytes(marshal.dumps((stamp, {"k1": ["str", 1], 2: [b"x", 1]})))
    elif damage is None:
        Path(path).unlink()
    else:
        Path(path).write_bytes(damage)
    cache = RenderCache(path, "b", today=1).load()
    assert cache.get("k1") is None
    cache.put("k2", b"two")
    cache.save()
    assert RenderCache(path, "b", today=1).load().entries == {"k2": [b"two", 1, ""]}


def test_a_rotated_secret_leaves_the_cache_with_the_run_that_renders_the_new_one(
        tmp_path: Path) -> None:
    """Entries of the templates that hold the apps' environment are dropped when a run renders
    that template and does not use them; other templates' entries age out as usual."""
    path = str(tmp_path / "_render" / "renders.marshal")
    first = RenderCache(path, "b", today=1)
    first.put("env-old", b"TOKEN=old\n", "app.env.j2")
    first.put("env-other-app", b"X=1\n", "units.env.j2")
    first.put("site", b"server {}\n", "site.conf.j2")
    first.save()
    rotated = RenderCache(path, "b", today=1).load()
    rotated.put("env-new", b"TOKEN=new\n", "app.env.j2")  # renders app.env.j2 only
    assert rotated.get("site", "site.conf.j2") == b"server {}\n"
    rotated.save()
    kept = RenderCache(path, "b", today=1).load().entries
    assert set(kept) == {"env-new", "env-other-app", "site"}
    assert b"old" not in Path(path).read_bytes()
    unchanged = RenderCache(path, "b", today=1).load()  # a no-op: the same entries, no write
    for digest, entry in kept.items():
        assert unchanged.get(digest, entry[2]) == entry[0]
    unchanged.save()
    assert not unchanged.changed


def test_a_file_or_directory_others_could_write_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "_render" / "renders.marshal"
    cache = RenderCache(str(path), "b", today=1)
    cache.put("k", b"x")
    cache.save()
    path.chmod(0o644)
    assert RenderCache(str(path), "b", today=1).load().entries == {}
    path.chmod(0o600)
    link = tmp_path / "_render" / "link"
    link.symlink_to(path)
    assert RenderCache(str(link), "b", today=1).load().entries == {}  # never follows a link
    path.unlink()
    path.parent.chmod(0o755)
    cache.changed = True
    cache.save()
    assert not path.exists()  # not in a directory others can read
    missing = RenderCache(str(tmp_path / "none" / "_render" / "f"), "b", today=1)
    missing.put("k", b"x")
    missing.save()  # the build cache's own directory is the apply's to make: no error, no file
    assert not (tmp_path / "none").exists()


def test_unused_entries_go_and_the_count_is_bounded(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "_render" / "renders.marshal")
    old = RenderCache(path, "b", today=100)
    old.put("stale", b"s")
    old.save()
    mid = RenderCache(path, "b", today=110).load()
    mid.put("other-app", b"o")  # an add-app or deploy of one app on day 110
    mid.save()
    later = RenderCache(path, "b", today=100 + render_cache.KEEP_DAYS).load()
    later.put("this-run", b"t")
    later.save()  # renders only this run's: the other app's entry is not yet old
    assert set(RenderCache(path, "b", today=1).load().entries) == {"other-app", "this-run"}
    monkeypatch.setattr(render_cache, "MAX_ENTRIES", 2)
    full = RenderCache(path, "b", today=200).load()
    full.put("newest", b"n")
    assert full.get("this-run") == b"t"  # used today: refreshed
    full.save()
    assert set(RenderCache(path, "b", today=1).load().entries) == {"newest", "this-run"}


def test_a_hit_refreshes_its_day_once(tmp_path: Path) -> None:
    path = str(tmp_path / "_render" / "renders.marshal")
    cache = RenderCache(path, "b", today=5)
    cache.put("k", b"x")
    cache.save()
    next_day = RenderCache(path, "b", today=6).load()
    assert next_day.get("k") == b"x" and next_day.changed
    next_day.save()
    same_day = RenderCache(path, "b", today=6).load()
    assert same_day.get("k") == b"x" and not same_day.changed


def test_only_a_build_run_by_root_has_a_cache(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert render_cache.build_id() is None  # a source checkout
    assert render_cache.start() is None
    monkeypatch.setattr(render_cache, "build_id", lambda: "abc123")
    monkeypatch.setattr(render_cache.layout, "RENDER_CACHE", str(tmp_path / "r" / "f"))
    monkeypatch.setattr(render_cache.os, "geteuid", lambda: 1000)
    assert render_cache.start() is None
    monkeypatch.setattr(render_cache.os, "geteuid", lambda: 0)
    cache = render_cache.start()
    assert cache is not None and cache.stamp[1] == "abc123" and cache.path == str(tmp_path / "r/f")


# --------------------------------------------------------------------------- through an apply


def converged_files(text: str = RICH):
    host = server()
    session, _ = run(host, config(host, text))
    history = "/var/lib/fleet/apps/"  # holds build and deploy times
    files = {p: e for p, e in host.files.items() if not p.startswith(history)}
    return host, files, [(s.name, s.app, s.status) for s in session.steps]


@pytest.fixture
def cache_on(tmp_path: Path):
    cache = RenderCache(str(tmp_path / "_render" / "renders.marshal"), "test-build").load()
    render_cache.use(cache)
    yield cache
    render_cache.PROCESS.forget()


def test_a_warm_apply_writes_what_jinja2_renders_without_importing_it(
        cache_on: RenderCache, monkeypatch: pytest.MonkeyPatch) -> None:
    render_cache.use(None)
    _, plain, plain_steps = converged_files()
    render_cache.use(cache_on)
    _, cold, cold_steps = converged_files()
    assert cold == plain and cold_steps == plain_steps
    # Every render of this rich config (sites, vassals, units, workers, jobs, env files,
    # tmpfiles, emperor, nginx) was cacheable: a new context type would show here.
    assert len(cache_on.entries) >= 20
    cache_on.save()

    warm_cache = RenderCache(cache_on.path, "test-build").load()
    render_cache.use(warm_cache)
    monkeypatch.setitem(sys.modules, "jinja2", None)  # `import jinja2` now fails
    monkeypatch.setattr(render, "environment", render.environment.__wrapped__)  # no lru copy
    host, warm, warm_steps = converged_files()
    assert warm == plain and warm_steps == plain_steps
    # And a no-op apply on the converged server, with the warm cache, imports no jinja2.
    session, _ = run(host, config(host, RICH))
    assert [s for s in session.steps if s.status.name not in ("OK", "SKIPPED")] == []
    assert not warm_cache.changed  # nothing new, same day: the file is not rewritten


def test_a_changed_setting_misses_and_renders_anew(cache_on: RenderCache) -> None:
    converged_files()
    before = set(cache_on.entries)
    render_cache.use(None)
    _, plain, _ = converged_files(RICH.replace("python -m mail", "python -m post"))
    render_cache.use(cache_on)
    _, cached, _ = converged_files(RICH.replace("python -m mail", "python -m post"))
    assert cached == plain
    assert len(set(cache_on.entries) - before) >= 1  # the worker's unit, rendered afresh


def test_settings_spelled_once_per_object_but_a_list_inside_is_spelled_every_time() -> None:
    """Frozen settings are spelled once (the key's speed); one holding a list is not, since
    the list can change between two renders."""
    assert key("t", {"app": APP}) == key("t", {"app": APP})
    assert id(APP) in render_cache._SPELLED
    env = [("A", "1")]
    listed = dataclasses.replace(APP, env=env)
    before = key("t", {"app": listed})
    env.append(("B", "2"))
    assert key("t", {"app": listed}) != before
    assert id(listed) not in render_cache._SPELLED


def test_the_command_line_saves_at_the_end_unless_the_input_was_bad(
        cache_on: RenderCache, capsys: pytest.CaptureFixture[str]) -> None:
    from fleet.cli import dispatch

    assert dispatch.run(["init", "-"]) == 0  # prints the example fleet.toml: one new entry
    assert "[apps." in capsys.readouterr().out
    assert not cache_on.changed and Path(cache_on.path).is_file()
    written = Path(cache_on.path).read_bytes()
    cache_on.put("k", b"new")
    assert dispatch.run(["apply", "/nonexistent/fleet.toml"]) == 2
    assert cache_on.changed and Path(cache_on.path).read_bytes() == written


def test_every_vetted_class_is_a_frozen_settings_class_that_shows_every_field() -> None:
    from fleet.config import settings

    for name in render_cache.VETTED:
        module, _, cls_name = name.rpartition(".")
        assert module == "fleet.config.settings", name
        cls = getattr(settings, cls_name)
        assert cls.__dataclass_params__.frozen, name
        assert all(f.repr for f in dataclasses.fields(cls)), name
        assert render_cache.vetted_fields(cls) == tuple(f.name for f in dataclasses.fields(cls))
