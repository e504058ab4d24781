"""The driver registry: names to classes, imported on first use, instances cached per name.

Lookup order: drivers registered at runtime, then the built-in table, then the entry-point group
``memory_drivers.drivers`` (read only when a name is not found otherwise). A third-party package
registers a driver with::

    [project.entry-points."memory_drivers.drivers"]
    mydriver = "my_package.driver:MyDriver"
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any, ClassVar

from .base import BaseMemoryDriver
from .config import Settings, get_settings
from .errors import ConfigurationError, DriverNotFoundError, MissingDependencyError, did_you_mean

__all__ = [
    "BUILTIN_DRIVERS",
    "ENTRY_POINT_GROUP",
    "MemoryDriverManager",
    "get_memory_driver",
    "register_driver",
    "set_memory_driver",
]

ENTRY_POINT_GROUP = "memory_drivers.drivers"

#: Built-in drivers: name -> "module:Class". Aliases share an entry.
BUILTIN_DRIVERS: Mapping[str, str] = MappingProxyType(
    {
        "pgvector": "memory_drivers.drivers.pgvector:PgVectorDriver",
        "postgres": "memory_drivers.drivers.pgvector:PgVectorDriver",
        "sqlite": "memory_drivers.drivers.sqlite:SQLiteDriver",
        "automem": "memory_drivers.drivers.automem:AutoMemDriver",
        "chroma": "memory_drivers.drivers.chroma:ChromaDriver",
        "replicated": "memory_drivers.drivers.replicated:ReplicatedDriver",
    }
)

#: The pip extra that installs each built-in driver's packages.
DRIVER_EXTRAS: Mapping[str, str] = MappingProxyType(
    {
        "pgvector": "pgvector",
        "postgres": "pgvector",
        "sqlite": "sqlite",
        "automem": "automem",
        "chroma": "chroma",
    }
)

DriverFactory = Callable[[Settings], BaseMemoryDriver]
Target = type[BaseMemoryDriver] | str | DriverFactory


def _import_target(name: str, target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    if not attribute:
        raise ConfigurationError(
            f"memory driver {name!r} is registered as {target!r}; expected 'package.module:Class'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or ""
        ours = missing == module_name or module_name.startswith(missing + ".")
        if ours and missing:
            raise ConfigurationError(
                f"memory driver {name!r} points at module {module_name!r}, which does not exist"
            ) from exc
        extra = DRIVER_EXTRAS.get(name)
        how = (
            f'Install with: pip install "memory-drivers[{extra}]"'
            if extra
            else f"Install the packages that {module_name!r} needs"
        )
        raise MissingDependencyError(
            f"memory driver {name!r} needs packages that are not installed ({exc}). {how}"
        ) from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(
            f"memory driver {name!r}: module {module_name!r} has no {attribute!r}"
        ) from None


def _with_cache(driver: BaseMemoryDriver, settings: Settings) -> BaseMemoryDriver:
    """``driver`` behind the cache that ``MEMORY_CACHE`` names (``redis``), or as it is."""
    if settings.memory_cache != "redis":
        return driver
    from .redis.cache import CachedMemoryDriver

    if isinstance(driver, CachedMemoryDriver):
        return driver
    try:
        return CachedMemoryDriver.from_settings(driver, settings)
    except BaseException:
        driver.close()
        raise


class MemoryDriverManager:
    """Registry and instance cache. Class-level, so every import shares one."""

    _registered: ClassVar[dict[str, Target]] = {}
    _instances: ClassVar[dict[str, BaseMemoryDriver]] = {}
    _default: ClassVar[str | None] = None
    _lock: ClassVar[threading.RLock] = threading.RLock()

    @classmethod
    def register_driver(cls, name: str, target: Target, *, replace: bool = False) -> None:
        """Register ``target`` (a driver class, a ``"module:Class"`` string, or a factory that
        takes :class:`Settings`) under ``name``. A taken name raises unless ``replace=True``."""
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError("a driver name must be a non-empty string")
        if not (isinstance(target, str) or callable(target)):
            raise ConfigurationError(
                f"cannot register {target!r}: give a driver class, a 'module:Class' string "
                "or a factory function"
            )
        key = name.strip().lower()
        with cls._lock:
            if not replace and (key in cls._registered or key in BUILTIN_DRIVERS):
                raise ConfigurationError(
                    f"a memory driver named {key!r} is already registered; "
                    "pass replace=True to replace it"
                )
            cls._registered[key] = target
            stale = cls._instances.pop(key, None)
        if stale is not None:
            stale.close()

    @classmethod
    def available(cls) -> list[str]:
        """Every known driver name: registered, built-in and from entry points."""
        names = set(cls._registered) | set(BUILTIN_DRIVERS)
        names |= {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
        return sorted(names)

    @classmethod
    def _resolve(cls, name: str) -> Target:
        if name in cls._registered:
            return cls._registered[name]
        if name in BUILTIN_DRIVERS:
            return BUILTIN_DRIVERS[name]
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                return str(ep.value)
        names = cls.available()
        raise DriverNotFoundError(
            f"Unknown memory driver {name!r}.{did_you_mean(name, names)} "
            f"Available: {', '.join(names)}."
        )

    @classmethod
    def create(
        cls, name: str, settings: Settings | None = None, **options: Any
    ) -> BaseMemoryDriver:
        """A new, uncached driver instance. ``options`` go to the driver's constructor (or
        factory) after the settings, e.g. ``allow_embedder_mismatch=True`` to re-embed."""
        key = name.strip().lower()
        target = cls._resolve(key)
        if isinstance(target, str):
            target = _import_target(key, target)
        settings = settings or get_settings()
        if isinstance(target, type):
            if not issubclass(target, BaseMemoryDriver):
                raise ConfigurationError(
                    f"memory driver {key!r} resolves to {target!r}, "
                    "which is not a BaseMemoryDriver subclass"
                )
            return _with_cache(target(settings, **options), settings)
        driver = target(settings, **options)
        if not isinstance(driver, BaseMemoryDriver):
            raise ConfigurationError(
                f"the factory of memory driver {key!r} returned {driver!r}, not a BaseMemoryDriver"
            )
        return _with_cache(driver, settings)

    @classmethod
    def driver(cls, name: str | None = None) -> BaseMemoryDriver:
        """The cached instance of ``name`` (default: ``MEMORY_DRIVER``, or the last
        :meth:`set_default`), created on first use."""
        key = (name or cls._default or get_settings().memory_driver).strip().lower()
        with cls._lock:
            instance = cls._instances.get(key)
            if instance is None or instance._closed:
                instance = cls._instances[key] = cls.create(key)
            return instance

    @classmethod
    def set_default(cls, name: str) -> BaseMemoryDriver:
        """Make ``name`` the default driver from now on and return its instance."""
        driver = cls.driver(name)
        cls._default = name.strip().lower()
        return driver

    @classmethod
    def reset_cache(cls, *, close: bool = True) -> None:
        """Forget cached instances (closing them unless ``close=False``) and the default."""
        with cls._lock:
            instances = list(cls._instances.values())
            cls._instances.clear()
            cls._default = None
        if close:
            failures = []
            for instance in instances:
                try:
                    instance.close()
                except Exception as exc:  # close the others before reporting it
                    failures.append(exc)
            if failures:
                raise failures[0]


def get_memory_driver(name: str | None = None) -> BaseMemoryDriver:
    """The cached driver named by ``name``, or by ``MEMORY_DRIVER`` (default ``sqlite``)."""
    return MemoryDriverManager.driver(name)


def set_memory_driver(name: str) -> BaseMemoryDriver:
    """Switch the default driver at runtime; returns it."""
    return MemoryDriverManager.set_default(name)


def register_driver(name: str, target: Target, *, replace: bool = False) -> None:
    """Register a custom driver: a class, a ``"module:Class"`` string, or a factory."""
    MemoryDriverManager.register_driver(name, target, replace=replace)
