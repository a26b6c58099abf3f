"""Who a request acts for: the base of labrun's handlers that names the caller and their roles.

A token this server issued (``Authorization: token lr1...``, see :mod:`labrun.jupyter_ext.auth`)
names its user and scope, and labrun alone authenticates and authorizes such a request.
Anything else goes to Jupyter Server's identity provider: a real one (JupyterHub's, on a
single-user server) names the hub user and carries their hub groups; Jupyter's own (one shared
token or password) names nobody, and the user is ``c.LabRun.user``. Roles: see
:mod:`labrun.jupyter_ext.roles`.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from jupyter_server.auth import Authorizer, IdentityProvider, User
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin

from ..auth import Caller
from ..roles import Roles, roles_of

logger = logging.getLogger("labrun.access")


class CallerHandler(ExtensionHandlerMixin, APIHandler):
    """Names the caller of a request (:attr:`caller`) and their roles (:meth:`roles`)."""

    @property
    def app(self) -> Any:
        """The running :class:`~labrun.jupyter_ext.app.LabRun` extension."""
        return self.extensionapp

    @property
    def caller(self) -> Caller:
        """Who the request acts for, and within what scope (a token's run, the pool)."""
        issued: Caller | None = getattr(self, "_labrun_caller", None)
        return issued if issued is not None else Caller(user=self.username)

    @property
    def username(self) -> str:
        """Who the request acts for: the name runs, jobs and GPU use are recorded under."""
        issued: Caller | None = getattr(self, "_labrun_caller", None)
        if issued is not None:
            return issued.user
        # Jupyter's own identity providers share one token or password and make up a
        # random anonymous user per request; on such a (single-user) server, the user is
        # the one the server runs for. A real identity provider (JupyterHub's) names users.
        if type(self.identity_provider).__module__ == IdentityProvider.__module__:
            return self.app.user
        user = self.current_user
        return user.username if isinstance(user, User) else str(user)

    # A request with a token this server issued is authenticated and authorized by labrun
    # (prepare, check_access), not by the server's identity provider and authorizer:
    # JupyterHub's would ask the hub about a token the hub never saw, and refuse it.
    @property
    def identity_provider(self) -> IdentityProvider:
        if getattr(self, "_labrun_caller", None) is not None:
            return self.app.issued_identity
        return super().identity_provider

    @property
    def authorizer(self) -> Authorizer:
        if getattr(self, "_labrun_caller", None) is not None:
            return self.app.issued_authorizer
        return super().authorizer

    @property
    def under_hub(self) -> bool:
        """Whether JupyterHub authenticates this server's users (a single-user server)."""
        return hasattr(self.settings["identity_provider"], "hub_auth")

    async def roles(self) -> Roles:
        """The caller's roles (see labrun.jupyter_ext.roles). A token scoped to a run or to
        the pool holds none: it is a researcher's, whoever it acts for."""
        found: Roles | None = getattr(self, "_labrun_roles", None)
        if found is None:
            if self.caller.scope != "user":
                found = Roles(user=self.username)
            else:
                found = roles_of(
                    self.username,
                    config=self.app.roles_config,
                    admins=self.app.admins,
                    groups=await self._hub_groups(),
                )
            self._labrun_roles = found
        return found

    async def _hub_groups(self) -> list[str]:
        """The caller's JupyterHub groups: none where JupyterHub does not authenticate."""
        # JupyterHub's identity provider gives each request the hub's model of its user,
        # groups included (the hub adds them for whoever asks about themselves).
        hub_user = getattr(self.current_user, "hub_user", None)
        if isinstance(hub_user, dict):
            return [str(g) for g in hub_user.get("groups") or ()]
        # A token this server issued, for the user the server runs for: the server's own
        # hub token may read that user's groups (the hub caches the answer for minutes).
        # Another user's labrun token gets no groups here: their roles come from
        # c.LabRun.roles, or through their own server.
        hub_auth = getattr(self.settings["identity_provider"], "hub_auth", None)
        if hub_auth is None or self.username != os.environ.get("JUPYTERHUB_USER"):
            return []
        try:
            model = await hub_auth.user_for_token(hub_auth.api_token, sync=False)
        except Exception as err:  # noqa: BLE001 - the hub may be restarting: no groups now
            logger.warning(
                "labrun: could not read %s's groups from JupyterHub: %s", self.username, err
            )
            return []
        return [str(g) for g in (model or {}).get("groups") or ()]

    async def is_admin(self) -> bool:
        """Whether the caller may act on anyone's runs and tokens (see labrun.jupyter_ext.roles);
        a token scoped to a run or to the pool is never an admin's."""
        return (await self.roles()).admin

    async def authorize_run(self, run_id: int) -> None:
        """The one check before a change to run ``run_id`` (see labrun.jupyter_ext.access)."""
        await self.app.access.check(self.caller, run_id, await self.roles(), hub=self.under_hub)

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
            # An expired or revoked token is refused here, saying which and what to do.
            caller = await self.app.guard.caller(match.group(1))
            if caller is not None:
                self._labrun_caller = caller
                self._jupyter_current_user = User(username=caller.user, name=caller.user)
                # Token-authenticated requests are exempt from the XSRF check, as
                # Jupyter Server's own tokens are.
                self._token_authenticated = True
        await super().prepare()
