"""The base of every labrun handler: authentication, access, parsing, auditing, and error
translation.

A handler method declares its operation with :func:`operation`: the request models it
takes, the response model it returns, its status and who may call it. The decorator
authenticates, checks access (see :mod:`labrun.jupyter_ext.access`), parses the body and
query into those models (:mod:`.parsing`: a parse error is a 400 that says which field was
wrong), writes the response, and carries the same facts into the OpenAPI document. Every
change a handler answers, refused or not, goes to the audit log (``on_finish``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from pydantic import BaseModel
from tornado import web

from labrun.errors import InvalidRequest, LabrunError, NotFound, PayloadTooLarge, Unauthorized
from labrun.models import INT64_MAX, NAME_PATTERN, Request
from labrun.settings import API_PREFIX

from .identity import CallerHandler
from .parsing import is_server_arg, parse_body, parse_query

T = TypeVar("T")

METHODS = ("get", "post", "put", "patch", "delete")

# Bodies larger than this are parsed on a thread: a few milliseconds of parsing would
# already hold up every other request on the event loop.
PARSE_OFF_LOOP_BYTES = 64 * 1024

# Who may call an operation, beyond being authenticated:
# - "run": whoever may change the run named by the path's run_id (the owner, an admin, a
#   token scoped to it, the pool); every method but GET on a route with a run_id;
# - "pool": a pool's workers only (their token);
# - "user": a user themselves (Jupyter's authentication or a user-scoped token), not a
#   token scoped to a run or to the pool;
# - None: anyone authenticated.
Access = Literal["run", "pool", "user"]


@dataclass
class Operation:
    """What the OpenAPI document says of one method of one route, and who may call it."""

    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    request_content: str | None = None
    response_content: str | None = None
    errors: tuple[int, ...] = field(default=(400, 403, 404))
    access: Access | None = None
    # A body field naming a run the request changes or adds to (a new run's parent_id, a
    # report's run_id): checked like the path's run_id.
    run_field: str | None = None
    also: tuple[int, ...] = ()
    large_response: bool = False
    # False: an empty body means the body model's defaults (a route that gained options).
    body_required: bool = True
    # What the audit log calls a change ("run.cancel"), and the kind of thing it is about
    # (default: the action's first word): see on_finish.
    action: str | None = None
    target: str | None = None

    @property
    def target_type(self) -> str | None:
        if self.action is None:
            return None
        return self.target or self.action.split(".", 1)[0]


def operation(
    summary: str,
    *,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    request_content: str | None = None,
    response_content: str | None = None,
    errors: tuple[int, ...] = (400, 403, 404),
    access: Access | None = None,
    run_field: str | None = None,
    also: tuple[int, ...] = (),
    large_response: bool = False,
    body_required: bool = True,
    action: str | None = None,
    target: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a handler method as an API operation (see the module's docstring).

    ``access``: who may call it beyond being authenticated (default: "run" for a change
    to a route with a run_id). ``run_field``: a body field naming a run it changes.
    ``also``: other success statuses it answers with (a handler returns ``(body, status)``).
    ``large_response``: the response can be megabytes; it is written to JSON on a thread.
    ``body_required``: False when an empty body means the body model's defaults.
    ``action``: what the audit log calls it ("queue.create"); every method but GET needs
    one. ``target``: the kind of thing it is about, when not the action's first word.
    """

    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        if method.__name__ != "get" and action is None:
            # Every change is audited: it must say under what name.
            raise TypeError(
                f"{method.__qualname__} changes something: give its @operation an action "
                "for the audit log, like action='run.cancel'"
            )
        op = Operation(
            summary,
            body,
            query,
            response,
            status,
            request_content,
            response_content,
            errors,
            # Changes to a run are the run's owner's, unless declared otherwise.
            access if access is not None or method.__name__ == "get" else "run",
            run_field,
            also,
            large_response,
            body_required,
            action,
            target,
        )

        @web.authenticated
        @authorized
        @functools.wraps(method)
        async def wrapper(self: LabrunHandler, *args: str, **path: str) -> None:
            kwargs: dict[str, Any] = {k: self.path_arg(k, v) for k, v in path.items()}
            # Before the body is read: a caller who may not do this learns nothing more.
            await self.check_access(op, kwargs.get("run_id"))
            if query is not None:
                kwargs["query"] = parse_query(self, query)
            elif not all(is_server_arg(a) for a in self.request.query_arguments):
                raise InvalidRequest(
                    "this route takes no query arguments "
                    f"(got {sorted(self.request.query_arguments)})"
                )
            if body is not None:
                kwargs["body"] = await self.parse_body(body, required=body_required)
                # The audit log says which fields a change set, never their values.
                self.audit_detail["fields"] = sorted(kwargs["body"].model_fields_set)
                named = getattr(kwargs["body"], run_field, None) if run_field else None
                if named is not None:
                    await self.authorize_run(named)
            result = await method(self, **kwargs)
            if self._finished:  # the method wrote its own response (a download)
                return
            code = status
            if isinstance(result, tuple):  # (body, status) where the status varies
                result, code = result
            if self.audit_target_id is None:
                # A creation is about what it made: the new run's id, the queue's name.
                made = getattr(result, "id", None) or getattr(result, "name", None)
                if isinstance(made, int | str):
                    self.audit_target_id = str(made)
            self.set_status(code)
            if isinstance(result, BaseModel):
                self.set_header("Content-Type", "application/json")
                if large_response:
                    self.finish(await asyncio.to_thread(result.model_dump_json))
                else:
                    self.finish(result.model_dump_json())
            elif result is None:
                self.finish()
            else:
                self.finish(json.dumps(result))

        wrapper.__labrun_operation__ = op  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _id(what: str, listed_by: str) -> Callable[[str], int]:
    """The converter of a numeric id: one that no row can have is a 404 that says so."""

    def convert(text: str) -> int:
        value = int(text)
        if not 0 <= value <= INT64_MAX:
            raise NotFound(f"no {what} with id {text}; {listed_by} lists them")
        return value

    return convert


