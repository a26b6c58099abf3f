"""Who may do what: issued tokens checked on every request, the one rule for changing a
run, and the pool's own token, renewed before it expires.

The rule for a run: it is changed (its status, name, parameters, metrics, logs, artifacts,
datasets; cancelled, re-run; a run or report made under it) only by its owner, a lead of its
project, an admin (see :mod:`labrun.jupyter_ext.roles`), a token scoped to it or to a run it
was made under (what a job's kernel holds), or a pool's token (what the workers hold).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from labrun.errors import TokenExpired, Unauthorized
from labrun.models import IssuedToken

from . import auth
from .auth import Caller
from .roles import Roles, may_change, refusal

if TYPE_CHECKING:
    from .store import Store

logger = logging.getLogger("labrun.access")

# A server looks for tokens revoked on any server at most this often...
REVOCATION_POLL = 1.0
# ...and a request waits for a look when the last one is older than this.
REVOCATION_STALE = 2.0
# Each look asks for revocations since the last one, minus this much: the servers' clocks
# stamp the revocations, and they may differ by a few seconds.
REVOCATION_OVERLAP = timedelta(seconds=60)
# Runs whose owner and parent are remembered (neither ever changes).
OWNER_CACHE = 100_000
# How far up the parents a run token's reach is looked for.
MAX_DEPTH = 16

Call = Callable[..., Awaitable[Any]]


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _remedy(caller: Caller) -> str:
    if caller.scope == "pool":
        return "the server renews its pool's token: restart the worker, or the server"
    if caller.scope == "run":
        return (
            f"it was run {caller.run_id}'s token; a job's token lasts "
            "c.LabRun.job_token_lifetime, and a new attempt gets a new one"
        )
    return "issue a new one with `labrun tokens create NAME` and set LABRUN_TOKEN to it"


class TokenGuard:
    """Checks an issued token on every request: its signature, expiry and revocation.

    Revocations are kept in memory and refreshed at most once a second from the database,
    on its threads, so a token revoked on one server is refused by all within a couple of
    seconds, and a request (a batch of metrics) costs no query of its own.
    """

    def __init__(self, store: Store, call: Call) -> None:
        self.store = store
        self.call = call
        self.secret = store.tokens.secret
        # Revoked tokens that have not expired yet, with when they expire.
        self.revoked: dict[str, float] = {}
        self._looked_at = -math.inf
        self._since: datetime | None = None
        self._pruned_at = time.monotonic()
        self._look: asyncio.Future[None] | None = None

    async def caller(self, token: str) -> Caller | None:
        """Who ``token`` acts for; None when this server did not sign it."""
        claims = auth.verify(self.secret, token)
        if claims is None:
            return None
        caller = auth.caller_of(claims)
        if caller is None or caller.expires is None:
            raise Unauthorized(
                "this token was issued by an older labrun: it never expires and cannot be "
                "revoked, so it is no longer accepted; issue a new one with "
                "`labrun tokens create NAME`"
            )
        if caller.expires <= time.time():
            raise TokenExpired(
                f"the token {caller.name!r} (id {caller.token_id}) expired at "
                f"{_when(caller.expires)}; {_remedy(caller)}"
            )
        await self._fresh()
        if caller.token_id in self.revoked:
            raise Unauthorized(
                f"the token {caller.name!r} (id {caller.token_id}) was revoked; {_remedy(caller)}"
            )
        return caller

    def revoked_now(self, token_id: str, expires: float) -> None:
        """A revocation made here: refused at once, not after the next look."""
        self.revoked[token_id] = expires

    async def _fresh(self) -> None:
        age = time.monotonic() - self._looked_at
        if age < REVOCATION_POLL:
            return
        if self._look is None or self._look.done():
            self._look = asyncio.ensure_future(self._refresh())
        if age > REVOCATION_STALE:
            # Shielded: a request that goes away does not cancel the look others wait for.
            await asyncio.shield(self._look)

    async def _refresh(self) -> None:
        started, now = time.monotonic(), datetime.now(timezone.utc)
        since = None if self._since is None else self._since - REVOCATION_OVERLAP
        try:
            found = await self.call(self.store.tokens.revoked_since, since)
        except Exception as err:  # noqa: BLE001 - the database may be restarting; look again
            logger.warning("labrun: could not read revoked tokens: %s", err)
            return
        self.revoked.update(found)
        self._since, self._looked_at = now, started
        if started - self._pruned_at > 60:
            wall = time.time()
            self.revoked = {i: e for i, e in self.revoked.items() if e > wall}
            self._pruned_at = started


class RunAccess:
    """The one check before any change to a run (see the module's docstring)."""

    def __init__(self, store: Store, call: Call) -> None:
        self.store = store
        self.call = call
        # Owner, parent and project of each run remembered: none of them ever changes.
        self._owners: dict[int, tuple[str, int | None, str]] = {}

    async def check(self, caller: Caller, run_id: int, roles: Roles, *, hub: bool = False) -> None:
        """Raise :class:`Unauthorized`, naming the owner and who may, unless ``caller``
        (holding ``roles``) may change it; ``hub``: roles may come from JupyterHub groups."""
        if caller.scope == "pool" or (roles.admin and caller.scope == "user"):
            return
        chain = await self._chain(run_id, MAX_DEPTH if caller.scope == "run" else 1)
        _, owner, _, project = chain[0]
        if caller.scope == "run":
            if any(rid == caller.run_id for rid, _, _, _ in chain):
                return
            raise Unauthorized(
                f"this token is scoped to run {caller.run_id} and the runs made under it; run "
                f"{run_id} belongs to {owner!r} and is not one of them. Use the token of "
                "that run's owner, a lead of its project, or ask an admin (c.LabRun.admins)"
            )
        if may_change(roles, owner=owner, project=project):
            return
        raise Unauthorized(refusal(roles, run_id=run_id, owner=owner, project=project, hub=hub))

    async def _chain(self, run_id: int, depth: int) -> list[tuple[int, str, int | None, str]]:
        """The run and up to ``depth`` - 1 ancestors: (id, owner, parent, project) each."""
        chain: list[tuple[int, str, int | None, str]] = []
        current: int | None = run_id
        while current is not None and len(chain) < depth:
            entry = self._owners.get(current)
            if entry is None:
                found = await self.call(self.store.runs.lineage, current, depth - len(chain))
                if len(self._owners) > OWNER_CACHE:
                    self._owners.clear()
                self._owners.update(found)
                entry = found[current]
            chain.append((current, *entry))
            current = entry[1]
        return chain


class PoolToken:
    """The token a server gives its pool's workers: issued when the server starts, renewed
    once half its lifetime has passed, and handed to ``publish`` each time, which puts it
    where the workers, those joining later too, pick it up before theirs expires."""

    def __init__(
        self,
        store: Store,
        call: Call,
        *,
        user: str,
        lifetime: float,
        publish: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        self.store = store
        self.call = call
        self.user = user
        self.lifetime = lifetime
        self.publish = publish
        self.current: IssuedToken | None = None
        self._published = False
        self._task: asyncio.Task[None] | None = None

    def grant(self) -> dict[str, Any]:
        """What the workers get: the token and its life, in Unix seconds."""
        assert self.current is not None
        return {
            "token": self.current.token,
            "issued": self.current.created_at.timestamp(),
            "expires": self.current.expires_at.timestamp(),
        }

    async def _issue(self) -> None:
        self.current = await self.call(
            self.store.tokens.issue,
            user=self.user,
            name="pool",
            scope="pool",
            lifetime=self.lifetime,
        )
        self._published = False

    async def start(self) -> None:
        await self._issue()
        await self.publish(self.grant())
        self._published = True
        self._task = asyncio.create_task(self._keep_renewed())

    async def _keep_renewed(self) -> None:
        while True:
            if self._published:
                grant = self.grant()
                half = grant["issued"] + (grant["expires"] - grant["issued"]) / 2
                await asyncio.sleep(max(0.0, half - time.time()))
            try:
                if self._published:
                    await self._issue()
                # Until the workers can find it, nothing is gained by a newer one.
                await self.publish(self.grant())
                self._published = True
            except Exception as err:  # noqa: BLE001 - the database or scheduler may be restarting
                logger.warning("labrun: could not renew the pool's token: %s", err)
                await asyncio.sleep(min(5.0, self.lifetime / 10))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
