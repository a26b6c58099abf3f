"""The in-process event bus behind the WebSocket event stream.

Handlers publish after the store has committed a change; every connected client gets the
event. A client too slow to keep up loses events rather than slowing the server, and is
told so (``{"type": "overflow"}``) so it can reload what it shows.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel


class EventBus:
    def __init__(self, *, backlog: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[str]] = set()
        self._backlog = backlog
        # Takes every event to the store's other servers (relay.EventRelay), when set.
        self.forward: Callable[[str, dict[str, Any]], None] | None = None

    def subscribe(self) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(self._backlog)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(
        self, type: str, data: BaseModel | dict[str, Any], *, internal: bool = False
    ) -> None:
        """Announce ``type`` (``run.created``, ``run.updated``, ``worker.updated``...) here
        and to the other servers of the store. ``internal``: for the servers only (what
        one asks of the scheduler of record), not for the event stream's clients."""
        if not self._subscribers and self.forward is None:
            return
        payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
        if self.forward is not None:
            self.forward(type, payload)
        if not internal:
            self.deliver(type, payload, time.time())

    def deliver(self, type: str, payload: dict[str, Any], when: float) -> None:
        """Give an event to this server's event stream clients."""
        if not self._subscribers:
            return
        message = json.dumps({"type": type, "time": when, "data": payload})
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                # Drop this client's backlog and tell it to resynchronise.
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(json.dumps({"type": "overflow", "time": time.time(), "data": {}}))
