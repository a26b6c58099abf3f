"""Events between the servers of one store (see ``jupyter_ext/relay.py``)."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import delete, func, insert, select, text

from .database import Database
from .team_tables import Event

# PostgreSQL's channel; a notification carries an event whole up to this size (the limit is
# 8000 bytes), and a reference to its row in ``events`` beyond.
CHANNEL = "labrun_events"
NOTIFY_MAX = 7000
# Rows are kept this long: servers read them within moments.
KEEP_SECONDS = 60.0


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def send(self, origin: str, events: list[tuple[str, dict[str, Any], float]]) -> None:
        """Announce ``events`` (type, data, time) to the store's other servers."""
        if self.db.dialect != "postgresql":
            self._insert(origin, events)
            return
        payloads = []
        for type, data, when in events:
            payload = json.dumps({"o": origin, "t": type, "d": data, "w": when})
            if len(payload) > NOTIFY_MAX:
                (ref,) = self._insert(origin, [(type, data, when)])
                payload = json.dumps({"o": origin, "r": ref})
            payloads.append(payload)
        with self.db.session() as session:
            session.execute(
                text(f"SELECT pg_notify('{CHANNEL}', p) FROM unnest(CAST(:ps AS text[])) AS p"),
                {"ps": payloads},
            )

    def _insert(self, origin: str, events: list[tuple[str, dict[str, Any], float]]) -> list[int]:
        with self.db.session() as session:
            rows = session.execute(
                insert(Event).returning(Event.id),
                [{"origin": origin, "type": t, "data": d, "time": w} for t, d, w in events],
            )
            return [row.id for row in rows]

    def newest(self) -> int:
        with self.db.session() as session:
            return session.scalar(select(func.max(Event.id))) or 0

    def after(self, last: int, origin: str) -> tuple[int, list[tuple[str, dict[str, Any], float]]]:
        """The events after row ``last`` that other servers sent, and the newest row's id."""
        with self.db.session() as session:
            rows = session.execute(
                select(Event.id, Event.origin, Event.type, Event.data, Event.time)
                .where(Event.id > last)
                .order_by(Event.id)
            ).all()
        newest = rows[-1].id if rows else last
        return newest, [(r.type, r.data, r.time) for r in rows if r.origin != origin]

    def get(self, ref: int) -> tuple[str, dict[str, Any], float] | None:
        with self.db.session() as session:
            row = session.execute(
                select(Event.type, Event.data, Event.time).where(Event.id == ref)
            ).one_or_none()
        return None if row is None else (row.type, row.data, row.time)

    def prune(self) -> None:
        with self.db.session() as session:
            session.execute(delete(Event).where(Event.time < time.time() - KEEP_SECONDS))