def _text(what: str, longest: int) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if len(text) > longest:
            raise InvalidRequest(f"{what} {text[:40]!r}... is longer than {longest} characters")
        return text

    return convert


_ID_SCHEMA = {"type": "integer", "minimum": 0, "maximum": INT64_MAX}
# What store.artifacts.check_name takes: relative path segments, none of them '.' or '..',
# without backslashes or control characters.
_SEGMENT = r"(?!\.\.?(?:/|$))[^/\\\u0000-\u001f\u007f-\u009f]+"
ARTIFACT_SCHEMA = {"type": "string", "maxLength": 1024, "pattern": f"^{_SEGMENT}(?:/{_SEGMENT})*$"}

PATH_PARAMS: dict[str, tuple[str, Callable[[str], Any], dict[str, Any]]] = {
    # name: (tornado regex, converter, OpenAPI schema). Ids match negative numbers too,
    # so `runs/-1` is a 404 about the run, not a path that matches no route.
    "run_id": (r"-?[0-9]+", _id("run", "`labrun runs`"), _ID_SCHEMA),
    "name": (r"[^/]+", _text("a name", 128), {"type": "string", "pattern": NAME_PATTERN}),
    "version": (r"[^/]+", _text("a version", 32), {"type": "string", "maxLength": 32}),
    "worker_id": (r"[^/]+", _text("a worker id", 256), {"type": "string", "maxLength": 256}),
    "artifact": (r".+", _text("an artifact name", 1024), ARTIFACT_SCHEMA),
    "report_id": (r"-?[0-9]+", _id("report", "`labrun reports`"), _ID_SCHEMA),
    "token_id": (
        r"[0-9a-f]+",
        _text("a token id", 64),
        {"type": "string", "pattern": "^[0-9a-f]+$", "maxLength": 64},
    ),
}


def operation_of(handler: type, method: str) -> Operation | None:
    """The operation a handler class declares for an HTTP method, if any."""
    return getattr(getattr(handler, method, None), "__labrun_operation__", None)


def allowed_methods(handler: type) -> list[str]:
    """The methods a route answers: its operations, HEAD with GET, and OPTIONS."""
    declared = getattr(handler, "allow", None)  # a route that is no REST handler
    if declared is not None:
        return list(declared)
    methods = [m.upper() for m in METHODS if operation_of(handler, m) is not None]
    if "GET" in methods:
        methods.insert(1, "HEAD")
    return [*methods, "OPTIONS"]


def write_json_error(handler: web.RequestHandler, status_code: int, exc: BaseException | None):
    """Every error of the API as JSON: ``{"message", "code"}`` (405s name what is allowed)."""
    if isinstance(exc, LabrunError):
        status_code = exc.status
        message, code = exc.message, exc.code
    elif isinstance(exc, web.HTTPError):
        message = exc.log_message or exc.reason or web.httputil.responses.get(status_code, "")
        code = {403: "forbidden", 404: "not_found", 405: "method_not_allowed"}.get(
            status_code, "http_error"
        )
    else:
        message = "internal server error; the server log has the traceback"
        code = "internal_error"
    if status_code == 405:
        allowed = allowed_methods(type(handler))
        handler.set_header("Allow", ", ".join(allowed))
        message = (
            f"{handler.request.method} is not allowed here; this route takes {', '.join(allowed)}"
        )
    handler.set_status(status_code)
    handler.set_header("Content-Type", "application/json")
    # The audit log keeps the code of a refusal (its message may quote the request).
    handler._labrun_error_code = code  # type: ignore[attr-defined]
    handler.finish(json.dumps({"message": message, "code": code}))


