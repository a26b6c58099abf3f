"""Version handshake, the OpenAPI document, issued tokens and the event stream."""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web, websocket

from labrun import __version__
from labrun.errors import InvalidRequest
from labrun.models import CreateToken, Identity, IssuedToken, ServerVersion
from labrun.settings import API_VERSION

from .. import auth
from .base import LabrunHandler, operation, write_json_error


class VersionHandler(LabrunHandler):
    @operation("The server's labrun version and API version", response=ServerVersion)
    async def get(self) -> ServerVersion:
        return ServerVersion(version=__version__, api=API_VERSION)


class IdentityHandler(LabrunHandler):
    @operation("Who the caller acts as, and whether they are an admin", response=Identity)
    async def get(self) -> Identity:
        return Identity(user=self.username, admin=self.is_admin)


class OpenAPIHandler(LabrunHandler):
    @operation("This API's OpenAPI 3 document")
    async def get(self) -> dict[str, Any]:
        return self.app.openapi


class TokensHandler(LabrunHandler):
    @operation(
        "Issue a token for a worker or kernel, acting for the caller",
        body=CreateToken,
        response=IssuedToken,
        status=201,
    )
    async def post(self, body: CreateToken) -> IssuedToken:
        token = auth.issue(
            self.app.token_secret, user=self.username, name=body.name, kind=body.kind
        )
        return IssuedToken(token=token, name=body.name, user=self.username)


class EventsHandler(ExtensionHandlerMixin, JupyterHandler, websocket.WebSocketHandler):
    """The event stream: one JSON message per change (``{"type", "time", "data"}``)."""

    auth_resource = "labrun"
    allow = ("GET",)

    async def prepare(self, *, _redirect_to_login: bool = False) -> None:
        # A WebSocket client cannot follow a redirect to the login page: refuse with 403.
        await super().prepare(_redirect_to_login=False)

    async def pre_get(self) -> None:
        authorized = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "read", self.auth_resource)
        )
        if not authorized:
            raise web.HTTPError(403)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        write_json_error(self, status_code, kwargs.get("exc_info", (None, None, None))[1])

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self.pre_get()
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise InvalidRequest("this route is a WebSocket: connect to it with a WebSocket client")
        result = super().get(*args, **kwargs)
        if result is not None:
            await result

    def open(self, *args: Any, **kwargs: Any) -> None:
        bus = self.settings["labrun"].events
        self._queue = bus.subscribe()
        self._pump = asyncio.ensure_future(self._send_events())
        self.write_message('{"type": "hello", "data": {}}')

    async def _send_events(self) -> None:
        try:
            while True:
                message = await self._queue.get()
                await self.write_message(message)
        except (websocket.WebSocketClosedError, asyncio.CancelledError):
            pass

    def on_message(self, message: str | bytes) -> None:
        # The stream is one-way; clients send nothing but pings.
        pass

    def on_close(self) -> None:
        self.settings["labrun"].events.unsubscribe(self._queue)
        self._pump.cancel()
