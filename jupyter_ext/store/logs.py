"""Run logs: append in order, tail from an offset."""

from __future__ import annotations

from sqlalchemy import select

from labrun.models import AppendLogs, LogEntry, LogTail, LogTailQuery

from .database import Database
from .models import RunLog, utcnow
from .runs import RunStore


class LogStore:
    """Entries are numbered by their row id: the offset a reader resumes from."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, run_id: int, req: AppendLogs) -> LogTail:
        now = utcnow()
        with self.db.session() as session:
            RunStore.load(session, run_id)
            rows = [
                RunLog(run_id=run_id, stream=e.stream, text=e.text, time=now) for e in req.entries
            ]
            session.add_all(rows)
            session.flush()
            entries = [
                LogEntry(offset=r.id, stream=r.stream, text=r.text, time=r.time) for r in rows
            ]
        return LogTail(entries=entries, next_offset=entries[-1].offset if entries else 0)

    def tail(self, run_id: int, query: LogTailQuery) -> LogTail:
        with self.db.session() as session:
            RunStore.load(session, run_id)
            rows = session.scalars(
                select(RunLog)
                .where(RunLog.run_id == run_id, RunLog.id > query.offset)
                .order_by(RunLog.id)
                .limit(query.limit)
            ).all()
            entries = [
                LogEntry(offset=r.id, stream=r.stream, text=r.text, time=r.time) for r in rows
            ]
        return LogTail(entries=entries, next_offset=entries[-1].offset if entries else query.offset)
