"""The audit log's writer: every mutating request noted in memory, written in batches.

The base handler notes each POST, PUT, PATCH and DELETE of an operation when it has
answered (:meth:`LabrunHandler.on_finish`), whatever the answer. Metric and log ingest are
among them, many times a second, so a note costs a dict on a list: a task writes what
gathered, one INSERT of many rows on the database's threads, within :data:`INTERVAL` of
the first note, and at the server's stop. ``GET audit`` writes what is pending before it
reads, so a reader sees every request this server answered before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .store.audit import AuditStore
from .store.tables import utcnow

logger = logging.getLogger("labrun.audit")

# Seconds between the first note of a batch and its write.
INTERVAL = 0.5
# Notes kept while the database refuses them; beyond this, the oldest go (and the log
# says how many).
MOST_PENDING = 100_000

Call = Callable[..., Awaitable[Any]]


class AuditLog:
    def __init__(
        self, store: AuditStore, call: Call, *, server: str, interval: float = INTERVAL
    ) -> None:
        self.store = store
        self.server = server  # which of the store's servers answered (leases.server_id)
        self.call = call
        self.interval = interval
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def record(
        self,
        *,
        user: str,
        scope: str,
        action: str,
        method: str,
        path: str,
        target_type: str | None,
        target_id: str | None,
        status: int,
        detail: dict[str, Any] | None,
    ) -> None:
        """Note one answered request; it is written within the interval. On the event loop."""
        self._pending.append(
            {
                "time": utcnow(),
                "user": user[:128],
                "scope": scope,
                "action": action,
                "method": method,
                "path": path[:2048],
                "target_type": target_type,
                "target_id": None if target_id is None else target_id[:256],
                "status": status,
                "detail": detail or None,
                "server": self.server,
            }
        )
        if self._task is None and not self._stopped:
            # Started by the first note, on the server's loop.
            self._task = asyncio.ensure_future(self._write_batches())
        self._wake.set()

    async def _write_batches(self) -> None:
        while True:
            await self._wake.wait()
            # Gather what comes in the meantime into the same INSERT.
            await asyncio.sleep(self.interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write every pending note now (one after another: a reader after this sees them)."""
        async with self._lock:
            rows, self._pending = self._pending, []
            if not rows:
                return
            try:
                await self.call(self.store.write, rows)
            except Exception:
                # The database is away: keep them for the next batch, within a bound.
                logger.exception("labrun: could not write %d audit entries; retrying", len(rows))
                self._pending[:0] = rows
                dropped = len(self._pending) - MOST_PENDING
                if dropped > 0:
                    del self._pending[:dropped]
                    logger.error("labrun: dropped the %d oldest unwritten audit entries", dropped)

    async def stop(self) -> None:
        """Write what is pending and stop writing (the server's stop)."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
