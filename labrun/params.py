"""Notebook parameters as papermill sees them: the ``parameters``-tagged cell.

The server checks a job's parameters against the notebook before it queues anything, so a
misspelt name or a value of the wrong type fails at submission, not an hour later on a GPU.
One reader of a parameter's value (:func:`parse_value`) serves the CLI's ``-p NAME VALUE``,
``%mlparams`` and the sidebar's form (through the server's ``/params/check``), so a value
means the same wherever it is typed.
"""

from __future__ import annotations

import ast
import itertools
import json
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from labrun.errors import InvalidRequest

PARAMETERS_TAG = "parameters"
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
    return "".join(map(str, source)) if isinstance(source, list) else str(source)


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
    """The names the ``parameters`` cell assigns, or None when the notebook has no such cell.

    papermill's own reader of that cell (what ``papermill --help-notebook`` and
    ``papermill.inspect_notebook`` use) finds the names, their annotations and defaults;
    the notebook is already in memory here, so its Python translator reads the cell directly
    rather than ``inspect_notebook`` loading a file. labrun runs Python notebooks only.
    """
    for cell in nb.get("cells", []):
        # A request's notebook is whatever JSON was sent: what is not a cell is no cell.
        metadata = cell.get("metadata") if isinstance(cell, Mapping) else None
        tags = metadata.get("tags") if isinstance(metadata, Mapping) else None
        if isinstance(tags, list) and cell.get("cell_type") == "code" and PARAMETERS_TAG in tags:
            return _parse_parameters_cell(_source(cell))
    return None


def _parse_parameters_cell(source: str) -> dict[str, NotebookParameter]:
    # papermill (the server's and the pool's) is imported here, not with the module: the CLI
    # and the kernel read values with this module and should not pay papermill's seconds.
    from papermill.translators import PythonTranslator

    python = as_python(source)
    try:
        ast.parse(python)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise InvalidRequest(f"the notebook's parameters cell is not valid Python: {err}") from err
    found: dict[str, NotebookParameter] = {}
    for param in PythonTranslator.inspect({"source": python}):
        try:
            default = ast.literal_eval(param.default)
            type_name = "None" if default is None else type(default).__name__
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            default, type_name = None, "None"  # not a literal: any value is accepted
        if param.inferred_type_name in _CHECKS:
            type_name = param.inferred_type_name
        found[param.name] = NotebookParameter(param.name, default, type_name)
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


# Python's and JSON's spellings of the constants: `-p flag true` and `flag=True` are the same.
_CONSTANTS: dict[str, Any] = {
    "True": True,
    "true": True,
    "False": False,
    "false": False,
    "None": None,
    "null": None,
}
# Text that was meant as a literal (a quote or a bracket first) or is code (a call): an error
# rather than a string nobody meant.
_NOT_TEXT = re.compile(r"""^[\[{('"]|\w\s*\(""")
_LITERAL_HINT = (
    "use numbers, true/false/null (or True/False/None), strings (in quotes where they hold spaces "
    "or brackets), or lists and dicts of those (Python or JSON)"
)


def parse_value(text: str) -> Any:
    """A parameter's value, the one reading for ``-p NAME VALUE``, ``%mlparams NAME=VALUE``,
    ``%%mlparams`` lines and the sidebar's form.

    As papermill's ``-p`` reads it (booleans, None, numbers), then a Python literal or JSON
    (``'unet'``, ``[1, 2]``, ``{"a": true}``); any other text stays a string (``-p name unet``),
    except text that looks like a broken literal or code (``[1,``, ``compute()``).

    Raises:
        InvalidRequest: the text is neither a value nor plain text.
    """
    text = text.strip()
    if text in _CONSTANTS:
        return _CONSTANTS[text]
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    try:
        return _plain(ast.literal_eval(text), text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        return json.loads(text)
    except ValueError:
        pass
    if not text or _NOT_TEXT.search(text):
        raise InvalidRequest(f"{text!r} is not a literal value; {_LITERAL_HINT}")
    return text


def _plain(value: Any, text: str) -> Any:
    """``value`` when JSON can record it (tuples as lists); sets, bytes, complex are refused."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        for item in value:
            _plain(item, text)
        return value
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        for item in value.values():
            _plain(item, text)
        return value
    raise InvalidRequest(
        f"{text!r} is a {type(value).__name__}, which a run's parameters cannot record; "
        f"{_LITERAL_HINT}"
    )


def split_assignments(line: str) -> list[str]:
    """``a=1 b='x y' c=[1, 2]`` into its assignments: spaces split outside quotes and brackets."""
    tokens: list[str] = []
    current: list[str] = []
    quote: str | None = None
    depth = 0
    for char in line:
        if quote:
            quote = None if char == quote and (not current or current[-1] != "\\") else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char.isspace() and depth == 0:
            if current:
                tokens.append("".join(current))
                current = []
            continue
        current.append(char)
    if quote or depth:
        raise InvalidRequest(f"unbalanced quotes or brackets in {line!r}")
    if current:
        tokens.append("".join(current))
    return tokens


def parse_line(line: str) -> dict[str, Any]:
    """``lr=0.01 epochs=3 name='small model'``: ``%mlparams``'s one line of assignments."""
    found: dict[str, Any] = {}
    for token in split_assignments(line):
        name, sep, text = token.partition("=")
        if not sep or not NAME.match(name):
            raise InvalidRequest(f"{token!r} is not NAME=VALUE (like lr=0.01)")
        found[name] = _value(text, name)
    return found


def parse_assignments(source: str) -> dict[str, Any]:
    """``name = value`` lines, as a parameters cell writes them (``# comments``, annotations,
    values over several lines): ``%%mlparams`` and the sidebar's form.

    Raises:
        InvalidRequest: naming the line that is not ``name = value`` or has no value.
    """
    try:
        tree = ast.parse(source)
    except (ValueError, RecursionError, MemoryError):  # a NUL byte; brackets nested too deep
        raise InvalidRequest(
            "the lines are not `name = value` lines: they hold a NUL byte or nest too deep"
        ) from None
    except SyntaxError as err:
        said = f" ({err.text.strip()!r})" if err.text and err.text.strip() else ""
        raise InvalidRequest(
            f"line {err.lineno}{said}: {err.msg}; write one `name = value` per line"
        ) from None
    found: dict[str, Any] = {}
    for node in tree.body:
        target: ast.expr | None = None
        value: ast.expr | None = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if not isinstance(target, ast.Name) or value is None:
            raise InvalidRequest(
                f"line {node.lineno} is not `name = value`; keep other code in another cell"
            )
        text = ast.get_source_segment(source, value) or ""
        found[target.id] = _value(text, f"line {node.lineno}")
    return found


def _value(text: str, where: str) -> Any:
    try:
        return parse_value(text)
    except InvalidRequest as err:
        raise InvalidRequest(f"{where}: {err}") from None


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
