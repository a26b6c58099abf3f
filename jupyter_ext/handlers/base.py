"""The base of every labrun handler: authentication, parsing, and error translation.

A handler method declares its operation with :func:`operation`: the request models it
takes, the response model it returns and its status. The decorator authenticates, parses
the body and query into those models (a parse error is a 400 that says which field was
wrong), writes the response, and carries the same facts into the OpenAPI document.
"""

from __future__ import annotations

import functools
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jupyter_server.auth import IdentityProvider, User
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from pydantic import BaseModel, ValidationError
from tornado import web

from labrun.errors import InvalidRequest, LabrunError

from .. import auth

T = TypeVar("T")

# Query arguments Jupyter Server itself reads; never an error in a labrun query.
_SERVER_ARGS = frozenset({"token", "_xsrf"})


def _is_server_arg(name: str) -> bool:
    """Query arguments that belong to Jupyter, not to the route.

    JupyterLab's ``ServerConnection`` appends a bare timestamp (``?status=queued&1795409``)
    to every GET to defeat caches.
    """
    return name in _SERVER_ARGS or name.isdigit()


@dataclass
class Operation:
    """What the OpenAPI document says of one method of one route."""

    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    request_content: str | None = None
    response_content: str | None = None
    errors: tuple[int, ...] = field(default=(400, 403, 404))
    # False: an empty body means the body model's defaults (a route that gained options).
    body_required: bool = True


def describe_validation_error(err: ValidationError, where: str) -> str:
    """One readable line per problem: ``body.points.0.value: Input should be a number``."""
    problems = []
    for e in err.errors()[:10]:
        loc = ".".join(str(p) for p in (where, *e["loc"]))
        problems.append(f"{loc}: {e['msg']}")
    return "invalid request: " + "; ".join(problems)


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    return any(typing.get_origin(a) is list for a in typing.get_args(annotation))


def parse_query(handler: web.RequestHandler, model: type[BaseModel]) -> BaseModel:
    values: dict[str, Any] = {}
    for name in handler.request.query_arguments:
        if _is_server_arg(name):
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


def parse_body(
    handler: web.RequestHandler, model: type[BaseModel], *, required: bool = True
) -> BaseModel:
    body = handler.request.body
    if not body and not required:
        return model()
    if not body:
        raise InvalidRequest(f"the request needs a JSON body ({model.__name__})")
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        if any(e["type"] == "json_invalid" for e in err.errors()):
            raise InvalidRequest(
                f"the request body is not valid JSON: {err.errors()[0]['msg']}"
            ) from err
        raise InvalidRequest(describe_validation_error(err, "body")) from err


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
    body_required: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a handler method as an API operation (see the module's docstring)."""
    op = Operation(
        summary,
        body,
        query,
        response,
        status,
        request_content,
        response_content,
        errors,
        body_required,
    )

    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        @web.authenticated
        @authorized
        @functools.wraps(method)
        async def wrapper(self: LabrunHandler, *args: str, **path: str) -> None:
            kwargs: dict[str, Any] = {k: self.path_arg(k, v) for k, v in path.items()}
            if query is not None:
                kwargs["query"] = parse_query(self, query)
            elif not all(_is_server_arg(a) for a in self.request.query_arguments):
                raise InvalidRequest(
                    "this route takes no query arguments "
                    f"(got {sorted(self.request.query_arguments)})"
                )
            if body is not None:
                kwargs["body"] = parse_body(self, body, required=body_required)
            result = await method(self, **kwargs)
            if self._finished:  # the method wrote its own response (a download)
                return
            code = status
            if isinstance(result, tuple):  # (body, status) where the status varies
                result, code = result
            self.set_status(code)
            if isinstance(result, BaseModel):
                self.set_header("Content-Type", "application/json")
                self.finish(result.model_dump_json())
            elif result is None:
                self.finish()
            else:
                self.finish(json.dumps(result))

        wrapper.__labrun_operation__ = op  # type: ignore[attr-defined]
        return wrapper

    return decorate


PATH_PARAMS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    # name: (tornado regex, converter, OpenAPI type)
    "run_id": (r"[0-9]+", int, "integer"),
    "name": (r"[^/]+", str, "string"),
    "version": (r"[^/]+", str, "string"),
    "worker_id": (r"[^/]+", str, "string"),
    "artifact": (r".+", str, "string"),
    "report_id": (r"[0-9]+", int, "integer"),
}


def tornado_pattern(path: str) -> str:
    """``/runs/{run_id}`` -> ``/runs/(?P<run_id>[0-9]+)``."""

    def group(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"(?P<{name}>{PATH_PARAMS[name][0]})"

    return re.sub(r"\{(\w+)\}", group, path)


class LabrunHandler(ExtensionHandlerMixin, APIHandler):
    """Base of the REST handlers: the extension's services, auth by issued tokens, errors."""

    # Jupyter Server's authorizer (JupyterHub's, for instance) sees labrun as one resource.
    auth_resource = "labrun"

    @property
    def app(self) -> Any:
        """The running :class:`~labrun.jupyter_ext.app.LabRun` extension."""
        return self.extensionapp

    @property
    def store(self) -> Any:
        return self.app.store

    @property
    def events(self) -> Any:
        return self.app.events

    @property
    def username(self) -> str:
        """Who the request acts for: the name runs, jobs and GPU use are recorded under."""
        issued = getattr(self, "_labrun_user", None)
        if issued is not None:
            return issued
        # Jupyter's own identity providers share one token or password and make up a
        # random anonymous user per request; on such a (single-user) server, the user is
        # the one the server runs for. A real identity provider (JupyterHub's) names users.
        if type(self.identity_provider).__module__ == IdentityProvider.__module__:
            return self.app.user
        user = self.current_user
        return user.username if isinstance(user, User) else str(user)

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

    @property
    def is_admin(self) -> bool:
        """Whether the caller may act on anyone's runs (``c.LabRun.admins``)."""
        return self.username in self.app.admins

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a store method off the event loop."""
        return await self.app.db.run(fn, *args, **kwargs)

    def path_arg(self, name: str, value: str) -> Any:
        # Tornado has already percent-decoded path arguments.
        return PATH_PARAMS[name][1](value)

    async def prepare(self) -> None:  # type: ignore[override]
        # A token this server issued (``Authorization: token lr1...``) authenticates a
        # worker or kernel as the user it was issued to; anything else goes on to Jupyter
        # Server's own identity provider (its token, its cookie).
        match = re.match(
            r"(?:token|bearer)\s+(lr1\.\S+)",
            self.request.headers.get("Authorization", ""),
            re.IGNORECASE,
        )
        if match:
            claims = auth.verify(self.app.token_secret, match.group(1))
            if claims is not None:
                self._labrun_user = claims["u"]
                self._jupyter_current_user = User(username=claims["u"], name=claims["u"])
                # Token-authenticated requests are exempt from the XSRF check, as
                # Jupyter Server's own tokens are.
                self._token_authenticated = True
        await super().prepare()

    # --- one place that turns errors into JSON ------------------------------------

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, LabrunError) and value.status < 500:
            self.log.info("%s %s: %s", self.request.method, self.request.path, value.message)
            return
        super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
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
        self.set_status(status_code)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message, "code": code}))
