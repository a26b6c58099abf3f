"""Notebook parameters as papermill sees them: the ``parameters``-tagged cell.

The server checks a job's parameters against the notebook before it queues anything, so a
misspelt name or a value of the wrong type fails at submission, not an hour later on a GPU.
The CLI parses ``-p NAME VALUE`` the way papermill's own command line does.
"""

from __future__ import annotations

import ast
import itertools
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from labrun.errors import InvalidRequest

PARAMETERS_TAG = "parameters"


@dataclass(frozen=True)
class NotebookParameter:
    name: str
    default: Any
    # The Python type name of the default ("int", "float", "str", ...), or "None" when the
    # default is not a literal and any value is accepted.
    type_name: str


def load_notebook(text: str | bytes, *, where: str = "the notebook") -> dict[str, Any]:
    """Parse notebook JSON and check it is an nbformat 4 notebook with cells."""
    try:
        nb = json.loads(text)
    except ValueError as err:
        raise InvalidRequest(f"{where} is not valid JSON ({err}); is it an .ipynb file?") from err
    check_notebook(nb, where=where)
    return nb


def check_notebook(nb: Any, *, where: str = "the notebook") -> None:
    """Refuse what is not an nbformat 4 notebook with a list of cells."""
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise InvalidRequest(f"{where} is not a Jupyter notebook: it has no list of cells")
    if nb.get("nbformat") != 4:
        raise InvalidRequest(
            f"{where} is nbformat {nb.get('nbformat')!r}; labrun runs nbformat 4 notebooks "
            "(open and save it in JupyterLab to convert it)"
        )


def _source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def as_python(source: str) -> str:
    """A code cell's source with its IPython lines (``%%mlparams``, ``%matplotlib inline``,
    ``!pip ...``) blanked, so the Python around them still parses, on the same lines."""
    return "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )


def code_sources(nb: Mapping[str, Any]) -> list[str]:
    """Every code cell of the notebook, as Python (see :func:`as_python`)."""
    return [
        as_python(_source(cell)) for cell in nb.get("cells", []) if cell.get("cell_type") == "code"
    ]


def notebook_parameters(nb: Mapping[str, Any]) -> dict[str, NotebookParameter] | None:
    """The names the ``parameters`` cell assigns, or None when the notebook has no such cell."""
    for cell in nb.get("cells", []):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") == "code" and PARAMETERS_TAG in tags:
            return _parse_parameters_cell(_source(cell))
    return None


def _parse_parameters_cell(source: str) -> dict[str, NotebookParameter]:
    try:
        tree = ast.parse(as_python(source))
    except SyntaxError as err:
        raise InvalidRequest(f"the notebook's parameters cell is not valid Python: {err}") from err
    found: dict[str, NotebookParameter] = {}
    for node in tree.body:
        targets: list[ast.expr]
        if isinstance(node, ast.Assign):
            targets, value, annotation = node.targets, node.value, None
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value, annotation = [node.target], node.value, node.annotation
        else:
            continue
        try:
            default = ast.literal_eval(value)
            type_name = "None" if default is None else type(default).__name__
        except ValueError:
            default, type_name = None, "None"
        if isinstance(annotation, ast.Name) and annotation.id in _CHECKS:
            type_name = annotation.id
        for target in targets:
            if isinstance(target, ast.Name):
                found[target.id] = NotebookParameter(target.id, default, type_name)
    return found


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_CHECKS = {
    "int": _is_int,
    "float": lambda v: _is_int(v) or isinstance(v, float),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, list),
    "tuple": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
}


def check_parameters(nb: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` checked against the notebook's parameters cell; ints become floats where
    the default is a float, so ``-p lr 1`` means ``lr = 1.0``."""
    declared = notebook_parameters(nb)
    if declared is None:
        if values:
            raise InvalidRequest(
                "the notebook has no cell tagged 'parameters', so it takes no parameters; "
                "tag the cell that sets the defaults (View > Cell Toolbar > Tags in Jupyter)"
            )
        return {}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        raise InvalidRequest(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
            f"the notebook's parameters cell sets {known}"
        )
    checked: dict[str, Any] = {}
    for name, value in values.items():
        param = declared[name]
        check = _CHECKS.get(param.type_name)
        if value is not None and check is not None and not check(value):
            raise InvalidRequest(
                f"parameter {name} expects {param.type_name} (its default is "
                f"{param.default!r}), got {value!r} ({type(value).__name__})"
            )
        if param.type_name == "float" and _is_int(value):
            value = float(value)
        checked[name] = value
    return checked


def parse_value(text: str) -> Any:
    """A command-line value as papermill's ``-p`` reads it: numbers, booleans, None, JSON
    lists and objects; anything else stays a string."""
    if text in ("True", "true"):
        return True
    if text in ("False", "false"):
        return False
    if text in ("None", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def expand_sweep(
    grid: Mapping[str, Iterable[Any]],
    *,
    samples: int | None = None,
    seed: int | None = None,
) -> list[dict[str, Any]]:
    """Every combination of the grid's values, or ``samples`` of them drawn at random
    (without repetition, reproducible with ``seed``)."""
    names = list(grid)
    values = [list(grid[name]) for name in names]
    for name, options in zip(names, values, strict=True):
        if not options:
            raise InvalidRequest(f"sweep parameter {name} has no values")
    combos = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]
    if samples is not None:
        if samples < 1:
            raise InvalidRequest("--samples must be at least 1")
        combos = random.Random(seed).sample(combos, min(samples, len(combos)))
    return combos
