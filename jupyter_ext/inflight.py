"""The jobs in flight: submitted to Dask and not ended, as a dispatcher follows them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .scheduling import QueuedJob, Running

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
    # When its slot was taken (monotonic): reserved, adopted, or claimed through this server.
    started: float = field(default_factory=time.monotonic)


class InflightJobs(MutableMapping[int, Inflight]):
    """The jobs in flight by run id, with the policy's tally of them (``running``) kept
    up to date as they are put in and taken out, wherever that happens: a round then costs
    what its picks cost, not a pass over every job in flight (``scheduling.Running``)."""

    def __init__(self, entries: Iterable[Inflight] = ()) -> None:
        self._entries: dict[int, Inflight] = {}
        self.running = Running()
        for entry in entries:
            self[entry.job.id] = entry

    def __getitem__(self, run_id: int) -> Inflight:
        return self._entries[run_id]

    def __setitem__(self, run_id: int, entry: Inflight) -> None:
        if self._entries.get(run_id) is not entry:
            self.running.discard(run_id)  # another job's entry: its own tally replaces it
        self._entries[run_id] = entry
        self.running.add(entry.job)

    def __delitem__(self, run_id: int) -> None:
        del self._entries[run_id]
        self.running.discard(run_id)

    def __iter__(self) -> Iterator[int]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._entries


def count_usage(usage: dict[str, float], entry: Inflight, since: float) -> None:
    """Add what a job that just ended used to its user's slot-hours in ``usage``: its GPUs
    (a CPU job, 1) times the time it held its slot after ``since`` (when ``usage`` was read
    from the store, which counted a running job up to then), so that fair share sees it at
    once without reading every run of the day again. The next read replaces the estimate
    with the store's figures (from the claim to the report)."""
    hours = max(0.0, time.monotonic() - max(entry.started, since)) / 3600
    user = entry.job.user
    usage[user] = usage.get(user, 0.0) + max(entry.job.gpus, 1) * hours


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
