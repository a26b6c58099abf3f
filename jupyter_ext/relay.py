"""Events across the servers of one store: what one server publishes, every server's event
stream shows, and the scheduler of record hears what the others ask of it.

PostgreSQL carries them by ``NOTIFY`` (each server listens on a connection of its own;
notifications arrive in commit order, and only to servers listening then). SQLite, which is
on one machine, has no notifications: events are rows of the ``events`` table that every
server reads a few times a second. Either way each server sends what it published in
batches, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .events import EventBus
from .store.events import CHANNEL

if TYPE_CHECKING:
    from .store import Database, Store

logger = logging.getLogger("labrun.events")

# How often SQLite's servers read the events table, and how often old rows are deleted.
POLL = 0.25
PRUNE_EVERY = 30.0
# Seconds before a lost PostgreSQL listening connection is opened again.
RECONNECT = 1.0

OnRemote = Callable[[str, dict[str, Any]], Awaitable[None]]


class EventRelay:
    """Carries one server's events to the other servers of its store, and theirs to it."""

    def __init__(
        self, bus: EventBus, store: Store, db: Database, origin: str, on_remote: OnRemote
    ) -> None:
        self.bus = bus
        self.store = store
        self.db = db
        self.origin = origin
        self.on_remote = on_remote
        self._outgoing: list[tuple[str, dict[str, Any], float]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._listening: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.db.dialect == "postgresql":
            self._listening = asyncio.create_task(self._listen())
        else:
            last = await self.db.run(self.store.events.newest)
            self._listening = asyncio.create_task(self._poll(last))
        self.bus.forward = self.send

    async def stop(self) -> None:
        self.bus.forward = None
        if self._flushing is not None:
            await asyncio.wait([self._flushing], timeout=2.0)
        if self._listening is not None:
            self._listening.cancel()
            await asyncio.wait([self._listening], timeout=2.0)

    # --- sending ----------------------------------------------------------------------

    def send(self, type: str, data: dict[str, Any]) -> None:
        self._outgoing.append((type, data, time.time()))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        # What else is published in this moment goes in the same batch.
        await asyncio.sleep(0)
        while self._outgoing:
            batch, self._outgoing = self._outgoing, []
            try:
                await self.db.run(self.store.events.send, self.origin, batch)
            except Exception as err:  # noqa: BLE001 - the others miss it; their own state
                # and the scheduler of record's rounds read the store anyway
                logger.warning(
                    "labrun: could not send %d events to other servers: %s", len(batch), err
                )

    # --- receiving --------------------------------------------------------------------

    async def _receive(self, type: str, data: dict[str, Any], when: float) -> None:
        if not type.startswith("dispatch."):
            self.bus.deliver(type, data, when)
        try:
            await self.on_remote(type, data)
        except Exception:
            logger.exception("labrun: handling the event %s from another server failed", type)

    async def _poll(self, last: int) -> None:
        pruned = time.monotonic()
        while True:
            try:
                last, events = await self.db.run(self.store.events.after, last, self.origin)
                for type, data, when in events:
                    await self._receive(type, data, when)
                if time.monotonic() - pruned > PRUNE_EVERY:
                    pruned = time.monotonic()
                    await self.db.run(self.store.events.prune)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - the file may be busy: read again
                logger.warning("labrun: could not read other servers' events: %s", err)
            await asyncio.sleep(POLL)

    async def _listen(self) -> None:
        import psycopg

        conninfo = self.db.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        pruned = time.monotonic()
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    async for note in conn.notifies():
                        await self._notified(note.payload)
                        if time.monotonic() - pruned > PRUNE_EVERY:
                            pruned = time.monotonic()
                            await self.db.run(self.store.events.prune)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - the database restarting: listen again
                logger.warning("labrun: lost the other servers' events (%s); listening again", err)
            await asyncio.sleep(RECONNECT)

    async def _notified(self, payload: str) -> None:
        with contextlib.suppress(ValueError):
            message = json.loads(payload)
            if message.get("o") == self.origin:
                return
            if "r" in message:
                found = await self.db.run(self.store.events.get, message["r"])
                if found is not None:
                    await self._receive(*found)
                return
            await self._receive(message["t"], message["d"], message["w"])
