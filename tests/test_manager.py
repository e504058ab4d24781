"""The driver registry: lazy imports, caching, registration, entry points, errors, switching.

Drivers here are the real SQLite driver (or tiny subclasses of it) on files in ``tmp_path``, with
the hashing embedder (``EMBEDDING_PROVIDER=hashing``), so no model is loaded.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import memory_drivers
from memory_drivers import (
    BaseMemoryDriver,
    ConfigurationError,
    DriverClosedError,
    DriverNotFoundError,
    MemoryDriverManager,
    MissingDependencyError,
    Settings,
    get_memory_driver,
    get_settings,
    register_driver,
    set_memory_driver,
)
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.manager import BUILTIN_DRIVERS


@pytest.fixture(autouse=True)
def registry(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test starts with no cached drivers, the built-in registry only, and settings that
    put the default store in ``tmp_path`` with the hashing embedder. Restores all of it."""
    saved = dict(MemoryDriverManager._registered)
    MemoryDriverManager.reset_cache()
    monkeypatch.setenv("MEMORY_DB_URL", f"sqlite:///{clean_env}/default/memories.db")
    monkeypatch.setenv("EMBEDDING_PROVIDER", "hashing")
    get_settings.cache_clear()
    try:
        yield clean_env
    finally:
        MemoryDriverManager.reset_cache()
        MemoryDriverManager._registered.clear()
        MemoryDriverManager._registered.update(saved)
        get_settings.cache_clear()


def driver_class(tmp_path: Path, name: str) -> type[SQLiteDriver]:
    """A real SQLiteDriver subclass named ``name`` with its own database in ``tmp_path``."""

    class Driver(SQLiteDriver):
        def __init__(self, settings: Settings | None = None, **options: Any) -> None:
            settings = (settings or get_settings()).replace(
                memory_db_url=f"sqlite:///{tmp_path}/{name}/memories.db"
            )
            super().__init__(settings, **options)

    Driver.name = name
    Driver.__name__ = Driver.__qualname__ = f"{name.title()}Driver"
    return Driver


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on ``sys.path`` for modules a test writes; they are unimported afterwards."""
    directory = tmp_path / "modules"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    before = set(sys.modules)
    try:
        yield directory
    finally:
        for name in set(sys.modules) - before:
            path = getattr(sys.modules[name], "__file__", None) or ""
            if path.startswith(str(directory)):
                del sys.modules[name]
        importlib.invalidate_caches()


def write_module(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    importlib.invalidate_caches()


def run_python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with only the given memory-drivers variables."""
    fields = {name.upper() for name in Settings.model_fields}
    environment = {k: v for k, v in os.environ.items() if k.upper() not in fields}
    environment.update(env)
    # import the memory_drivers under test, whatever the working directory
    source_root = str(Path(memory_drivers.__file__).resolve().parent.parent)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [source_root, environment.get("PYTHONPATH")])
    )
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


# ======================================================================== lazy imports


