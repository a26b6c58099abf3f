"""The one parameter reader (labrun.params): values, assignment lines, and a notebook's
parameters cell as papermill reads it."""

from __future__ import annotations

from typing import Any

import nbformat
import pytest
from support import param_cases

from labrun.cli.job_options import read_parameters
from labrun.errors import InvalidRequest
from labrun.params import (
    check_parameters,
    notebook_parameters,
    parse_assignments,
    parse_line,
    parse_value,
)


@param_cases.values
def test_a_value_reads_the_same_from_the_cli(text: str, value: Any) -> None:
    assert read_parameters((("x", text),), ()) == {"x": value}


@param_cases.values
def test_a_value_reads_the_same_on_a_mlparams_line(text: str, value: Any) -> None:
    assert parse_line(f"x={text} y=1") == {"x": value, "y": 1}


@param_cases.values
def test_a_value_reads_the_same_in_a_form_line(text: str, value: Any) -> None:
    assert parse_assignments(f"# a comment\nx = {text}\n\ny: int = 1") == {"x": value, "y": 1}


@param_cases.refused
def test_what_is_not_a_value_is_refused_everywhere(text: str, message: str) -> None:
    for read in (
        lambda: parse_value(text),
        lambda: read_parameters((("x", text),), ()),
        lambda: parse_line(f"x={text}"),
        lambda: parse_assignments(f"x = {text}"),
    ):
        with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
            read()


def test_text_stays_a_string_as_papermill_reads_it() -> None:
    assert parse_value("hello world") == "hello world"
    assert parse_value(" 3 ") == 3
    assert parse_value("(1, 2)") == (1, 2)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("lr", "'lr' is not NAME=VALUE"),
        ("2x=1", "'2x=1' is not NAME=VALUE"),
        ("name='a b", "unbalanced quotes or brackets"),
        ("sizes=[1, 2", "unbalanced quotes or brackets"),
    ],
)
def test_a_mlparams_line_names_what_is_wrong(line: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_line(line)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("lr=0.1\nepochs 3", "line 2 \\('epochs 3'\\)"),
        ("x.y = 3", "line 1 is not `name = value`"),
        ("s = {1, 2}", "line 1: .{1, 2}. is a set"),
        ("print(1)", "line 1 is not `name = value`"),
        ("lr = 0.1\nx = compute()", "line 2: 'compute\\(\\)' is not a literal value"),
    ],
)
def test_assignment_lines_name_the_bad_line(source: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_assignments(source)


def test_assignment_lines_take_values_over_several_lines() -> None:
    assert parse_assignments("sizes = [\n    1,\n    2,\n]\nflag = true") == {
        "sizes": [1, 2],
        "flag": True,
    }


def _notebook(source: str) -> dict[str, Any]:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import os"),
        nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]}),
    ]
    return dict(nb)


def test_the_parameters_cell_is_read_by_papermill_with_types_from_the_defaults() -> None:
    nb = _notebook(
        "%%mlparams\nlr = 0.01  # the learning rate\nepochs: int = 3\nname = 'unet'\n"
        "sizes = [1,\n         2]\nfound = os.getcwd()"
    )
    declared = notebook_parameters(nb)
    assert declared is not None
    assert {n: (p.default, p.type_name) for n, p in declared.items()} == {
        "lr": (0.01, "float"),
        "epochs": (3, "int"),
        "name": ("unet", "str"),
        "sizes": ([1, 2], "list"),
        "found": (None, "None"),  # not a literal: any value goes
    }
    assert notebook_parameters(dict(nbformat.v4.new_notebook())) is None


def test_values_are_checked_against_the_parameters_cell() -> None:
    nb = _notebook("lr = 0.01\nepochs = 3\nanything = os.getcwd()")
    assert check_parameters(nb, {"lr": 1, "anything": [1]}) == {"lr": 1.0, "anything": [1]}
    with pytest.raises(InvalidRequest, match="parameter epochs expects int"):
        check_parameters(nb, {"epochs": "three"})
    with pytest.raises(InvalidRequest, match="unknown parameter batch"):
        check_parameters(nb, {"batch": 3})
    with pytest.raises(InvalidRequest, match="not valid Python"):
        check_parameters(_notebook("lr = (0.01"), {})
