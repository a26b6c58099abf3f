"""Reading a request into its models: the query's arguments and the JSON body, with a 400
that says which field was wrong."""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from tornado import web

from labrun.errors import InvalidRequest

# Query arguments Jupyter Server itself reads; never an error in a labrun query.
_SERVER_ARGS = frozenset({"token", "_xsrf"})


def is_server_arg(name: str) -> bool:
    """Query arguments that belong to Jupyter, not to the route.

    JupyterLab's ``ServerConnection`` appends a bare timestamp (``?status=queued&1795409``)
    to every GET to defeat caches.
    """
    return name in _SERVER_ARGS or name.isdigit()


def describe_validation_error(
    err: ValidationError,
    where: str,
    name_item: Callable[[tuple[Any, ...]], str | None] | None = None,
) -> str:
    """One readable line per problem: ``body.points.0.value: Input should be a number``.

    ``name_item`` may name what a location is in the request's own terms (a metric point
    by its key and step).
    """
    problems = []
    for e in err.errors()[:10]:
        loc = ".".join(str(p) for p in (where, *e["loc"]))
        label = name_item(e["loc"]) if name_item is not None else None
        if label:
            loc = f"{loc} ({label})"
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] in ("float_type", "int_type") and isinstance(e["input"], str):
            message = (
                f"{message}, not the string {e['input']!r}; send numbers as JSON numbers "
                "(and NaN, Infinity, -Infinity as those JSON constants)"
            )
        problems.append(f"{loc}: {message}")
    return "invalid request: " + "; ".join(problems)


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    return any(typing.get_origin(a) is list for a in typing.get_args(annotation))


def parse_query(handler: web.RequestHandler, model: type[BaseModel]) -> BaseModel:
    values: dict[str, Any] = {}
    for name in handler.request.query_arguments:
        if is_server_arg(name):
            continue
        info = model.model_fields.get(name)
        if info is None:
            raise InvalidRequest(
                f"unknown query argument {name!r}; this route takes "
                + (", ".join(model.model_fields) or "none")
            )
        if _is_list(info.annotation):
            values[name] = [
                part for arg in handler.get_query_arguments(name) for part in arg.split(",") if part
            ]
        else:
            values[name] = handler.get_query_argument(name)
    try:
        return model.model_validate(values)
    except ValidationError as err:
        raise InvalidRequest(describe_validation_error(err, "query")) from err


def parse_body(body: bytes, model: type[BaseModel]) -> BaseModel:
    if not body:
        raise InvalidRequest(f"the request needs a JSON body ({model.__name__})")
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        if any(e["type"] == "json_invalid" for e in err.errors()):
            raise InvalidRequest(
                f"the request body is not valid JSON: {err.errors()[0]['msg']}"
            ) from err
        name_item = None
        namer = getattr(model, "name_item", None)
        if namer is not None:
            # Only on the way out: read the raw request again to name what was wrong.
            raw = json.loads(body)
            name_item = functools.partial(namer, raw)
        raise InvalidRequest(describe_validation_error(err, "body", name_item)) from err
