"""The jobs in flight: submitted to Dask and not ended, as a dispatcher follows them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .scheduling import QueuedJob

if TYPE_CHECKING:
    from distributed import Future

    from .dask_pool import DaskPool
    from .store import Store


@dataclass
class Inflight:
    """A job submitted to Dask and not yet ended."""

    job: QueuedJob
    attempt: int
    future: Future[Any] | None = None
    worker: str | None = None  # the worker's id, once it claimed the run
    task: asyncio.Task[None] | None = None
    token_id: str | None = None  # the token its kernel holds, revoked once it ends
    adopted: bool = False  # dispatched by an earlier scheduler of record


async def in_flight(
    pool: DaskPool, store: Store, call: Callable[..., Awaitable[Any]]
) -> list[Inflight]:
    """The jobs in flight, as the store and the scheduler know them, for a server taking
    over: those running, and those dispatched that no worker claimed yet whose task the
    scheduler still has (the others are dispatched again). They are followed through the
    store: each ends when its worker reports its end (to whichever server), or is lost."""
    tasks = await pool.task_keys("labrun-run-")
    found = []
    for job in await call(store.dispatch.in_flight):
        key = f"labrun-run-{job.id}-{job.attempt}"
        if job.worker is None and key not in tasks:
            continue
        entry = Inflight(
            job=QueuedJob(job.id, job.user, job.queue, job.gpus, job.priority, job.attempt),
            attempt=job.attempt,
            worker=job.worker,
            adopted=True,
        )
        found.append(entry)
    return found
