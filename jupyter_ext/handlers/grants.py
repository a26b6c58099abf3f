"""Grants: GPUs for ``%%mlrun`` cells and sessions, given by the scheduler of record."""

from __future__ import annotations

import asyncio
import contextlib

from labrun.errors import NotFound, Unauthorized
from labrun.models import DescribeGrant, GrantList, GrantStatus, ReleaseGrants, RequestGrant

from .base import LabrunHandler, operation


class GrantsHandler(LabrunHandler):
    @operation("The grants held or waited for, oldest first", response=GrantList)
    async def get(self) -> GrantList:
        return GrantList(grants=await self.call(self.store.grants.current))

    @operation(
        "Ask for GPUs for a %%mlrun cell or session: answered once granted by the pool's "
        "scheduler of record (under the queues, fair share and GPU limits jobs follow), or "
        "after `wait` seconds still waiting (ask again with the same key)",
        body=RequestGrant,
        response=DescribeGrant,
        errors=(400, 403, 404, 503),
        action="grant.request",
    )
    async def post(self, body: RequestGrant) -> DescribeGrant:
        await self.app.dispatcher.pool.check_gpus(body.gpus, fresh=False)
        admissions = self.app.dispatcher.grants
        # Listening before asking: a grant given at once wakes this request too.
        with admissions.waiter(body.key) as waiter:
            grant, released = await admissions.request(body, self.username)
            self.audit_target_id = body.key
            waiting = grant.status == GrantStatus.waiting
            admissions.changed(asked=[grant] if waiting else [], released=released)
            if waiting and body.wait:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(waiter.event.wait(), body.wait)
                if waiter.granted_at is not None:  # granted here, just now
                    update = {"status": GrantStatus.granted, "granted_at": waiter.granted_at}
                    return grant.model_copy(update=update)
                # Granted by another server, or still waiting: the row says which.
                grant = await self.call(self.store.grants.get, body.key) or grant
        return grant


class GrantsReleaseHandler(LabrunHandler):
    @operation(
        "Release grants by key (the caller's own; an admin's: anyone's): their GPUs go to "
        "whoever waits next",
        body=ReleaseGrants,
        response=GrantList,
        action="grant.release",
    )
    async def post(self, body: ReleaseGrants) -> GrantList:
        self.audit_detail["keys"] = body.keys
        roles = await self.roles()
        owner = None if roles.admin and self.caller.scope == "user" else self.username
        released = await self.call(self.store.grants.release, body.keys, owner)
        if not released:  # (released already, which is no error, or not the caller's)
            found = [await self.call(self.store.grants.get, key) for key in body.keys]
            grants = [grant for grant in found if grant is not None]
            if not grants:
                raise NotFound(f"there is no grant with the key(s) {', '.join(body.keys)}")
            if owner is not None and all(grant.user != owner for grant in grants):
                raise Unauthorized(
                    "these grants are another user's; only an admin may release them"
                )
        self.app.dispatcher.grants.changed(released=released)
        return GrantList(grants=await self.call(self.store.grants.current, self.username))
