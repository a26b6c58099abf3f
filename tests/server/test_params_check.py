"""POST /params/check: the sidebar's form read by the server's one parameter reader."""

from __future__ import annotations

from typing import Any

import nbformat
from support import param_cases
from support.api import Api


@param_cases.values
async def test_a_value_reads_the_same_through_the_route(api: Api, text: str, value: Any) -> None:
    checked = await api("POST", "params/check", body={"text": f"x = {text}\ny=1"})
    assert checked == {"parameters": {"x": value, "y": 1}}


@param_cases.refused
async def test_what_is_not_a_value_is_a_400_naming_the_line(
    api: Api, text: str, message: str
) -> None:
    refused = await api("POST", "params/check", body={"text": f"y = 1\nx = {text}"}, status=400)
    assert refused["message"].startswith("line 2: ")
    assert message in refused["message"]


async def test_a_form_is_checked_against_the_notebooks_parameters_cell(api: Api) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("lr = 0.01\nepochs = 3", metadata={"tags": ["parameters"]})
    ]
    body = {"text": "lr = 1\nepochs = 2", "content": nb}
    assert await api("POST", "params/check", body=body) == {"parameters": {"lr": 1.0, "epochs": 2}}
    refused = await api(
        "POST", "params/check", body={**body, "text": "lr = 1\nbatch = 2"}, status=400
    )
    assert "unknown parameter batch" in refused["message"]
    refused = await api(
        "POST", "params/check", body={"text": "lr=1", "content": {"cells": []}}, status=400
    )
    assert "nbformat" in refused["message"]
