"""Run logs: append in order, tail from an offset, one attempt or all."""

from __future__ import annotations

from sqlalchemy import select

from labrun.errors import NotFound
from labrun.models import AppendLogs, LogEntry, LogTail, LogTailQuery

from .database import Database
from .runs import RunStore
from .tables import RunLog, utcnow


def _entry(row: RunLog) -> LogEntry:
    return LogEntry(
        offset=row.id, stream=row.stream, text=row.text, time=row.time, attempt=row.attempt
    )


class LogStore:
    """Entries are numbered by their row id: the offset a reader resumes from."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, run_id: int, req: AppendLogs) -> LogTail:
        now = utcnow()
        with self.db.session() as session:
            run = RunStore.load(session, run_id)
            # A run that was never dispatched (a script, a kernel's cell) is on attempt 0:
            # its lines are its first attempt's.
            attempt = req.attempt or max(run.attempt, 1)
            rows = [
                RunLog(run_id=run_id, stream=e.stream, text=e.text, time=now, attempt=attempt)
                for e in req.entries
            ]
            session.add_all(rows)
            session.flush()
            entries = [_entry(r) for r in rows]
        return LogTail(entries=entries, next_offset=entries[-1].offset if entries else 0)

    def tail(self, run_id: int, query: LogTailQuery) -> LogTail:
        with self.db.session() as session:
            run = RunStore.load(session, run_id)
            stmt = select(RunLog).where(RunLog.run_id == run_id, RunLog.id > query.offset)
            if query.attempt is not None:
                last = max(run.attempt, 1)
                if query.attempt > last:
                    which = f"1 to {last}" if last > 1 else "1"
                    raise NotFound(
                        f"run {run_id} has had {last} attempt{'s' * (last > 1)}; ask for "
                        f"{which}, not {query.attempt}"
                    )
                stmt = stmt.where(RunLog.attempt == query.attempt)
            rows = session.scalars(stmt.order_by(RunLog.id).limit(query.limit)).all()
            entries = [_entry(r) for r in rows]
        return LogTail(entries=entries, next_offset=entries[-1].offset if entries else query.offset)
