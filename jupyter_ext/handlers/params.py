"""Parameters read on the server: the sidebar's form is read by the same reader as the CLI's
``-p`` and ``%mlparams`` (:mod:`labrun.params`) rather than by a parser of its own."""

from __future__ import annotations

import asyncio
from typing import Any

from labrun import params
from labrun.models import CheckedParams, CheckParams

from .base import LabrunHandler, operation


def _check(body: CheckParams) -> dict[str, Any]:
    values = params.parse_assignments(body.text)
    if body.content is None:
        return values
    params.check_notebook(body.content)
    return params.check_parameters(body.content, values)


class ParamsCheckHandler(LabrunHandler):
    @operation(
        "Read `name = value` lines as a job's parameters (and check them against a notebook's "
        "parameters cell): the values a submission would get, or a 400 naming the bad line",
        body=CheckParams,
        response=CheckedParams,
        errors=(400, 403),
        action="params.check",
    )
    async def post(self, body: CheckParams) -> CheckedParams:
        # Reading a notebook's parameters cell parses Python (and imports papermill once):
        # off the event loop.
        return CheckedParams(parameters=await asyncio.to_thread(_check, body))
