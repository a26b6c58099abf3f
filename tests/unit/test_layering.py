"""labrun's modules import one way: no circle, not even inside a function; none is too long.

A function-level import that closes a circle still ties the modules together (and hides it);
a function-level import is for deferring what is heavy or what Dask pickles by reference.
Imports for type checking only do not count: they never run.
"""

from __future__ import annotations

import ast
import graphlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

PACKAGES = [
    "labrun",
    "labrun.cli",
    "labrun.delivery",
    "labrun.jupyter_ext",
    "labrun.jupyter_ext.handlers",
    "labrun.jupyter_ext.store",
    "labrun.executor",
    "labrun.kernel_magics",
]
# A module longer than this does more than one job; the wire schema is one long list.
MAX_LINES = 500
LONG_BY_NATURE = {"labrun.models"}


def modules(package: str) -> dict[str, Path]:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations is not None
    (folder,) = spec.submodule_search_locations
    init = Path(folder) / "__init__.py"
    found = {package: init} if init.exists() else {}
    for info in pkgutil.iter_modules([folder]):
        if not info.ispkg:  # a subpackage is a package of PACKAGES (or migrations)
            found[f"{package}.{info.name}"] = Path(folder) / f"{info.name}.py"
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:`` (never imported when running)."""
    found: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        found.append(node)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return found


def imported(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports when it runs, wherever in it the import is."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def all_modules() -> dict[str, Path]:
    return {name: path for p in PACKAGES for name, path in modules(p).items()}


def assert_no_circle(among: str = "") -> None:
    """No import circle among the modules whose names start with ``among``."""
    found = all_modules()
    # A module's own packages are imported before it, whatever it says: not an edge.
    graph = {
        name: {
            other
            for other in imported(name, path)
            if other in found and not name.startswith(f"{other}.") and other != name
        }
        for name, path in found.items()
        if name.startswith(among)
    }
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        pytest.fail(f"an import circle: {' -> '.join(err.args[1])}")


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle(package: str) -> None:
    assert_no_circle(package)


def test_no_import_circle_across_the_packages() -> None:
    assert_no_circle()


def test_no_module_is_longer_than_one_job_needs() -> None:
    long = {
        name: length
        for name, path in all_modules().items()
        if (length := len(path.read_text().splitlines())) > MAX_LINES and name not in LONG_BY_NATURE
    }
    assert long == {}, f"split these modules (over {MAX_LINES} lines): {long}"
