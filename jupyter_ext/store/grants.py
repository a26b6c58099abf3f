"""Grants: the GPUs a ``%%mlrun`` cell or session holds, given by the scheduler of record.

A kernel asks for a grant before it sends a GPU cell to the pool (``waiting``); the
scheduler of record grants it under the rules jobs follow (``granted``); it is released by
the kernel when the cell ends (or at ``%mlrun_release``), or by the scheduler of record when
the cell's run has ended or its kernel is gone (``released``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from labrun.errors import Unauthorized
from labrun.models import FINISHED_STATUSES, DescribeGrant, GrantStatus, RequestGrant, RunStatus

from ..scheduling import GRANT_IDS, QueuedJob
from .database import Database
from .jobs import check_queue
from .leases import Hold, LeaseStore
from .tables import Run, utcnow
from .team_tables import Grant

# Released grants are kept this long (for `GET grants` and the audit trail's context).
KEEP_RELEASED = timedelta(days=1)
# A grant whose kernel's Dask client is not connected is released only after this long:
# the kernel connects before it asks, so a young grant's client is always listed.
CLIENT_GRACE = timedelta(seconds=10)

NOT_RELEASED = Grant.status != GrantStatus.released.value
# A cell's or session's run in one of these has ended (a cell is never queued again).
ENDED = [status.value for status in (*FINISHED_STATUSES, RunStatus.lost)]


def describe(grant: Grant) -> DescribeGrant:
    return DescribeGrant(
        id=grant.id,
        key=grant.key,
        user=grant.user,
        kind=grant.kind,
        queue=grant.queue,
        gpus=grant.gpus,
        status=GrantStatus(grant.status),
        created_at=grant.created_at,
        granted_at=grant.granted_at,
        released_at=grant.released_at,
    )


def entry(grant: Grant | DescribeGrant) -> QueuedJob:
    """The grant as the scheduling policy sees it: a job of its user in its queue."""
    return QueuedJob(GRANT_IDS + grant.id, grant.user, grant.queue, grant.gpus, 0, 0)


class GrantStore:
    def __init__(self, db: Database, leases: LeaseStore) -> None:
        self.db = db
        self.leases = leases

    def request(
        self, req: RequestGrant, user: str, *, granted: Hold | bool = False
    ) -> tuple[DescribeGrant, list[int]]:
        """Ask for ``req``'s grant (again: the grant as it is), releasing ``req.release``
        first; the grant and the ids of the grants released. ``granted``: a new grant is
        given at once, by the scheduler of record (its hold, fenced; True: unfenced)."""
        with self.db.session() as session:
            released = self._release(session, req.release, user) if req.release else []
            grant = session.scalar(select(Grant).where(Grant.key == req.key))
            if grant is None:
                check_queue(session, req.queue)
                if isinstance(granted, Hold):
                    self.leases.fence(session, granted)
                grant = Grant(
                    key=req.key,
                    user=user,
                    kind=req.kind,
                    queue=req.queue,
                    gpus=req.gpus,
                    status=(GrantStatus.granted if granted else GrantStatus.waiting).value,
                    client=req.client,
                    granted_at=utcnow() if granted else None,
                )
                session.add(grant)
                session.flush()
            elif grant.user != user:
                raise Unauthorized(f"the grant {req.key!r} is another user's")
            return describe(grant), released

    def get(self, key: str) -> DescribeGrant | None:
        with self.db.session() as session:
            grant = session.scalar(select(Grant).where(Grant.key == key))
            return None if grant is None else describe(grant)

    def current(self, user: str | None = None) -> list[DescribeGrant]:
        """The grants not released, oldest first (``user``'s only, if given)."""
        stmt = select(Grant).where(NOT_RELEASED).order_by(Grant.id)
        if user is not None:
            stmt = stmt.where(Grant.user == user)
        with self.db.session() as session:
            return [describe(grant) for grant in session.scalars(stmt)]

    def entries(self, status: GrantStatus, ids: Collection[int] | None = None) -> list[QueuedJob]:
        """The grants of ``status`` (among ``ids``, if given), as the policy sees them."""
        stmt = select(Grant).where(Grant.status == status.value).order_by(Grant.id)
        if ids is not None:
            stmt = stmt.where(Grant.id.in_(list(ids)))
        with self.db.session() as session:
            return [entry(grant) for grant in session.scalars(stmt)]

    def admit(self, ids: Iterable[int], hold: Hold | None) -> tuple[dict[int, str], datetime]:
        """Grant the waiting grants ``ids`` (for the scheduler of record ``hold``): the keys
        of those granted by id (one released meanwhile is not), and when."""
        now = utcnow()
        with self.db.session() as session:
            if hold is not None:
                self.leases.fence(session, hold)
            rows = session.execute(
                update(Grant)
                .where(Grant.id.in_(list(ids)), Grant.status == GrantStatus.waiting.value)
                .values(status=GrantStatus.granted.value, granted_at=now)
                .returning(Grant.id, Grant.key),
                execution_options={"synchronize_session": False},
            )
            return {grant_id: key for grant_id, key in rows}, now

    def release(self, keys: Collection[str], user: str | None) -> list[int]:
        """Release the grants ``keys`` (``user``'s only, unless None); the ids released."""
        with self.db.session() as session:
            return self._release(session, keys, user)

    def _release(self, session: Session, keys: Collection[str], user: str | None) -> list[int]:
        stmt = (
            update(Grant)
            .where(Grant.key.in_(list(keys)), NOT_RELEASED)
            .values(status=GrantStatus.released.value, released_at=utcnow())
            .returning(Grant.id)
        )
        if user is not None:
            stmt = stmt.where(Grant.user == user)
        rows = session.execute(stmt, execution_options={"synchronize_session": False})
        return list(rows.scalars())

    def release_stale(self, connected: Collection[str]) -> list[int]:
        """Release the grants whose run has ended, and those whose kernel's Dask client is
        no longer ``connected``; forget those released long ago. The ids released."""
        now = utcnow()
        with self.db.session() as session:
            ended = select(Run.key).where(Run.key == Grant.key, Run.status.in_(ENDED))
            gone = (
                Grant.client.is_not(None)
                & Grant.client.not_in(list(connected))
                & (Grant.created_at < now - CLIENT_GRACE)
            )
            rows = session.execute(
                update(Grant)
                .where(NOT_RELEASED, or_(ended.exists(), gone))
                .values(status=GrantStatus.released.value, released_at=now)
                .returning(Grant.id),
                execution_options={"synchronize_session": False},
            )
            released = list(rows.scalars())
            session.execute(
                delete(Grant).where(
                    Grant.status == GrantStatus.released.value,
                    Grant.released_at < now - KEEP_RELEASED,
                )
            )
            return released
