"""Revoking the tokens of job attempts that ended: they are no use to anyone now."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import Store

logger = logging.getLogger("labrun.dispatcher")


class TokenRetirement:
    """The tokens of the jobs that end meanwhile go in one request to the store, not one
    each: during a sweep hundreds end a round, and the store's one SQLite thread is also
    what the next round's dispatch waits for."""

    def __init__(self, store: Store, call: Callable[..., Awaitable[Any]]) -> None:
        self.store = store
        self.call = call
        self._waiting: list[str] = []
        self._revoking: asyncio.Task[None] | None = None

    def add(self, token_id: str | None) -> None:
        if token_id is None:
            return
        self._waiting.append(token_id)
        if self._revoking is None or self._revoking.done():
            self._revoking = asyncio.create_task(self._revoke())

    async def wait(self, timeout: float) -> None:
        if self._revoking is not None:
            await asyncio.wait([self._revoking], timeout=timeout)

    async def _revoke(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self.call(self.store.tokens.revoke_ids, batch, "labrun: the job ended")
            except Exception as err:  # noqa: BLE001 - they still expire by themselves
                logger.warning("labrun: could not revoke %d job tokens: %s", len(batch), err)
