"""The layout rules of docs/architecture.md, checked on the package's source with ``ast``.

- No import cycle among ``memory_drivers`` modules. Every ``import`` counts, including those
  inside functions (a lazy import is still a dependency, and one that closes a circle breaks as
  soon as someone moves it to the top). The registry's drivers are strings
  (``"memory_drivers.drivers.sqlite:SQLiteDriver"``), imported by ``importlib``: no edge.
- Shared code never imports a driver or a front-end: arrows run from drivers and front-ends
  down to shared code, never back.
- No module is longer than 600 lines unless its docstring says why, in a paragraph starting
  ``Why this module is long:``.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import memory_drivers

PACKAGE = Path(memory_drivers.__file__).parent
MAX_LINES = 600
LONG_REASON = "Why this module is long:"

#: Front-ends: they translate a protocol into calls of the public API.
FRONT_ENDS = ("cli", "server", "ui", "mcp", "integrations", "bench", "__main__")
#: Drivers: one backend each.
DRIVERS = ("drivers",)
#: Everything else except ``testing`` (the conformance kit, which compares every driver with
#: the sqlite reference) is shared code.
NOT_SHARED = (*FRONT_ENDS, *DRIVERS, "testing")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


@cache
def imports(name: str) -> frozenset[str]:
    """The ``memory_drivers`` modules that ``name`` imports, anywhere in it. An import of a
    ``memory_drivers`` module that does not exist raises (mypy, told to ignore missing imports,
    does not see a wrong relative import inside a function)."""
    tree = ast.parse(modules()[name].read_text(encoding="utf-8"))
    package = name if is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                # `from pkg import submodule` depends on the submodule; `from pkg import name`
                # on the package (its __init__ defines the name).
                found.add(submodule if submodule in modules() else base)
    missing = sorted(f for f in found if f.startswith("memory_drivers") and f not in modules())
    assert not missing, f"{name} imports modules that do not exist: {missing}"
    return frozenset(f for f in found if f in modules() and f != name)


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_graph_is_read() -> None:
    """Guards the checks below: they pass trivially if the parser finds no imports. Also fails
    on an import of a ``memory_drivers`` module that does not exist."""
    for name in modules():
        imports(name)
    assert "memory_drivers.sql.engines" in imports("memory_drivers.drivers.sqlite")
    assert "memory_drivers.base" in imports("memory_drivers.sql.driver")  # relative
    assert "memory_drivers.sql.migrations" in imports("memory_drivers.migrations.env")  # absolute
    assert len(modules()) > 50


def test_no_import_cycle() -> None:
    """Failing names a circle of imports: move the shared part down (into the module both
    use) or let the lower module take a hook instead of importing the upper one."""
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        path.append(name)
        for target in sorted(imports(name)):
            visit(target)
        path.pop()
        done.add(name)

    for name in sorted(modules()):
        visit(name)


def test_shared_code_imports_no_driver_or_front_end() -> None:
    """Failing means shared code depends on a backend or a front-end: pass what it needs in
    (a hook, an argument) or move the code to the driver or front-end that needs it."""
    wrong = sorted(
        f"{name} imports {target}"
        for name in modules()
        if layer(name) not in NOT_SHARED
        for target in imports(name)
        if layer(target) in (*DRIVERS, *FRONT_ENDS)
    )
    assert wrong == []


def test_drivers_import_no_front_end() -> None:
    wrong = sorted(
        f"{name} imports {target}"
        for name in modules()
        if layer(name) in DRIVERS
        for target in imports(name)
        if layer(target) in FRONT_ENDS
    )
    assert wrong == []


def test_long_modules_say_why() -> None:
    """Failing: split the module along a natural seam, or say at its top why it is one piece
    (a docstring paragraph starting "Why this module is long:")."""
    unexplained = []
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines <= MAX_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if not any(line.startswith(LONG_REASON) for line in docstring.splitlines()):
            unexplained.append(f"{name} ({lines} lines)")
    assert unexplained == []
