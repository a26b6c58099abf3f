"""The worker and kernel packages import one way: no circle, not even inside a function.

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

PACKAGES = ["labrun.executor", "labrun.kernel_magics"]


def modules(package: str) -> dict[str, Path]:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations is not None
    (folder,) = spec.submodule_search_locations
    found = {package: Path(folder) / "__init__.py"}
    for info in pkgutil.iter_modules([folder]):
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


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle(package: str) -> None:
    found = {name: path for p in PACKAGES for name, path in modules(p).items()}
    # A module's own packages are imported before it, whatever it says: not an edge.
    graph = {
        name: {
            other
            for other in imported(name, path)
            if other in found and not name.startswith(f"{other}.") and other != name
        }
        for name, path in found.items()
        if name.startswith(package)
    }
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        pytest.fail(f"an import circle: {' -> '.join(err.args[1])}")
