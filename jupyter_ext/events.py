"""The in-process event bus behind the WebSocket event stream.

Handlers publish after the store has committed a change; every connected client gets the
event. A client too slow to keep up loses events rather than slowing the server, and is
told so (``{"type": "overflow"}``) so it can reload what it shows.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from pydantic import BaseModel


class EventBus:
    def __init__(self, *, backlog: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[str]] = set()
        self._backlog = backlog

    def subscribe(self) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(self._backlog)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, type: str, data: BaseModel | dict[str, Any]) -> None:
        """Announce ``type`` (``run.created``, ``run.updated``, ``worker.updated``...)."""
        if not self._subscribers:
            return
        payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
        message = json.dumps({"type": type, "time": time.time(), "data": payload})
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                # Drop this client's backlog and tell it to resynchronise.
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(json.dumps({"type": "overflow", "time": time.time(), "data": {}}))
