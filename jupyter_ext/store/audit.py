"""The audit log in the store: who did what to which run, queue, token or setting, and when.

The server writes it in batches (:mod:`labrun.jupyter_ext.audit`), one INSERT of many rows
at a time; it is read newest first, filtered and paged by a cursor.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, insert, or_, select

from labrun.errors import InvalidRequest
from labrun.models import AuditList, DescribeAuditEntry, ListAuditQuery

from .database import Database
from .team_tables import AuditEntry

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def make_cursor(row: AuditEntry) -> str:
    """``<microseconds since the epoch>.<id>`` of the last row of a page: exact, and nothing
    a query string has to escape."""
    return f"{(row.time - _EPOCH) // timedelta(microseconds=1)}.{row.id}"


def read_cursor(text: str) -> tuple[datetime, int]:
    match = re.fullmatch(r"(-?\d{1,19})\.(\d{1,19})", text)
    if match is None:
        raise InvalidRequest(
            f"cursor {text!r} is not one this server made; pass the next_cursor of the "
            "previous page, with the same filters"
        )
    return _EPOCH + timedelta(microseconds=int(match[1])), int(match[2])


def describe(row: AuditEntry) -> DescribeAuditEntry:
    return DescribeAuditEntry.model_validate(row, from_attributes=True)


def _utc(when: datetime) -> datetime:
    # SQLite keeps times without their zone: compare in UTC, as they were written.
    return when.astimezone(timezone.utc)


class AuditStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Add a batch of entries (dicts of AuditEntry's columns) in one statement."""
        if not rows:
            return
        with self.db.session() as session:
            session.execute(insert(AuditEntry), rows)

    def list_entries(self, query: ListAuditQuery) -> AuditList:
        """Newest first, as ``query`` filters them (whose rows a caller may read is the
        handler's business: it sets ``query.user``)."""
        stmt = select(AuditEntry).order_by(AuditEntry.time.desc(), AuditEntry.id.desc())
        if query.user is not None:
            stmt = stmt.where(AuditEntry.user == query.user)
        if query.since is not None:
            stmt = stmt.where(AuditEntry.time >= _utc(query.since))
        if query.until is not None:
            stmt = stmt.where(AuditEntry.time <= _utc(query.until))
        if query.action is not None:
            if "." in query.action:
                stmt = stmt.where(AuditEntry.action == query.action)
            else:  # a kind of thing: every action on it
                stmt = stmt.where(AuditEntry.action.startswith(f"{query.action}.", autoescape=True))
        target_type, target_id = query.target_type, query.target_id
        if query.run is not None:
            target_type, target_id = "run", str(query.run)
        if target_type is not None:
            stmt = stmt.where(AuditEntry.target_type == target_type)
        if target_id is not None:
            stmt = stmt.where(AuditEntry.target_id == target_id)
        if query.cursor is not None:
            time, last = read_cursor(query.cursor)
            stmt = stmt.where(
                or_(AuditEntry.time < time, and_(AuditEntry.time == time, AuditEntry.id < last))
            )
        with self.db.session() as session:
            # One more than a page: whether there is a next one.
            rows = session.scalars(stmt.limit(query.limit + 1)).all()
        page = rows[: query.limit]
        more = len(rows) > query.limit
        return AuditList(
            entries=[describe(row) for row in page],
            next_cursor=make_cursor(page[-1]) if more else None,
        )
