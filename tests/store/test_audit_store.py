"""The audit log in the store, on SQLite and PostgreSQL: its filters and pages, and its
writer's batches."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from labrun.errors import InvalidRequest
from labrun.jupyter_ext.audit import AuditLog
from labrun.jupyter_ext.store import Store
from labrun.jupyter_ext.store.audit import AuditStore
from labrun.models import ListAuditQuery

NOW = datetime.now(timezone.utc)


def entry(user: str, action: str, target: str | None, minutes_ago: float, status: int = 200):
    kind, _, name = (target or "").partition(":")
    return {
        "time": NOW - timedelta(minutes=minutes_ago),
        "user": user,
        "scope": "user",
        "action": action,
        "method": "POST",
        "path": "/labrun/api/v1/x",
        "target_type": kind or None,
        "target_id": name or None,
        "status": status,
        "detail": {"fields": ["name"]},
        "server": "host:1",
    }


def listed(store: Store, **query: Any) -> list[tuple[str, str, str | None]]:
    entries = store.audit.list_entries(ListAuditQuery.model_validate(query)).entries
    return [(e.user, e.action, e.target_id) for e in entries]


def test_entries_are_filtered_and_paged_newest_first(store: Store) -> None:
    store.audit.write(
        [
            entry("alice", "run.create", "run:1", 60 * 24 * 8),
            entry("alice", "run.cancel", "run:1", 60 * 13),
            entry("bob", "queue.create", "queue:gpu", 45),
            entry("bob", "run.update", "run:10", 20, status=403),
            entry("alice", "token.revoke", "token:ab12", 5),
            entry("alice", "params.check", None, 1),
        ]
    )
    assert listed(store)[0] == ("alice", "params.check", None)
    assert listed(store, user="bob") == [
        ("bob", "run.update", "10"),
        ("bob", "queue.create", "gpu"),
    ]
    # since and until: durations back from now, or times (any zone)
    assert [a for _, a, _ in listed(store, since="7d")] == [
        "params.check",
        "token.revoke",
        "run.update",
        "queue.create",
        "run.cancel",
    ]
    assert [a for _, a, _ in listed(store, since="12h")][-1] == "queue.create"
    local = (NOW - timedelta(minutes=30)).astimezone(timezone(timedelta(hours=-5)))
    assert [a for _, a, _ in listed(store, until=local.isoformat(), since="1d")] == [
        "queue.create",
        "run.cancel",
    ]
    # An action, or every action on a kind of thing; a run; any target
    assert listed(store, action="run.cancel") == [("alice", "run.cancel", "1")]
    assert [a for _, a, _ in listed(store, action="run")] == [
        "run.update",
        "run.cancel",
        "run.create",
    ]
    assert listed(store, action="ru") == []
    assert listed(store, run=1) == [("alice", "run.cancel", "1"), ("alice", "run.create", "1")]
    assert listed(store, target_type="queue", target_id="gpu") == [("bob", "queue.create", "gpu")]
    assert listed(store, user="alice", action="token.revoke", since="1h")[0][2] == "ab12"

    # Pages by cursor: every entry once, newest first
    seen, cursor = [], None
    while True:
        page = store.audit.list_entries(ListAuditQuery(limit=4, cursor=cursor))
        seen += [e.id for e in page.entries]
        if (cursor := page.next_cursor) is None:
            break
    assert seen == [e.id for e in store.audit.list_entries(ListAuditQuery()).entries]
    assert len(seen) == 6
    with pytest.raises(InvalidRequest, match="next_cursor of the previous page"):
        store.audit.list_entries(ListAuditQuery(cursor="page-2"))


class CountedStore(AuditStore):
    """The real store, counting its writes."""

    writes: list[int]

    def write(self, rows: list[dict[str, Any]]) -> None:
        super().write(rows)
        self.writes.append(len(rows))


def note(log: AuditLog, i: int) -> None:
    log.record(
        user="alice",
        scope="user",
        action="run.log_metrics",
        method="POST",
        path=f"/labrun/api/v1/runs/{i}/metrics",
        target_type="run",
        target_id=str(i),
        status=200,
        detail={"fields": ["rows"]},
    )


async def test_the_writer_writes_in_batches_and_at_its_stop(store: Store) -> None:
    audit = CountedStore(store.db)
    audit.writes = []
    log = AuditLog(audit, store.db.run, server="test-server", interval=0.2)

    # Notes made together are written together, in one statement, without being asked
    for i in range(200):
        note(log, i)
    deadline = asyncio.get_running_loop().time() + 30
    while not audit.writes:
        assert asyncio.get_running_loop().time() < deadline, "the batch was never written"
        await asyncio.sleep(0.05)
    assert audit.writes == [200]
    assert store.audit.list_entries(ListAuditQuery(limit=1000)).entries[0].target_id == "199"

    # What is pending at the stop is written then
    note(log, 200)
    await log.stop()
    assert audit.writes == [200, 1]
    assert len(store.audit.list_entries(ListAuditQuery(limit=1000)).entries) == 201