def tornado_pattern(path: str) -> str:
    """``/runs/{run_id}`` -> ``/runs/(?P<run_id>-?[0-9]+)``."""

    def group(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"(?P<{name}>{PATH_PARAMS[name][0]})"

    return re.sub(r"\{(\w+)\}", group, path)


class LabrunHandler(CallerHandler):
    """Base of the REST handlers: the extension's services, who may call what, errors."""

    # Jupyter Server's authorizer (JupyterHub's, for instance) sees labrun as one resource.
    auth_resource = "labrun"

    # What the audit log records of this request beyond what on_finish reads itself: a
    # handler may name what it made (a sweep's id) and add to the detail (a re-run's new run).
    audit_target_id: str | None = None
    # A batch (POST runs/claims) is noted once per item, each about its own run: (target
    # id, what to add to the detail).
    audit_items: list[tuple[str, dict[str, Any]]] | None = None

    @functools.cached_property
    def audit_detail(self) -> dict[str, Any]:
        return {}

    @property
    def store(self) -> Any:
        return self.app.store

    @property
    def events(self) -> Any:
        return self.app.events

    async def send_file(self, uri: str, content_type: str) -> None:
        """Stream a stored file (an artifact, a report) without holding it in memory."""
        self.set_header("Content-Type", content_type)
        self.set_header("X-Content-Type-Options", "nosniff")
        chunks = self.store.artifacts.read_chunks(uri)
        while (chunk := await self.call(next, chunks, None)) is not None:
            self.write(chunk)
            await self.flush()
        # APIHandler.finish would otherwise label the body JSON.
        self.finish(set_content_type=content_type)

    async def check_access(self, op: Operation, run_id: int | None) -> None:
        scope = self.caller.scope
        if op.access == "run" and run_id is not None:
            await self.authorize_run(run_id)
        elif op.access == "pool" and scope != "pool":
            raise Unauthorized(
                "only the pool's workers may do this, with the token their server gave them"
            )
        elif op.access == "user" and scope != "user":
            raise Unauthorized(
                f"a token scoped to {'the pool' if scope == 'pool' else 'a run'} cannot do "
                "this; use your own token (Jupyter's, or one from `labrun tokens create`)"
            )

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a store method off the event loop."""
        return await self.app.db.run(fn, *args, **kwargs)

    async def parse_body(self, model: type[BaseModel], *, required: bool = True) -> BaseModel:
        """The request's JSON body as ``model``: refused past the size limit, and parsed on a
        thread when it is large; without ``required``, no body means the model's defaults."""
        body = self.request.body
        if not body and not required:
            return model()
        limit = self.app.max_body_size
        if len(body) > limit:
            raise PayloadTooLarge(
                f"the request body is {len(body):,} bytes, more than this server takes "
                f"({limit:,} bytes, c.LabRun.max_body_size); "
                + getattr(model, "too_large_hint", Request.too_large_hint)
            )
        if len(body) > PARSE_OFF_LOOP_BYTES:
            return await asyncio.to_thread(parse_body, body, model)
        return parse_body(body, model)

    @web.authenticated
    async def head(self, *args: str, **kwargs: str) -> None:
        """HEAD on a route with a GET: its headers, without the body (tornado drops it)."""
        if operation_of(type(self), "get") is None:
            raise web.HTTPError(405)
        await self.get(*args, **kwargs)  # type: ignore[misc]

    @allow_unauthenticated  # a CORS preflight carries no credentials
    def options(self, *args: Any, **kwargs: Any) -> None:
        self.set_header("Allow", ", ".join(allowed_methods(type(self))))
        super().options(*args, **kwargs)

    def path_arg(self, name: str, value: str) -> Any:
        # Tornado has already percent-decoded path arguments.
        return PATH_PARAMS[name][1](value)

    # --- the one place that audits changes ---------------------------------------

    def on_finish(self) -> None:
        """Note every answered POST, PUT, PATCH and DELETE of an operation in the audit log,
        refusals included, but not a request from someone unknown (no one to name)."""
        super().on_finish()
        method = self.request.method or ""
        if method in ("GET", "HEAD", "OPTIONS") or not getattr(self, "_jupyter_current_user", None):
            return
        op = operation_of(type(self), method.lower())
        if op is None or op.action is None:
            return
        # A route's first path parameter names what it is about (the run of
        # runs/{run_id}/artifacts/{artifact}); the others go to the detail.
        names = list(self.path_kwargs.items())
        target_id = names[0][1] if names else self.audit_target_id
        detail = {**dict(names[1:]), **self.audit_detail}
        code = getattr(self, "_labrun_error_code", None)
        if code is not None and self.get_status() >= 400:
            detail["error"] = code
        items: list[tuple[str | None, dict[str, Any]]] = [(target_id, {})]
        if self.get_status() < 400 and self.audit_items:
            items = list(self.audit_items)
        for item_id, item_detail in items:
            self.app.audit.record(
                user=self.username,
                scope=self.caller.scope,
                action=op.action,
                method=method,
                path=self.request.path,
                target_type=op.target_type if item_id is not None else None,
                target_id=item_id,
                status=self.get_status(),
                detail={**detail, **item_detail},
            )

    # --- one place that turns errors into JSON ------------------------------------

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, LabrunError) and value.status < 500:
            self.log.info("%s %s: %s", self.request.method, self.request.path, value.message)
            return
        super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        write_json_error(self, status_code, kwargs.get("exc_info", (None, None, None))[1])


class NoRouteHandler(LabrunHandler):
    """A path under the API that matches no route: a JSON 404, not Jupyter's HTML page."""

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        raise NotFound(
            f"no API route {self.request.method} {self.request.path}; "
            f"{API_PREFIX}/openapi.json lists the routes"
        )
