"""Version handshake, the OpenAPI document, issued tokens and the event stream."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web, websocket

from labrun import __version__
from labrun.errors import InvalidRequest
from labrun.models import (
    CreateToken,
    DescribeToken,
    Identity,
    IssuedToken,
    ListTokensQuery,
    ServerVersion,
    TokenList,
)
from labrun.settings import API_VERSION

from .base import LabrunHandler, operation, write_json_error


class VersionHandler(LabrunHandler):
    @operation("The server's labrun version and API version", response=ServerVersion)
    async def get(self) -> ServerVersion:
        return ServerVersion(version=__version__, api=API_VERSION)


class IdentityHandler(LabrunHandler):
    @operation(
        "Who the caller acts as, and their roles: admin, lead (of which projects), researcher",
        response=Identity,
    )
    async def get(self) -> Identity:
        roles = await self.roles()
        return Identity(
            user=self.username,
            admin=roles.admin,
            roles=roles.names,
            leads=sorted(roles.leads),
        )


class OpenAPIHandler(LabrunHandler):
    @operation("This API's OpenAPI 3 document")
    async def get(self) -> dict[str, Any]:
        return self.app.openapi


class TokensHandler(LabrunHandler):
    @operation(
        "Your tokens that still work (all=true: expired and revoked ones too); an admin's: "
        "everyone's",
        query=ListTokensQuery,
        response=TokenList,
        access="user",
    )
    async def get(self, query: ListTokensQuery) -> TokenList:
        user = None if await self.is_admin() else self.username
        return await self.call(self.store.tokens.list_tokens, query, user)

    @operation(
        "Issue a token acting for the caller: for all they may do, or scoped to one run",
        body=CreateToken,
        response=IssuedToken,
        status=201,
        access="user",
        run_field="run",
        action="token.create",
    )
    async def post(self, body: CreateToken) -> IssuedToken:
        most = self.app.token_lifetime
        if body.lifetime is not None and body.lifetime > most:
            raise InvalidRequest(
                f"lifetime {body.lifetime!r} is longer than tokens may live here: at most "
                f"{most:g} seconds (c.LabRun.token_lifetime)"
            )
        lifetime = body.lifetime or most
        expires = self.caller.expires
        if expires is not None:
            # Never longer than the token that asks: a token cannot outlive itself this way.
            lifetime = min(lifetime, expires - time.time())
        return await self.call(
            self.store.tokens.issue,
            user=self.username,
            name=body.name,
            scope="user" if body.run is None else "run",
            lifetime=lifetime,
            run_id=body.run,
        )


class TokenHandler(LabrunHandler):
    @operation(
        "Revoke a token (yours; an admin: anyone's); every server refuses it within seconds",
        response=DescribeToken,
        errors=(403, 404),
        access="user",
        action="token.revoke",
    )
    async def delete(self, token_id: str) -> DescribeToken:
        token = await self.call(
            self.store.tokens.revoke, token_id, by=self.username, admin=await self.is_admin()
        )
        self.app.guard.revoked_now(token.id, token.expires_at.timestamp())
        return token


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
