"""The audit log: who did what to which run, queue, token or setting, and when."""

from __future__ import annotations

from labrun.errors import Unauthorized
from labrun.models import AuditList, ListAuditQuery

from .base import LabrunHandler, operation


class AuditHandler(LabrunHandler):
    @operation(
        "The audit log, newest first: every POST, PUT, PATCH and DELETE answered (refused "
        "ones too), who made it, about which run, queue, token or worker, and the status. "
        "Admins (c.LabRun.admins, c.LabRun.roles, the labrun-admin hub group) read everyone's entries; others only their own",
        query=ListAuditQuery,
        response=AuditList,
        access="user",
    )
    async def get(self, query: ListAuditQuery) -> AuditList:
        if not await self.is_admin():
            me = self.username
            if query.user not in (None, me):
                raise Unauthorized(
                    f"only admins (c.LabRun.admins, c.LabRun.roles or the labrun-admin hub group) read other users' audit entries; you are "
                    f"{me!r}: leave user out, or ask an admin about {query.user!r}"
                )
            query = query.model_copy(update={"user": me})
        # This server's pending entries first: a reader sees every request it answered.
        await self.app.audit.flush()
        return await self.call(self.store.audit.list_entries, query)
