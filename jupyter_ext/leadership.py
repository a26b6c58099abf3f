"""The scheduler of record: the one server of a store that dispatches, by a lease in the
store (``store/leases.py``).

Every server of a store runs a :class:`Leadership`: it takes the ``dispatcher`` lease when
it is free and renews it about once a second while it holds it. A server that stops lets go
of it, so another takes over at its next look; one that dies keeps it until it expires
(``lease_seconds``), or at once when it was a process of the same machine. Whatever a
holder changes for the lease (a dispatch, a lost job) is fenced by the store, so a holder
that lost its lease without knowing it yet changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .store.leases import DISPATCHER, Hold, LeaseInfo

if TYPE_CHECKING:
    from .store import Store

logger = logging.getLogger("labrun.dispatcher")


class Leadership:
    """Takes, renews and lets go of the dispatcher's lease for one server.

    ``gained(hold)`` is awaited when this server becomes the scheduler of record (also
    again, with a new epoch, after it lost and took back the lease); ``lost()`` when it
    stops being one.
    """

    def __init__(
        self,
        store: Store,
        call: Callable[..., Awaitable[Any]],
        *,
        server: str,
        user: str,
        seconds: float,
        gained: Callable[[Hold], Awaitable[None]],
        lost: Callable[[], Awaitable[None]],
    ) -> None:
        self.store = store
        self.call = call
        self.server = server
        self.user = user
        self.seconds = seconds
        self.url = ""
        self.scheduler = ""
        self.hold: Hold | None = None
        self._gained = gained
        self._lost = lost
        self._look = asyncio.Event()

    @property
    def leading(self) -> bool:
        return self.hold is not None

    def look_now(self) -> None:
        """Look at the lease at once (the holder said it let go)."""
        self._look.set()

    async def run(self) -> None:
        """Hold the lease while this server lives, or wait for it to be free."""
        # Renewed three times in a lease's life, so a late renewal or two (a busy machine)
        # does not lose it.
        every = self.seconds / 3
        while True:
            await self.step()
            try:
                await asyncio.wait_for(self._look.wait(), every)
            except asyncio.TimeoutError:
                pass
            self._look.clear()

    async def step(self) -> None:
        try:
            hold = await self.call(
                self.store.leases.acquire,
                DISPATCHER,
                self.server,
                seconds=self.seconds,
                user=self.user,
                url=self.url,
                scheduler=self.scheduler,
            )
        except Exception as err:  # noqa: BLE001 - the database may be restarting: look again
            # Whatever this server does for the lease meanwhile is fenced by the store.
            logger.warning("labrun: could not renew the dispatcher's lease: %s", err)
            return
        if hold is not None and hold != self.hold:
            if self.hold is not None:
                await self.step_down("its lease was taken over meanwhile")
            self.hold = hold
            logger.info("labrun: this server dispatches for the store (epoch %d)", hold.epoch)
            await self._gained(hold)
        elif hold is None and self.hold is not None:
            await self.step_down("another server holds the lease")

    async def step_down(self, why: str) -> None:
        """Stop acting for the store (the fence refused a change, or the lease is gone)."""
        if self.hold is None:
            return
        logger.warning("labrun: this server no longer dispatches: %s", why)
        self.hold = None
        await self._lost()

    async def release(self) -> None:
        """Let go of the lease (the server is stopping): another takes over at once."""
        hold, self.hold = self.hold, None
        if hold is None:
            return
        try:
            await self.call(self.store.leases.release, hold)
        except Exception as err:  # noqa: BLE001 - it expires by itself
            logger.warning("labrun: could not let go of the dispatcher's lease: %s", err)

    async def info(self) -> LeaseInfo:
        return await self.call(self.store.leases.info, DISPATCHER)
