"""Moving sweeps along with their runs: a sweep is running while any of its runs is, and
ends (and may queue its report) when the last one ends.

Its runs start and end by the dozen between two of the dispatcher's rounds, each with a
claim from its worker and an end that the dispatcher follows. Looking at a sweep after each
of them cost two store transactions a job on the scheduler of record (``benchmarks/team.py``
profiled it); the runs that started or ended meanwhile are settled together instead, one
transaction for the lot, each sweep looked at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .scheduling import QueuedJob

if TYPE_CHECKING:
    from .store import Store

logger = logging.getLogger("labrun.dispatcher")

# Seconds between two batches while runs keep starting and ending; the first after a quiet
# spell goes at once.
SETTLE_EVERY = 0.25


class SweepSettling:
    """The sweeps of the runs that started or ended, brought up to date in batches."""

    def __init__(
        self,
        store: Store,
        call: Callable[..., Awaitable[Any]],
        publish: Callable[..., None],
        queue: Callable[[list[QueuedJob]], None],
    ) -> None:
        self.store = store
        self.call = call
        self.publish = publish
        self.queue = queue  # where a sweep's report goes once queued (the dispatcher's add)
        self._waiting: set[int] = set()
        self._settling: asyncio.Task[None] | None = None

    def add(self, run_id: int) -> None:
        """``run_id`` started or ended: its sweep (if it is a sweep's) may have moved."""
        self._waiting.add(run_id)
        if self._settling is None or self._settling.done():
            self._settling = asyncio.create_task(self._settle())

    async def wait(self, timeout: float) -> None:
        if self._settling is not None:
            await asyncio.wait([self._settling], timeout=timeout)

    async def _settle(self) -> None:
        # What else starts or ends in this moment goes in the same batch.
        await asyncio.sleep(0)
        while self._waiting:
            batch, self._waiting = sorted(self._waiting), set()
            started = asyncio.get_running_loop().time()
            try:
                moved = await self.call(self.store.sweeps.refresh_of, batch)
                for sweep in moved:
                    self.publish("run.updated", {"id": sweep.sweep_id})
                    if sweep.report_run is not None:
                        # The store queued the sweep's report, if it asked for one and earned it.
                        self.queue(await self.call(self.store.dispatch.queued, sweep.report_run))
                        self.publish("run.created", {"id": sweep.report_run})
            except Exception:
                # Its sweeps move with the next of their runs that starts or ends.
                logger.exception("labrun: settling the sweeps of runs %s failed", batch)
            if self._waiting:
                # Busy (a sweep of short jobs): the next batch a moment later, not at once,
                # so that a sweep is looked at a few times a second, not once a job.
                await asyncio.sleep(
                    max(0.0, started + SETTLE_EVERY - asyncio.get_running_loop().time())
                )
