"""Build the OpenAPI 3 document from the route table and the operations' models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from labrun import __version__
from labrun.models import ErrorBody, Response
from labrun.settings import API_PREFIX

from .handlers.base import METHODS, PATH_PARAMS, Operation, operation_of

REF = "#/components/schemas/{model}"


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, model: type[BaseModel]) -> dict[str, str]:
        if model.__name__ not in self.components:
            # What a response holds is what the server writes (every field); what a request
            # holds is what the server reads (fields with defaults may be left out).
            mode: JsonSchemaMode = "serialization" if issubclass(model, Response) else "validation"
            schema = model.model_json_schema(ref_template=REF, mode=mode)
            self.components.update(schema.pop("$defs", {}))
            self.components[model.__name__] = schema
        return {"$ref": REF.format(model=model.__name__)}

    def query_parameters(self, model: type[BaseModel]) -> list[dict[str, Any]]:
        schema = model.model_json_schema(ref_template=REF)
        self.components.update(schema.pop("$defs", {}))
        required = set(schema.get("required", []))
        params = []
        for name, prop in schema["properties"].items():
            param: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": prop,
            }
            if "description" in prop:
                param["description"] = prop["description"]
            if prop.get("type") == "array" or any(
                p.get("type") == "array" for p in prop.get("anyOf", [])
            ):
                # Lists are comma-separated (or the argument repeated).
                param["style"], param["explode"] = "form", False
            params.append(param)
        return params


def _operation(
    schemas: _Schemas, method: str, handler: type, op: Operation, path_params: list[dict[str, Any]]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{method}{handler.__name__.removesuffix('Handler')}",
        "parameters": list(path_params),
        "responses": {},
    }
    if op.query is not None:
        out["parameters"] += schemas.query_parameters(op.query)
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": schemas.ref(op.body)}},
        }
    elif op.request_content is not None:
        out["requestBody"] = {
            "required": False,  # an empty file is a file
            "content": {op.request_content: {"schema": {"type": "string", "format": "binary"}}},
        }
    if op.response is not None:
        content = {"application/json": {"schema": schemas.ref(op.response)}}
    elif op.response_content is not None:
        content = {op.response_content: {"schema": {"type": "string", "format": "binary"}}}
    else:
        content = {"application/json": {"schema": {}}}
    for status in (op.status, *op.also):
        out["responses"][str(status)] = {"description": op.summary, "content": content}
    error = {"content": {"application/json": {"schema": schemas.ref(ErrorBody)}}}
    reasons = {
        400: "invalid request",
        403: "not authenticated, or not allowed (another user's run; an expired or revoked token)",
        404: "not found",
        409: "conflict",
        413: "the request body is larger than c.LabRun.max_body_size",
    }
    errors = set(op.errors)
    if path_params:
        errors |= {400, 404}  # an id no row can have, a name too long
    if op.body is not None:
        errors.add(413)
    for status in sorted(errors):
        out["responses"][str(status)] = {"description": reasons.get(status, "error"), **error}
    if not out["parameters"]:
        del out["parameters"]
    return out


def build_document(routes: list[tuple[str, Any]]) -> dict[str, Any]:
    schemas = _Schemas()
    paths: dict[str, Any] = {}
    for path, handler in routes:
        path_params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": PATH_PARAMS[name][2],
            }
            for name in re.findall(r"\{(\w+)\}", path)
        ]
        item: dict[str, Any] = {}
        for method in METHODS:
            op = operation_of(handler, method)
            if op is not None:
                item[method] = _operation(schemas, method, handler, op, path_params)
        if path == "/events":
            item["get"] = {
                "summary": "The event stream (WebSocket): one JSON message {type, time, data} per change",
                "operationId": "getEvents",
                "responses": {
                    "101": {"description": "switching to the WebSocket protocol"},
                    "400": {
                        "description": "not a WebSocket request",
                        "content": {"application/json": {"schema": schemas.ref(ErrorBody)}},
                    },
                },
            }
        paths[API_PREFIX + path] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "labrun",
            "version": __version__,
            "description": "Runs, metrics, artifacts, datasets, queues and GPUs of a labrun server.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`token <Jupyter Server token or a token from POST /tokens>`",
                },
                "cookie": {"type": "apiKey", "in": "cookie", "name": "_xsrf"},
            },
        },
        "security": [{"token": []}, {"cookie": []}],
    }
