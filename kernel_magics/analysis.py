"""What a cell reads from the notebook and what it defines, found without running it."""

from __future__ import annotations

import ast
import re
import symtable
from dataclasses import dataclass

# IPython's own names in every namespace: never shipped, never returned.
_IPYTHON_NAME = re.compile(r"^(_+|_i+|_i?\d+|_[iod]h|In|Out|get_ipython|exit|quit|open)$")


@dataclass(frozen=True)
class CellNames:
    reads: list[str]
    """Names the cell may read before it assigns them: candidates to ship from the notebook."""
    assigns: list[str]
    """Names the cell binds at its top level: what comes back."""


def _nested_globals(table: symtable.SymbolTable) -> set[str]:
    names: set[str] = set()
    for child in table.get_children():
        for symbol in child.get_symbols():
            if symbol.is_global() and (symbol.is_referenced() or symbol.is_assigned()):
                names.add(symbol.get_name())
        names |= _nested_globals(child)
    return names


def _loads(node: ast.AST) -> set[str]:
    loads = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            loads.add(sub.id)
        elif isinstance(sub, ast.AugAssign) and isinstance(sub.target, ast.Name):
            loads.add(sub.target.id)  # `y += 1` reads y
    return loads


def _binds_always(stmt: ast.stmt) -> set[str]:
    """Names a top-level statement surely binds (not inside a branch or loop)."""
    if isinstance(stmt, ast.Assign):
        return {n.id for t in stmt.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    if isinstance(stmt, ast.AnnAssign | ast.AugAssign) and isinstance(stmt.target, ast.Name):
        return {stmt.target.id} if not isinstance(stmt, ast.AnnAssign) or stmt.value else set()
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {stmt.name}
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names if a.name != "*"}
    return set()


def cell_names(source: str) -> CellNames:
    """The names ``source`` (plain Python: IPython syntax already transformed) reads and binds.

    Raises SyntaxError for a cell that is not valid Python.
    """
    tree = ast.parse(source)
    table = symtable.symtable(source, "<cell>", "exec")
    top = {s.get_name(): s for s in table.get_symbols()}
    candidates = {n for n, s in top.items() if s.is_referenced()} | _nested_globals(table)
    for stmt in tree.body:
        for sub in ast.walk(stmt):
            if isinstance(sub, ast.AugAssign) and isinstance(sub.target, ast.Name):
                candidates.add(sub.target.id)
    # A name the cell assigns before any statement reads it is the cell's own: shipping the
    # notebook's old value (a large model, say) would only cost time.
    reads: set[str] = set()
    assigned: set[str] = set()
    for stmt in tree.body:
        reads |= (_loads(stmt) & candidates) - assigned
        assigned |= _binds_always(stmt)
    assigns = [
        n for n, s in top.items() if (s.is_assigned() or s.is_imported()) and not n.startswith("_")
    ]
    return CellNames(
        reads=sorted(n for n in reads if not _IPYTHON_NAME.match(n)),
        assigns=[n for n in assigns if not _IPYTHON_NAME.match(n)],
    )


def name_list(text: str) -> list[str]:
    """``"model, losses"`` as Python names; empty when any part is not one (or none is given)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    return names if all(n.isidentifier() and n.isascii() for n in names) else []