def test_import_loads_no_driver_until_first_use(tmp_path):
    result = run_python(
        """
        import sys
        import memory_drivers

        heavy = ["memory_drivers.drivers.sqlite", "memory_drivers.sql", "faiss", "sqlalchemy",
                 "httpx", "sentence_transformers", "torch"]
        loaded = [name for name in heavy if name in sys.modules]
        assert not loaded, f"imported by 'import memory_drivers': {loaded}"

        driver = memory_drivers.get_memory_driver()
        assert type(driver).__name__ == "SQLiteDriver", driver
        for name in ["memory_drivers.drivers.sqlite", "faiss", "sqlalchemy"]:
            assert name in sys.modules, f"{name} not imported by get_memory_driver()"
        # the hashing embedder was configured: no model library was needed
        assert "sentence_transformers" not in sys.modules
        driver.close()
        print("ok")
        """,
        cwd=tmp_path,
        MEMORY_DB_URL=f"sqlite:///{tmp_path}/lazy.db",
        EMBEDDING_PROVIDER="hashing",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_registering_a_string_does_not_import_it(module_dir):
    write_module(
        module_dir,
        "lazy_driver_mod",
        """
        from memory_drivers.drivers.sqlite import SQLiteDriver

        class LazyDriver(SQLiteDriver):
            name = "lazy"
        """,
    )
    register_driver("lazy", "lazy_driver_mod:LazyDriver")
    assert "lazy_driver_mod" not in sys.modules
    assert "lazy" in MemoryDriverManager.available()
    assert "lazy_driver_mod" not in sys.modules
    driver = get_memory_driver("lazy")
    assert type(driver) is sys.modules["lazy_driver_mod"].LazyDriver


# ======================================================================== cache, default


def test_default_driver_is_sqlite_and_cached(registry):
    driver = get_memory_driver()
    assert type(driver) is SQLiteDriver
    assert driver.path == registry / "default" / "memories.db"
    assert driver.embedder.name == "hashing-256"
    assert get_memory_driver() is driver
    assert get_memory_driver("sqlite") is driver
    assert get_memory_driver("  SQLite ") is driver  # names are trimmed and case-folded


def test_driver_gets_the_process_settings():
    assert get_memory_driver().settings is get_settings()


def test_create_returns_new_uncached_instances():
    cached = get_memory_driver()
    fresh = MemoryDriverManager.create("sqlite")
    try:
        assert fresh is not cached
        assert type(fresh) is SQLiteDriver
        assert get_memory_driver() is cached
    finally:
        fresh.close()


def test_memory_driver_variable_chooses_the_driver(registry, monkeypatch):
    alt = driver_class(registry, "alt")
    register_driver("alt", alt)
    monkeypatch.setenv("MEMORY_DRIVER", "ALT")
    get_settings.cache_clear()
    assert type(get_memory_driver()) is alt
    monkeypatch.setenv("MEMORY_DRIVER", "sqlite")
    get_settings.cache_clear()
    assert type(get_memory_driver()) is SQLiteDriver


def test_memory_driver_variable_with_unknown_name(monkeypatch):
    monkeypatch.setenv("MEMORY_DRIVER", "sqlitee")
    get_settings.cache_clear()
    with pytest.raises(DriverNotFoundError, match="Did you mean 'sqlite'"):
        get_memory_driver()


def test_concurrent_first_use_creates_one_instance(registry):
    made: list[BaseMemoryDriver] = []
    plain = driver_class(registry, "slow")

    def factory(settings: Settings) -> BaseMemoryDriver:
        time.sleep(0.05)  # widen the window in which a second thread could also create one
        made.append(plain(settings))
        return made[-1]

    register_driver("slow", factory)
    results: list[BaseMemoryDriver] = []
    start = threading.Barrier(6)

    def worker() -> None:
        start.wait()
        results.append(get_memory_driver("slow"))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(made) == 1
    assert len(results) == 6
    assert all(result is made[0] for result in results)


# ======================================================================== reset, switch


def test_reset_cache_closes_drivers_and_next_get_reopens(registry):
    first = get_memory_driver()
    stored = first.store(user_id="u1", content="Likes green tea")
    assert first.health_check()["status"] == "ok"

    MemoryDriverManager.reset_cache()

    assert first.health_check()["status"] == "error"
    with pytest.raises(DriverClosedError):
        first.store(user_id="u1", content="after close")
    second = get_memory_driver()
    assert second is not first
    assert second.health_check()["status"] == "ok"
    # same store, so what the first instance wrote is there (closing persisted it)
    assert [hit.memory.id for hit in second.recall("u1")] == [stored.id]
    assert [hit.memory.id for hit in second.recall("u1", query="green tea")] == [stored.id]


def test_reset_cache_without_closing():
    first = get_memory_driver()
    MemoryDriverManager.reset_cache(close=False)
    try:
        assert first.health_check()["status"] == "ok"
        assert get_memory_driver() is not first
    finally:
        first.close()


def test_a_closed_cached_driver_is_replaced():
    first = get_memory_driver()
    first.close()
    second = get_memory_driver()
    assert second is not first
    assert second.count() == 0


def test_set_memory_driver_switches_the_default(registry):
    alt = driver_class(registry, "alt")
    register_driver("alt", alt)
    default = get_memory_driver()

    switched = set_memory_driver("Alt")
    assert type(switched) is alt
    assert get_memory_driver() is switched
    assert get_memory_driver("sqlite") is default  # other names still work, still cached
    assert default.health_check()["status"] == "ok"  # switching does not close the old one

    with pytest.raises(DriverNotFoundError):
        set_memory_driver("nope")
    assert get_memory_driver() is switched  # a failed switch keeps the default

    assert set_memory_driver("sqlite") is default
    assert get_memory_driver() is default

    set_memory_driver("alt")
    MemoryDriverManager.reset_cache()  # forgets the runtime default too
    assert type(get_memory_driver()) is SQLiteDriver


def test_switched_drivers_keep_separate_stores(registry):
    register_driver("alt", driver_class(registry, "alt"))
    get_memory_driver().store(user_id="u1", content="in the default store")
    set_memory_driver("alt").store(user_id="u1", content="in the alt store")
    assert [h.memory.content for h in get_memory_driver().recall("u1")] == ["in the alt store"]
    assert [h.memory.content for h in get_memory_driver("sqlite").recall("u1")] == [
        "in the default store"
    ]


# ======================================================================== registration


def test_register_a_class(registry):
    custom = driver_class(registry, "custom")
    register_driver("custom", custom)
    driver = get_memory_driver("custom")
    assert type(driver) is custom
    assert driver.path == registry / "custom" / "memories.db"
    names = MemoryDriverManager.available()
    assert "custom" in names
    assert names == sorted(names)


def test_register_an_import_string(module_dir):
    write_module(
        module_dir,
        "string_driver_mod",
        """
        from memory_drivers.drivers.sqlite import SQLiteDriver

        class StringDriver(SQLiteDriver):
            name = "stringy"
        """,
    )
    register_driver("stringy", "string_driver_mod:StringDriver")
    driver = get_memory_driver("stringy")
    assert type(driver).__name__ == "StringDriver"
    assert driver.name == "stringy"
    stored = driver.store(user_id="u1", content="works through an import string")
    assert driver.get(stored.id, user_id="u1").content == stored.content


def test_register_a_factory_taking_settings(registry):
    calls: list[Settings] = []
    plain = driver_class(registry, "made")

    def factory(settings: Settings) -> BaseMemoryDriver:
        calls.append(settings)
        return plain(settings)

    register_driver("made", factory)
    assert calls == []  # nothing is made at registration
    driver = get_memory_driver("made")
    assert type(driver) is plain
    assert calls == [get_settings()]
    assert get_memory_driver("made") is driver
    assert len(calls) == 1  # cached: the factory ran once


def test_register_name_is_normalized(registry):
    custom = driver_class(registry, "custom")
    register_driver("  MyDriver ", custom)
    assert "mydriver" in MemoryDriverManager.available()
    assert type(get_memory_driver("MYDRIVER")) is custom


def test_duplicate_names_are_refused_unless_replace(registry):
    first, second = driver_class(registry, "first"), driver_class(registry, "second")
    register_driver("dup", first)
    with pytest.raises(ConfigurationError, match="replace=True"):
        register_driver("dup", second)
    with pytest.raises(ConfigurationError, match="already registered"):
        register_driver("DUP", second)
    with pytest.raises(ConfigurationError, match="'sqlite' is already registered"):
        register_driver("sqlite", second)
    assert type(get_memory_driver("dup")) is first


def test_replace_swaps_the_driver_and_closes_the_cached_one(registry):
    first, second = driver_class(registry, "first"), driver_class(registry, "second")
    register_driver("swap", first)
    old = get_memory_driver("swap")
    register_driver("swap", second, replace=True)
    assert old.health_check()["status"] == "error"  # the stale instance was closed
    assert type(get_memory_driver("swap")) is second


def test_replace_can_override_a_builtin(registry):
    custom = driver_class(registry, "custom")
    register_driver("sqlite", custom, replace=True)
    assert type(get_memory_driver()) is custom


@pytest.mark.parametrize("name", ["", "   ", None, 3])
def test_register_needs_a_name(name):
    with pytest.raises(ConfigurationError, match="non-empty string"):
        register_driver(name, SQLiteDriver)  # type: ignore[arg-type]


def test_register_refuses_a_non_callable_target():
    with pytest.raises(ConfigurationError, match="cannot register 42"):
        register_driver("number", 42)  # type: ignore[arg-type]
    assert "number" not in MemoryDriverManager.available()


def test_factory_returning_a_non_driver_fails():
    register_driver("bad", lambda settings: {"not": "a driver"})
    with pytest.raises(ConfigurationError, match=r"returned .* not a BaseMemoryDriver"):
        get_memory_driver("bad")
    with pytest.raises(ConfigurationError):  # nothing was cached
        get_memory_driver("bad")


def test_class_that_is_not_a_driver_fails():
    register_driver("dict", dict)
    with pytest.raises(ConfigurationError, match="not a BaseMemoryDriver subclass"):
        get_memory_driver("dict")


def test_bad_import_strings(module_dir):
    write_module(module_dir, "empty_driver_mod", "VALUE = 1\n")
    register_driver("nocolon", "empty_driver_mod.Driver")
    with pytest.raises(ConfigurationError, match=r"expected 'package\.module:Class'"):
        get_memory_driver("nocolon")
    register_driver("nomodule", "no_such_module_abc123:Driver")
    with pytest.raises(ConfigurationError, match="'no_such_module_abc123', which does not exist"):
        get_memory_driver("nomodule")
    register_driver("noattr", "empty_driver_mod:Driver")
    with pytest.raises(ConfigurationError, match="has no 'Driver'"):
        get_memory_driver("noattr")


def test_string_pointing_at_a_non_driver_fails(module_dir):
    write_module(module_dir, "other_thing_mod", "class Thing:\n    pass\n")
    register_driver("thing", "other_thing_mod:Thing")
    with pytest.raises(ConfigurationError, match="not a BaseMemoryDriver subclass"):
        get_memory_driver("thing")


# ======================================================================== unknown names


def test_unknown_name_suggests_the_closest():
    register_driver("custom", SQLiteDriver)
    with pytest.raises(DriverNotFoundError) as caught:
        get_memory_driver("sqlte")
    error = caught.value
    assert isinstance(error, LookupError)
    assert isinstance(error, ValueError)
    assert isinstance(error, ConfigurationError)
    message = str(error)
    assert "Unknown memory driver 'sqlte'" in message
    assert "Did you mean 'sqlite'?" in message
    available = message.split("Available: ", 1)[1]
    assert "sqlite" in available
    assert "custom" in available


def test_unknown_name_without_close_match_lists_names():
    with pytest.raises(DriverNotFoundError) as caught:
        get_memory_driver("zzzzzzzz")
    message = str(caught.value)
    assert "Did you mean" not in message
    for name in MemoryDriverManager.available():
        assert name in message


def test_create_with_unknown_name():
    with pytest.raises(DriverNotFoundError, match="Did you mean 'sqlite'"):
        MemoryDriverManager.create("SQLit")


# ======================================================================== missing packages


def test_missing_package_of_a_third_party_driver(module_dir):
    write_module(
        module_dir,
        "needs_missing_mod",
        """
        import some_missing_package_xyz  # noqa: F401

        class Driver:
            pass
        """,
    )
    register_driver("needy", "needs_missing_mod:Driver")
    with pytest.raises(MissingDependencyError) as caught:
        get_memory_driver("needy")
    error = caught.value
    assert isinstance(error, ImportError)
    assert not isinstance(error, ConfigurationError)
    message = str(error)
    assert "'needy'" in message
    assert "some_missing_package_xyz" in message
    assert "Install the packages that 'needs_missing_mod' needs" in message
    assert isinstance(error.__cause__, ModuleNotFoundError)


def test_missing_package_of_a_builtin_names_the_extra(module_dir):
    # A built-in name uses its pip extra, whatever module it points at.
    write_module(module_dir, "needs_missing_mod2", "import some_missing_package_xyz\n")
    register_driver("sqlite", "needs_missing_mod2:Driver", replace=True)
    with pytest.raises(MissingDependencyError, match=r'pip install "memory-drivers\[sqlite\]"'):
        get_memory_driver("sqlite")


def test_sqlite_without_faiss_says_which_extra_to_install(tmp_path):
    result = run_python(
        """
        import sys
        sys.modules["faiss"] = None  # as if faiss-cpu were not installed

        from memory_drivers import MissingDependencyError, get_memory_driver
        try:
            get_memory_driver()
        except MissingDependencyError as error:
            assert isinstance(error, ImportError)
            print(error)
        else:
            raise SystemExit("no MissingDependencyError")
        """,
        cwd=tmp_path,
        MEMORY_DB_URL=f"sqlite:///{tmp_path}/nofaiss.db",
        EMBEDDING_PROVIDER="hashing",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert 'pip install "memory-drivers[sqlite]"' in result.stdout
    assert "'sqlite'" in result.stdout
    assert "faiss" in result.stdout


# ======================================================================== entry points


@pytest.fixture
def installed_plugin(module_dir: Path) -> Path:
    """A real installed distribution (dist-info with entry points) on ``sys.path``: the way a
    third-party package registers drivers."""
    info = module_dir / "fake_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-plugin\nVersion: 1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[memory_drivers.drivers]\n"
        "plugin = fake_plugin_mod:PluginDriver\n"
        "broken = fake_plugin_absent_mod:Driver\n"
        "sqlite = fake_plugin_mod:PluginDriver\n"
        "\n[some.other.group]\n"
        "elsewhere = fake_plugin_mod:PluginDriver\n",
        encoding="utf-8",
    )
    write_module(
        module_dir,
        "fake_plugin_mod",
        """
        from memory_drivers.drivers.sqlite import SQLiteDriver

        class PluginDriver(SQLiteDriver):
            name = "plugin"

            def __init__(self, settings=None, **options):
                url = settings.memory_db_url.replace("memories.db", "plugin.db")
                super().__init__(settings.replace(memory_db_url=url), **options)
        """,
    )
    return module_dir


def test_entry_point_driver_is_found(installed_plugin, registry):
    names = MemoryDriverManager.available()
    assert "plugin" in names
    assert "broken" in names
    assert "elsewhere" not in names  # only the memory_drivers.drivers group counts
    assert "fake_plugin_mod" not in sys.modules  # listing does not import
    driver = get_memory_driver("plugin")
    assert type(driver).__name__ == "PluginDriver"
    assert type(driver).__module__ == "fake_plugin_mod"
    assert driver.path == registry / "default" / "plugin.db"
    assert get_memory_driver("Plugin") is driver
    stored = driver.store(user_id="u1", content="stored through a plugin")
    assert driver.recall("u1")[0].memory.id == stored.id


def test_entry_point_cannot_shadow_a_builtin(installed_plugin):
    assert type(get_memory_driver("sqlite")) is SQLiteDriver


def test_runtime_registration_beats_entry_point(installed_plugin, registry):
    custom = driver_class(registry, "custom")
    register_driver("plugin", custom)
    assert type(get_memory_driver("plugin")) is custom


def test_entry_point_names_are_suggested(installed_plugin):
    with pytest.raises(DriverNotFoundError, match=r"Did you mean 'plugin'\?") as caught:
        get_memory_driver("plugn")
    assert "plugin" in str(caught.value).split("Available: ", 1)[1]


def test_entry_point_to_missing_module(installed_plugin):
    with pytest.raises(ConfigurationError, match="'fake_plugin_absent_mod', which does not exist"):
        get_memory_driver("broken")


def test_entry_point_chosen_by_memory_driver_variable(installed_plugin, monkeypatch):
    monkeypatch.setenv("MEMORY_DRIVER", "plugin")
    get_settings.cache_clear()
    assert type(get_memory_driver()).__name__ == "PluginDriver"


def test_builtin_table_is_read_only():
    with pytest.raises(TypeError):
        BUILTIN_DRIVERS["evil"] = "x:Y"  # type: ignore[index]
